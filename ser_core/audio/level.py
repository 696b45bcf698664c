"""Clip -> how long and how loud it is, the two things a model's training range can be checked on
(a visitor's clip far outside what the model heard is named, ser_core/serving/prediction.py).

Loudness is the 95th percentile of the RMS of 50 ms frames in dB re. full scale: the loud part
of the speech, so leading and trailing silence (which the chunker trims) do not move it."""
from __future__ import annotations

import numpy as np

FRAME_SECONDS = 0.05


def loudness_dbfs(y: np.ndarray, sample_rate: int) -> float:
    """95th percentile of 50 ms frame RMS, dBFS (-120 for silence)."""
    n = max(1, int(FRAME_SECONDS * sample_rate))
    y = np.asarray(y, np.float64)
    if len(y) < n:
        y = np.pad(y, (0, n - len(y)))
    frames = y[: len(y) // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(frames ** 2, axis=1))
    return float(20 * np.log10(max(float(np.percentile(rms, 95)), 1e-6)))


def clip_level(y: np.ndarray, sample_rate: int) -> dict:
    """{"seconds", "loudness_dbfs"} of a decoded clip."""
    return {"seconds": round(len(y) / sample_rate, 3),
            "loudness_dbfs": round(loudness_dbfs(y, sample_rate), 2)}


def level_range(levels: list[dict]) -> dict:
    """The range of clip levels a model heard: min, 1st and 99th percentile, max of each figure."""
    out = {}
    for key in ("seconds", "loudness_dbfs"):
        v = np.array([lv[key] for lv in levels], float)
        out[key] = {"min": round(float(v.min()), 2), "p01": round(float(np.percentile(v, 1)), 2),
                    "p99": round(float(np.percentile(v, 99)), 2), "max": round(float(v.max()), 2)}
    out["n_clips"] = len(levels)
    return out
