"""Verified flips: the adversarial clip is written as a 16-bit WAV, read back and scored by the
serving path (decode, trim, chunks, librosa log-Mel, standardiser, ONNX Runtime: what
bundle.predict_clip does with the file). Only that decision counts.

The serving path's features of a clip are computed once (`serving_features`): a waveform attack
scores the clean clip, its candidates, the written WAV (the same samples as its last candidate)
and the app draws the clean and attacked features, so each clip's features are kept, by the
digest of its samples, for the last CACHED_CLIPS clips of each bundle. The ONNX decision is
always taken afresh."""
from __future__ import annotations

import hashlib
import threading
import weakref
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf

from ser_core.audio.decode import load_audio

CACHED_CLIPS = 8
_memos: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def serving_features(bundle, y: np.ndarray) -> np.ndarray:
    """bundle.features(y) (decoded float32 samples at the bundle's rate -> standardised chunks),
    computed once per clip and returned read-only."""
    y = np.ascontiguousarray(y, np.float32)
    key = (len(y), hashlib.blake2b(y.tobytes(), digest_size=16).digest())
    with _lock:
        memo = _memos.setdefault(bundle, OrderedDict())
        hit = memo.get(key)
        if hit is not None:
            memo.move_to_end(key)
            return hit
    feats = bundle.features(y)
    feats.setflags(write=False)
    with _lock:
        memo[key] = feats
        while len(memo) > CACHED_CLIPS:
            memo.popitem(last=False)
    return feats


def serving_prediction(bundle, y: np.ndarray):
    """The serving path's ClipPrediction of decoded samples (bundle.predict_clip without decoding)."""
    return bundle.prediction_from_probabilities(bundle.predict_features(serving_features(bundle, y)))


def write_wav16(path, pcm: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit sample values as a mono 16-bit PCM WAV, bit-exact (no rescaling)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(pcm).astype(np.int16), sample_rate, subtype="PCM_16")
    return path


def verify(bundle, path):
    """(decoded samples as the serving path reads them, its ClipPrediction) for a written WAV."""
    y = load_audio(path, bundle.feature_config.sample_rate)
    return y, serving_prediction(bundle, y)
