"""The field's classical reference point: openSMILE eGeMAPSv02 functionals (88 per clip;
Eyben et al., "The Geneva Minimalistic Acoustic Parameter Set", IEEE Trans. Affective
Computing 2016) with a scikit-learn SVM, fitted per fold on the training-side speakers.

The features come from the `opensmile` package (its own binary and config), computed on the
whole decoded 16 kHz clip, and cached per corpus file list. The SVM's settings are fixed in
advance (standardised features, RBF kernel, C = 1, gamma "scale", balanced class weights) and
never tuned on a test fold."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ser_core.audio.decode import load_audio
from ser_core.config import stable_hash
from ser_core.data.corpora import Corpus
from ser_core.data.dataset import cache_dir

BASELINE_NAME = "eGeMAPSv02 functionals + SVM (RBF, C=1, balanced)"


def egemaps(corpus: Corpus, progress: bool = True) -> np.ndarray:
    """(n_utterances, 88) eGeMAPSv02 functionals of every utterance, cached on disk."""
    files = [(str(u.path.relative_to(corpus.root)), u.path.stat().st_size) for u in corpus.utterances]
    path = cache_dir() / "egemaps" / f"{corpus.name}-{stable_hash(files)}.npy"
    if path.is_file():
        return np.load(path)
    import opensmile
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    rows = []
    for i, u in enumerate(corpus.utterances):
        y = load_audio(u.path, 16_000)
        rows.append(smile.process_signal(y, 16_000).to_numpy()[0])
        if progress and (i + 1) % 100 == 0:
            print(f"eGeMAPS {corpus.name}: {i + 1}/{len(corpus.utterances)} clips", file=sys.stderr,
                  flush=True)
    x = np.asarray(rows, np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, x)
    Path(tmp).replace(path)
    return x


def svm_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                n_classes: int) -> np.ndarray:
    """Class probabilities-like one-hot decisions of the fixed SVM pipeline: (n_test, n_classes)."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    clf = make_pipeline(StandardScaler(), SVC(C=1.0, kernel="rbf", gamma="scale",
                                              class_weight="balanced"))
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return np.eye(n_classes)[pred]
