"""Decoded clip -> index map of its 3 s chunks, so chunking is a gather that gradients go through.

The serving path (chunks.py) trims the clip, cuts the trimmed clip into consecutive 3 s pieces,
trims each piece again and loops (tiles) short pieces to 3 s. Every chunk sample is therefore a
copy of one original sample: chunk[c, t] = clip[index[c, t]]. `chunk_index_map` runs the same
steps on sample positions instead of samples. Waveform attacks compute it once from the clean
clip and hold it fixed: they assume the trim bounds of the adversarial clip equal the clean ones.
The verification step (serving path on the written WAV) recomputes everything from the audio,
so a flip that depended on that assumption and does not survive it is not counted."""
from __future__ import annotations

import numpy as np

from ser_core.audio.chunks import trim_bounds
from ser_core.config import FeatureConfig, PAPER_FEATURES


def chunk_index_map(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(n_chunks, window_samples) int64 positions into y such that y[map] equals
    chunks.chunks(trim(y)) (with features.clip_features' fallback to the whole clip when the
    trim keeps nothing)."""
    w = cfg.window_samples
    start, end = trim_bounds(y, cfg)
    if end <= start:
        start, end = 0, len(y)
    positions = np.arange(start, end, dtype=np.int64)
    if len(positions) < w:
        pieces = [positions]
    else:
        pieces = []
        for s in range(0, len(positions), w):
            cut = positions[s:s + w]
            a, b = trim_bounds(y[cut], cfg)
            pieces.append(cut[a:b] if b > a else cut)
    return np.stack([np.resize(p, w) for p in pieces])


def trim_guard(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(len(y),) bool: samples whose change can move a trim bound of the serving path.

    librosa's trim keeps the span from the first to the last frame (frame_length samples,
    centred, every hop_length) whose RMS is within top_db of the loudest; a bound sits on a frame
    position. A frame just outside the kept span overlaps its first (last) frame_length / 2
    samples, and the span's own edge frame reaches hop_length further in, so changing a sample
    within frame_length / 2 + hop_length of a bound can switch an edge frame on or off and shift
    the chunking (for a clip shorter than 3 s, the phase of its looping). Perturbations that stay
    off these samples keep every bound (the clip's and each re-trimmed piece's), unless they move
    the loudest frame enough to move the threshold."""
    guard = cfg.trim_frame_length // 2 + cfg.trim_hop_length
    mask = np.zeros(len(y), bool)
    w = cfg.window_samples
    start, end = trim_bounds(y, cfg)
    if end <= start:
        return mask
    spans = [(start, end)]
    if end - start >= w:
        for s in range(start, end, w):
            cut_end = min(s + w, end)
            a, b = trim_bounds(y[s:cut_end], cfg)
            if b > a:
                spans.append((s + a, s + b))
    for a, b in spans:
        mask[a:min(a + guard, b)] = True
        mask[max(b - guard, a):b] = True
    return mask
