"""Log-Mel images for the app: the clean features, the attacked features and their difference.

Drawn with numpy and Pillow only (Pillow comes with Gradio), so the Space needs no plotting
library. Features are shown in dB (standardisation undone, as `log_mel` computed them), chunks
side by side along time, low bands at the bottom. Before and after share one colour scale so
the eye compares like with like; the difference uses a diverging scale symmetric about zero."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Colour maps as anchor colours linearly interpolated (0..1): a magma-like sequential map and a
# blue-white-red diverging map.
SEQUENTIAL = np.array([[0, 0, 4], [59, 15, 112], [140, 41, 129], [222, 73, 104],
                       [254, 159, 109], [252, 253, 191]], dtype=np.float64)
DIVERGING = np.array([[5, 48, 97], [67, 147, 195], [247, 247, 247], [214, 96, 77],
                      [103, 0, 31]], dtype=np.float64)
BAND_PIXELS = 2          # vertical pixels per Mel band
MAX_WIDTH = 1200         # long clips are squeezed along time to this width
TITLE_HEIGHT = 18
SEPARATOR = (255, 255, 255)


def colorize(values: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """values in [0, 1] (any shape) -> uint8 RGB (shape + (3,))."""
    v = np.clip(np.nan_to_num(values), 0.0, 1.0) * (len(anchors) - 1)
    lo = np.minimum(v.astype(int), len(anchors) - 2)
    frac = (v - lo)[..., None]
    return np.round(anchors[lo] * (1 - frac) + anchors[lo + 1] * frac).astype(np.uint8)


def _canvas(features: np.ndarray) -> np.ndarray:
    """(n_chunks, frames, bands) -> (bands, n_chunks * frames) with low bands at the bottom."""
    return np.concatenate(list(features), axis=0).T[::-1]


def _image(rgb: np.ndarray, n_chunks: int, title: str) -> Image.Image:
    frames = rgb.shape[1] // max(n_chunks, 1)
    rgb = rgb.copy()
    rgb[:, [i * frames for i in range(1, n_chunks)]] = SEPARATOR  # chunk boundaries
    img = Image.fromarray(rgb).resize((min(rgb.shape[1], MAX_WIDTH), rgb.shape[0] * BAND_PIXELS),
                                      Image.Resampling.NEAREST)
    out = Image.new("RGB", (img.width, img.height + TITLE_HEIGHT), (255, 255, 255))
    out.paste(img, (0, TITLE_HEIGHT))
    ImageDraw.Draw(out).text((4, 3), title, fill=(0, 0, 0), font=ImageFont.load_default())
    return out


def log_mel_images(db_before: np.ndarray, db_after: np.ndarray) -> dict[str, Image.Image]:
    """dB features (n_chunks, frames, bands) before and after the attack -> three images:
    "before", "after" (shared scale) and "difference" (after - before, symmetric scale)."""
    if db_before.shape != db_after.shape:
        raise ValueError(f"before {db_before.shape} and after {db_after.shape} differ in shape")
    n = len(db_before)
    before, after = _canvas(db_before), _canvas(db_after)
    lo, hi = float(min(before.min(), after.min())), float(max(before.max(), after.max()))
    span = max(hi - lo, 1e-6)
    diff = after - before
    limit = max(float(np.abs(diff).max()), 1e-6)
    return {
        "before": _image(colorize((before - lo) / span, SEQUENTIAL), n,
                         f"log-Mel before attack (dB above chunk minimum, {lo:.0f}..{hi:.0f})"),
        "after": _image(colorize((after - lo) / span, SEQUENTIAL), n,
                        f"log-Mel after attack (same scale, {lo:.0f}..{hi:.0f} dB)"),
        "difference": _image(colorize(diff / (2 * limit) + 0.5, DIVERGING), n,
                             f"difference after - before (blue -{limit:.2f} .. red +{limit:.2f} dB)"),
    }
