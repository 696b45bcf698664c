"""Frequency masking threshold of a clip, and how far a perturbation stands above it.

The psychoacoustic model is the one Qin et al. use for imperceptible audio adversarial examples
(Qin, Carlini, Cottrell, Goodfellow, Raffel, "Imperceptible, Robust, and Targeted Adversarial
Examples for Automatic Speech Recognition", ICML 2019, arXiv 1903.10346, section 3.2 and their
released code), itself after MPEG-1 psychoacoustic model 1 as described by Lin & Abdulla
("Principles of Psychoacoustics", 2015):
  - STFT with a sqrt(8/3)-scaled periodic Hann window of 2048 samples, hop 512 (Qin et al.'s
    constants for 16 kHz), PSD p(k) = 10 log10 |s(k) / N|^2, normalised to a 96 dB SPL peak:
    p_bar = 96 - max over the whole clean clip of p + p;
  - tonal maskers: local maxima of p_bar above the absolute threshold of hearing (ATH, Terhardt's
    formula, held at its 20 Hz value below 20 Hz; their code has none below 1 Bark), power summed
    over the peak and its two neighbours, and of maskers closer than 0.5 Bark only the stronger kept;
  - each masker spreads with the two-slope function on the Bark scale
    (27 dB/Bark below, 27 - 0.37 max(P - 40, 0) dB/Bark above) less 6.025 + 0.275 b dB;
  - the global threshold of a cell is the power sum of the ATH and every masker's contribution.
A perturbation is under the mask in a cell when its PSD, normalised with the clean clip's own
offset, is at most that cell's threshold.

What this is not: no temporal masking (pre-/post-masking), no non-tonal (noise) maskers, a
128 ms frame (a perturbation can be masked by a loud onset later in the same frame: pre-echo),
and no listening test here. It estimates where a perturbation is likely to be hidden by the
clip itself; "under the threshold" is a model's prediction, not a measured inaudibility."""
from __future__ import annotations

import hashlib
import math
import threading
from dataclasses import dataclass

import numpy as np
import torch

N_FFT = 2048
HOP = 512
WINDOW_SCALE = math.sqrt(8.0 / 3.0)
PEAK_DB = 96.0


def bark(f: np.ndarray) -> np.ndarray:
    """Frequency in Hz -> Bark (Zwicker's formula, as Qin et al.)."""
    f = np.asarray(f, np.float64)
    return 13.0 * np.arctan(0.00076 * f) + 3.5 * np.arctan((f / 7500.0) ** 2)


def absolute_threshold(f: np.ndarray) -> np.ndarray:
    """Terhardt's absolute threshold of hearing in dB SPL, held at its 20 Hz value below 20 Hz.
    (Qin et al.'s code sets none below 1 Bark, about 100 Hz; that leaves a silent frame's low
    bins with no threshold at all, and any perturbation there infinitely far above it.)"""
    khz = np.maximum(np.asarray(f, np.float64), 20.0) / 1000.0
    return 3.64 * khz ** -0.8 - 6.5 * np.exp(-0.6 * (khz - 3.3) ** 2) + 1e-3 * khz ** 4


def window() -> torch.Tensor:
    return torch.hann_window(N_FFT, periodic=True, dtype=torch.float64) * WINDOW_SCALE


def stft(y: torch.Tensor) -> torch.Tensor:
    """(samples,) -> (bins, frames) complex STFT scaled by 1/N, as the PSD uses it."""
    w = window().to(y.dtype)
    return torch.stft(y, N_FFT, HOP, window=w, center=True, return_complex=True) / N_FFT


