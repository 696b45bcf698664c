"""Verified flips: the adversarial clip is written as a 16-bit WAV, read back and scored by the
serving path (bundle.predict_clip on the file: decode, trim, chunks, librosa log-Mel,
standardiser, ONNX Runtime). Only that decision counts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from ser_core.audio.decode import load_audio


def write_wav16(path, pcm: np.ndarray, sample_rate: int) -> Path:
    """Write 16-bit sample values as a mono 16-bit PCM WAV, bit-exact (no rescaling)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(pcm).astype(np.int16), sample_rate, subtype="PCM_16")
    return path


def verify(bundle, path):
    """(decoded samples as the serving path reads them, its ClipPrediction) for a written WAV."""
    y = load_audio(path, bundle.feature_config.sample_rate)
    return y, bundle.predict_clip(path)
