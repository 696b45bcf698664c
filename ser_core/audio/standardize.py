"""Log-Mel features -> standardised features: per-cell mean/variance scaling (PAPER.md step 6),
as scikit-learn's StandardScaler does it on the flattened 261 x 128 cells (a constant cell gets
scale 1)."""
from __future__ import annotations

import numpy as np


class Standardizer:
    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)

    @classmethod
    def fit(cls, features: np.ndarray, batch: int = 512) -> "Standardizer":
        """Fit on (n, frames, bands); accumulated in float64 batches to keep memory flat."""
        n = len(features)
        s = np.zeros(features.shape[1:], np.float64)
        ss = np.zeros(features.shape[1:], np.float64)
        for i in range(0, n, batch):
            x = np.asarray(features[i:i + batch], dtype=np.float64)
            s += x.sum(0)
            ss += (x * x).sum(0)
        mean = s / n
        var = np.maximum(ss / n - mean * mean, 0.0)
        scale = np.sqrt(var)
        scale[scale < 1e-8] = 1.0
        return cls(mean, scale)

    @classmethod
    def fit_bands(cls, features: np.ndarray, batch: int = 512) -> "Standardizer":
        """Per-band scaling (one mean and scale per Mel band, pooled over frames and chunks),
        stored per cell so it applies like the study's: our speaker recipe, where a chunk's
        position in time carries no meaning worth a statistic of its own."""
        cell = cls.fit(features, batch)
        n_frames = features.shape[1]
        mean = cell.mean.mean(0)
        # pooled variance over frames = mean of per-cell variances + variance of per-cell means
        var = (cell.scale.astype(np.float64) ** 2).mean(0) + cell.mean.astype(np.float64).var(0)
        scale = np.sqrt(var)
        scale[scale < 1e-8] = 1.0
        return cls(np.tile(mean, (n_frames, 1)), np.tile(scale, (n_frames, 1)))

    @classmethod
    def fit_global(cls, features: np.ndarray, batch: int = 512) -> "Standardizer":
        """One mean and one scale for every cell, stored per cell: a dB offset of a whole chunk
        then stays one offset after scaling (our speaker recipe with input_norm "global")."""
        cell = cls.fit(features, batch)
        mean = float(cell.mean.mean())
        var = float((cell.scale.astype(np.float64) ** 2).mean() + cell.mean.astype(np.float64).var())
        shape = features.shape[1:]
        return cls(np.full(shape, mean), np.full(shape, np.sqrt(var) if var > 1e-16 else 1.0))

    def transform(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def inverse(self, standardized: np.ndarray) -> np.ndarray:
        return (np.asarray(standardized, dtype=np.float32) * self.scale + self.mean).astype(np.float32)
