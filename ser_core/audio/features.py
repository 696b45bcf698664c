"""3 s chunks -> log-Mel features (PAPER.md step 5).

Power Mel spectrogram (n_fft 368, hop 184, 128 bands, librosa defaults otherwise), then
librosa.amplitude_to_db with ref = the spectrogram's own minimum (top_db 80), transposed to
(261 frames, 128 bands).

The Mel filterbank product runs on one BLAS thread: it is a small matrix product per chunk
(128 x 185 by 185 x 261), and numpy's OpenBLAS pool, one thread per core by default, spends
about four times the CPU of one thread on it waiting for its second thread (17 against 4 ms of
CPU for three chunks on this 2-core machine; benchmarks/app_attack_cpu.py), with identical
output (tested)."""
from __future__ import annotations

import librosa
import numpy as np

from ser_core.config import FeatureConfig, PAPER_FEATURES


_blas = None


def one_blas_thread():
    """A context in which numpy's BLAS uses one thread (threadpoolctl, a dependency of
    scikit-learn); the controller is built once."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController
        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def mel_power(chunks: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(n, samples) -> (n, n_mels, frames) power Mel spectrograms."""
    with one_blas_thread():
        return librosa.feature.melspectrogram(y=np.asarray(chunks, dtype=np.float32), sr=cfg.sample_rate,
                                              n_fft=cfg.n_fft, hop_length=cfg.hop_length,
                                              n_mels=cfg.n_mels)


def log_mel(chunks: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(n, samples) or (samples,) -> (n, frames, bands) float32 log-Mel features."""
    chunks = np.atleast_2d(chunks)
    mel = mel_power(chunks, cfg)
    out = np.stack([librosa.amplitude_to_db(m, ref=np.min, top_db=cfg.db_top_db) for m in mel])
    return np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)


def clip_features(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """Decoded clip -> trimmed -> chunks -> (n_chunks, frames, bands) log-Mel: the serving path."""
    from ser_core.audio.chunks import chunks as to_chunks, trim
    trimmed = trim(y, cfg)
    if len(trimmed) == 0:
        trimmed = y
    return log_mel(to_chunks(trimmed, cfg), cfg)
