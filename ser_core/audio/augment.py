"""Trimmed clip -> its augmented versions (PAPER.md step 4): pitch shift by -3, -1.5, +1.5, +3
semitones (same length) and time stretch by 0.75, 0.9, 1.1, 1.25 (round(n / rate) samples)."""
from __future__ import annotations

import librosa
import numpy as np

from ser_core.config import FeatureConfig, PAPER_FEATURES


def augment(trimmed: np.ndarray, kind: str, value, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    if kind == "none":
        return trimmed
    if kind == "pitch":
        return librosa.effects.pitch_shift(trimmed, sr=cfg.sample_rate, n_steps=value).astype(np.float32)
    if kind == "stretch":
        return librosa.effects.time_stretch(trimmed, rate=value).astype(np.float32)
    raise ValueError(f"unknown augmentation {kind!r} (accepted: none, pitch, stretch)")


def augmented_length(n: int, kind: str, value) -> int:
    """Length of an augmented version without computing it."""
    return int(round(n / value)) if kind == "stretch" else n


def versions(trimmed: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES, augmentation: bool = True):
    """Yield (augmentation index, audio) for the original and, if asked, the eight copies."""
    augs = cfg.augmentations() if augmentation else cfg.augmentations()[:1]
    for i, (kind, value) in enumerate(augs):
        yield i, augment(trimmed, kind, value, cfg)
