"""Small generated fixtures: synthetic 'speech' (voiced harmonics with silence around) written
under the right corpus file names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf


def voiced(seconds: float, sr: int = 16000, f0: float = 140.0, seed: int = 0, pad: float = 0.3) -> np.ndarray:
    """Harmonic tone with a syllable-like envelope, `pad` s of near-silence either side."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    y *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    y = 0.3 * y / np.max(np.abs(y))
    silence = 1e-4 * rng.standard_normal(int(pad * sr))
    return np.concatenate([silence, y, silence]).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype=subtype)
    return path
