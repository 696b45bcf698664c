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

    def transform(self, features: np.ndarray) -> np.ndarray:
        return ((np.asarray(features, dtype=np.float32) - self.mean) / self.scale).astype(np.float32)

    def inverse(self, standardized: np.ndarray) -> np.ndarray:
        return (np.asarray(standardized, dtype=np.float32) * self.scale + self.mean).astype(np.float32)
