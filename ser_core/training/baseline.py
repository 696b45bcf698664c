"""The field's classical reference point: openSMILE eGeMAPSv02 functionals (88 per clip;
Eyben et al., "The Geneva Minimalistic Acoustic Parameter Set", IEEE Trans. Affective
Computing 2016) with a scikit-learn SVM, fitted per fold on the training-side speakers.

The features come from the `opensmile` package (its own binary and config), computed on the
whole decoded 16 kHz clip, and cached per corpus file list. The SVM's settings are fixed in
advance (standardised features, RBF kernel, C = 1, gamma "scale", balanced class weights) and
never tuned on a test fold.

Beside it on the same speaker folds (ser_core/data/folds.py), the other reference points of the
cross-validation report: chance (a uniform guess) and the majority class of the training side."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from ser_core.audio.decode import load_audio
from ser_core.config import stable_hash
from ser_core.data.corpora import Corpus, read_corpus
from ser_core.data.dataset import cache_dir
from ser_core.data.folds import folds_for
from ser_core.stats import summarise_clips

BASELINE_NAME = "eGeMAPSv02 functionals + SVM (RBF, C=1, balanced)"


def egemaps(corpus: Corpus, progress: bool = True) -> np.ndarray:
    """(n_utterances, 88) eGeMAPSv02 functionals of every utterance, cached on disk."""
    files = [(str(u.path.relative_to(corpus.root)), u.path.stat().st_size) for u in corpus.utterances]
    path = cache_dir() / "egemaps" / f"{corpus.name}-{stable_hash(files)}.npy"
    if path.is_file():
        return np.load(path)
    smile = egemaps_extractor()
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


def egemaps_extractor():
    """openSMILE's eGeMAPSv02 functionals (88 a clip): `.process_signal(y, 16000)`."""
    import opensmile
    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def svm_pipeline():
    """The baseline's fixed classifier (BASELINE_NAME), unfitted."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    return make_pipeline(StandardScaler(), SVC(C=1.0, kernel="rbf", gamma="scale", class_weight="balanced"))


def svm_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray,
                n_classes: int) -> np.ndarray:
    """Class probabilities-like one-hot decisions of the fixed SVM pipeline: (n_test, n_classes)."""
    clf = svm_pipeline()
    clf.fit(x_train, y_train)
    pred = clf.predict(x_test)
    return np.eye(n_classes)[pred]


def baseline_folds(corpus: Corpus, egemaps_x: np.ndarray) -> dict[str, list[dict]]:
    """Majority class and eGeMAPS + SVM on the cross-validation's folds, as per-clip records."""
    k = len(corpus.classes)
    labels = np.array([corpus.label_index(u) for u in corpus.utterances])
    speakers = np.array([u.speaker for u in corpus.utterances])
    out = {"majority": [], "egemaps-svm": []}
    for fold, test_spk in enumerate(folds_for(corpus.name)):
        test = np.isin(speakers, test_spk)
        train = ~test  # the whole training side: the SVM has nothing to select on validation
        majority = np.bincount(labels[train], minlength=k).argmax()
        svm = svm_predict(egemaps_x[train], labels[train], egemaps_x[test], k)
        for name, probs in (("majority", np.eye(k)[np.full(test.sum(), majority)]),
                            ("egemaps-svm", svm)):
            out[name] += [{"file": u.name, "speaker": u.speaker, "gender": u.gender,
                           "label": int(labels[i]), "probs": p.tolist(), "fold": fold}
                          for i, u, p in zip(np.flatnonzero(test), np.array(corpus.utterances, object)[test], probs)]
    return out


def chance_summary(class_names, n_clips, n_speakers) -> dict:
    k = len(class_names)
    return {"name": "chance", "n_clips": n_clips, "n_speakers": n_speakers,
            "accuracy": 1 / k, "uar": 1 / k, "macro_f1": None,
            "note": "expected figures of a uniform random guess"}


def write_baselines(corpus_name: str, data_dir, out_dir="reports/crossval") -> dict:
    """<out_dir>/<corpus>-baselines.json: chance, the majority class and eGeMAPS + SVM, pooled
    over the folds' clips as the models are."""
    corpus = read_corpus(corpus_name, data_dir)
    recs = baseline_folds(corpus, egemaps(corpus))
    n_spk = len({u.speaker for u in corpus.utterances})
    out = {"corpus": corpus_name, "chance": chance_summary(corpus.classes, len(corpus.utterances), n_spk),
           "majority": summarise_clips("majority class of the training side", recs["majority"],
                                       corpus.classes),
           "egemaps-svm": summarise_clips(BASELINE_NAME, recs["egemaps-svm"], corpus.classes)}
    path = Path(out_dir) / f"{corpus_name}-baselines.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out
