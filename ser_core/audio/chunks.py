"""Decoded clip -> 3 s chunks, exactly as the study windows it (PAPER.md, step 2-3).

trim(clip) -> if at least 3 s: consecutive 3 s pieces, every remainder kept however short,
each piece trimmed again -> every piece shorter than 3 s looped (tiled) to exactly 3 s."""
from __future__ import annotations

import math

import librosa
import numpy as np

from ser_core.config import FeatureConfig, PAPER_FEATURES


def trim(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """Leading/trailing silence removed (librosa trim, top_db 30, frame 512, hop 64)."""
    trimmed, _ = librosa.effects.trim(y, top_db=cfg.trim_top_db,
                                      frame_length=cfg.trim_frame_length,
                                      hop_length=cfg.trim_hop_length)
    return trimmed


def trim_bounds(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> tuple[int, int]:
    """(start, end) sample indices that `trim` keeps."""
    _, idx = librosa.effects.trim(y, top_db=cfg.trim_top_db,
                                  frame_length=cfg.trim_frame_length,
                                  hop_length=cfg.trim_hop_length)
    return int(idx[0]), int(idx[1])


def n_windows(n_samples: int, cfg: FeatureConfig = PAPER_FEATURES) -> int:
    """How many chunks a trimmed clip of n_samples gives."""
    return max(1, math.ceil(n_samples / cfg.window_samples))


def loop_to_window(piece: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """Tile a piece to exactly one window (numpy resize repeats the samples cyclically)."""
    return np.resize(piece, cfg.window_samples).astype(np.float32)


def window_pieces(trimmed: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> list[np.ndarray]:
    """The pieces of a trimmed clip before looping (each re-trimmed if the clip was split)."""
    w = cfg.window_samples
    if len(trimmed) < w:
        return [trimmed]
    pieces = []
    for start in range(0, len(trimmed), w):
        piece = trim(trimmed[start:start + w], cfg)
        # a piece that is silence throughout trims to nothing; keep it as cut
        pieces.append(piece if len(piece) else trimmed[start:start + w])
    return pieces


def chunks(trimmed: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(n_windows, window_samples) float32 chunks of an already trimmed clip."""
    return np.stack([p if len(p) == cfg.window_samples else loop_to_window(p, cfg)
                     for p in window_pieces(trimmed, cfg)]).astype(np.float32)