def istft(spec: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of `stft` (least squares overlap-add; exact on a consistent spectrogram)."""
    w = window().to(spec.real.dtype)
    return torch.istft(spec * N_FFT, N_FFT, HOP, window=w, center=True, length=length)


def psd_db(y: np.ndarray) -> np.ndarray:
    """(bins, frames) 10 log10 |s / N|^2 of 16-bit sample values, unnormalised."""
    s = stft(torch.from_numpy(np.asarray(y, np.float64))).abs().numpy()
    return 10.0 * np.log10(np.maximum(s ** 2, 1e-20))


def _frame_threshold(p: np.ndarray, b: np.ndarray, ath: np.ndarray) -> np.ndarray:
    """Global masking threshold (dB) of one frame's normalised PSD p over bins with Bark b: the
    model written frame by frame, kept as the specification `thresholds` is tested against."""
    peaks = np.flatnonzero((p[1:-1] > p[:-2]) & (p[1:-1] > p[2:])) + 1
    peaks = peaks[p[peaks] > ath[peaks]]
    power = 10.0 * np.log10(10 ** (p[peaks - 1] / 10) + 10 ** (p[peaks] / 10) + 10 ** (p[peaks + 1] / 10))
    keep = np.ones(len(peaks), bool)
    for i in range(len(peaks) - 1):  # of two maskers within 0.5 Bark the stronger stays
        j = i + 1
        while j < len(peaks) and not keep[j]:
            j += 1
        if keep[i] and j < len(peaks) and b[peaks[j]] - b[peaks[i]] < 0.5:
            keep[j if power[i] >= power[j] else i] = False
    peaks, power = peaks[keep], power[keep]
    total = 10 ** (ath / 10)
    if len(peaks):
        dz = b[None, :] - b[peaks][:, None]  # maskee - masker, Bark
        upper = -27.0 + 0.37 * np.maximum(power - 40.0, 0.0)
        spread = np.where(dz < 0, 27.0 * dz, upper[:, None] * dz)
        t = power[:, None] - 6.025 - 0.275 * b[peaks][:, None] + spread
        total = total + np.sum(10 ** (t / 10), axis=0)
    return 10.0 * np.log10(total)


_DB_TO_POWER = math.log(10.0) / 10.0  # 10 ** (x / 10) = exp(x * _DB_TO_POWER)
MASKERS_PER_BLOCK = 128  # maskers spread at once: temporaries stay in cache (64-256 measured fastest)


def thresholds(p: np.ndarray, b: np.ndarray, ath: np.ndarray) -> np.ndarray:
    """(bins, frames) global masking threshold (dB) of a normalised PSD p, every frame at once:
    `_frame_threshold`'s model, vectorised over frames and maskers, with 10 ** (x / 10) computed
    as exp (within 1e-9 dB of the per-frame form, tested). Of two neighbouring maskers within 0.5
    Bark the stronger stays, scanned left to right as there (after a drop the next comparison
    is with the next peak), one column of peaks at a time over all frames."""
    q = p.T  # (frames, bins)
    frames = q.shape[0]
    inner = q[:, 1:-1]
    f, k = np.nonzero((inner > q[:, :-2]) & (inner > q[:, 2:]) & (inner > ath[None, 1:-1]))
    k = k + 1  # row-major order: by frame, then by bin, as the per-frame form lists its peaks
    power = 10.0 * np.log10(np.exp(q[f, k - 1] * _DB_TO_POWER) + np.exp(q[f, k] * _DB_TO_POWER)
                            + np.exp(q[f, k + 1] * _DB_TO_POWER))
    counts = np.bincount(f, minlength=frames)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(len(f)) - starts[f]
    width = int(counts.max()) if len(f) else 0
    grid_power = np.full((frames, width), -np.inf)
    grid_bark = np.zeros((frames, width))  # where no peak, keep is False: the value is never used
    grid_power[f, rank], grid_bark[f, rank] = power, b[k]
    keep = np.zeros((frames, width), bool)
    keep[f, rank] = True
    for i in range(width - 1):
        close = keep[:, i] & keep[:, i + 1] & (grid_bark[:, i + 1] - grid_bark[:, i] < 0.5)
        stronger = grid_power[:, i] >= grid_power[:, i + 1]
        keep[:, i + 1] &= ~(close & stronger)
        keep[:, i] &= ~(close & ~stronger)
    kept = keep[f, rank]
    f, k, power = f[kept], k[kept], power[kept]
    total = np.broadcast_to(np.exp(ath * _DB_TO_POWER), q.shape).copy()
    upper = -27.0 + 0.37 * np.maximum(power - 40.0, 0.0)
    ends = np.flatnonzero(np.r_[f[1:] != f[:-1], True]) + 1 if len(f) else []  # each frame's last masker + 1
    cuts = [0]  # blocks of whole frames: each frame's sum is taken in one piece, as per frame
    for e0, e1 in zip(ends[:-1], ends[1:]):
        if e1 - cuts[-1] > MASKERS_PER_BLOCK:
            cuts.append(e0)
    for a, z in zip(cuts, cuts[1:] + [len(f)]) if len(f) else ():
        sl = slice(a, z)
        dz = b[None, :] - b[k[sl]][:, None]  # maskee - masker, Bark
        spread = np.where(dz < 0, 27.0 * dz, upper[sl, None] * dz)
        t = power[sl, None] - 6.025 - 0.275 * b[k[sl]][:, None] + spread
        contrib = np.exp(t * _DB_TO_POWER)
        fs = f[sl]
        firsts = np.flatnonzero(np.r_[True, fs[1:] != fs[:-1]])
        total[fs[firsts]] += np.add.reduceat(contrib, firsts, axis=0)
    return (10.0 * np.log10(total)).T


CACHED_CLIPS = 4
_cache: dict = {}
_cache_lock = threading.Lock()


@dataclass
class MaskingThreshold:
    """A clip's masking threshold: `threshold_db` (bins, frames) in normalised dB SPL and the
    clip's normalisation `offset_db` (96 - its peak PSD), which a perturbation's PSD shares."""

    threshold_db: np.ndarray
    offset_db: float

    @classmethod
    def of(cls, pcm: np.ndarray, sample_rate: int = 16_000) -> "MaskingThreshold":
        """The threshold of a clip (16-bit sample values), computed once per clip: the last
        CACHED_CLIPS clips' thresholds are kept by their samples' digest, read-only (the app
        attacks the same clip again and again; a masking budget and the report share one)."""
        pcm = np.ascontiguousarray(pcm, np.float64)
        key = (sample_rate, len(pcm), hashlib.blake2b(pcm.tobytes(), digest_size=16).digest())
        with _cache_lock:
            hit = _cache.pop(key, None)
            if hit is not None:
                _cache[key] = hit  # most recent last
                return hit
        made = cls._compute(pcm, sample_rate)
        made.threshold_db.setflags(write=False)
        with _cache_lock:
            _cache[key] = made
            while len(_cache) > CACHED_CLIPS:
                _cache.pop(next(iter(_cache)))
        return made

    @classmethod
    def _compute(cls, pcm: np.ndarray, sample_rate: int) -> "MaskingThreshold":
        p = psd_db(pcm)
        offset = PEAK_DB - float(p.max())
        p = p + offset
        freqs = np.fft.rfftfreq(N_FFT, 1.0 / sample_rate)
        b, ath = bark(freqs), absolute_threshold(freqs)
        return cls(thresholds(p, b, ath), offset)

    def amplitude_cap(self, margin_db: float = 0.0) -> np.ndarray:
        """(bins, frames) largest |stft(perturbation)| under the threshold shifted by margin_db."""
        return 10 ** ((self.threshold_db + margin_db - self.offset_db) / 20.0)

    def report(self, perturbation: np.ndarray) -> dict:
        """How a perturbation (16-bit units) stands against the threshold, over every STFT cell:
        `mask_exceeded_fraction` (cells whose perturbation PSD is above the threshold),
        `pmr_p95_db` (the 95th percentile of the cells' perturbation-to-mask ratio, dB: in 95 %
        of the cells the perturbation is at least that far under the mask when negative) and
        `pmr_max_db` (the worst cell); the ratios are None for no perturbation."""
        if not np.any(perturbation):
            return {"mask_exceeded_fraction": 0.0, "pmr_p95_db": None, "pmr_max_db": None}
        excess = psd_db(perturbation) + self.offset_db - self.threshold_db
        return {"mask_exceeded_fraction": round(float(np.mean(excess > 0)), 4),
                "pmr_p95_db": round(float(np.percentile(excess, 95)), 2),
                "pmr_max_db": round(float(excess.max()), 2)}
