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
TITLE_MARGIN = 4         # pixels around the title's lines
TITLE_FONT_SIZE = 12
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


def _font():
    try:
        return ImageFont.load_default(size=TITLE_FONT_SIZE)  # Pillow's own TrueType font
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: its bitmap font
        return ImageFont.load_default()


def title_lines(title: str, width: int, font=None) -> list[str]:
    """`title` broken at spaces into lines that each fit `width` pixels with the margins (a
    one-chunk image is 261 pixels wide: the whole title on one line was cut off there)."""
    font = font or _font()
    lines: list[str] = []
    for word in title.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width - 2 * TITLE_MARGIN:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines


def _image(rgb: np.ndarray, n_chunks: int, title: str, rows: int = 1) -> Image.Image:
    """The picture under its title, in at least `rows` lines (images shown side by side line up)."""
    frames = rgb.shape[1] // max(n_chunks, 1)
    rgb = rgb.copy()
    rgb[:, [i * frames for i in range(1, n_chunks)]] = SEPARATOR  # chunk boundaries
    img = Image.fromarray(rgb).resize((min(rgb.shape[1], MAX_WIDTH), rgb.shape[0] * BAND_PIXELS),
                                      Image.Resampling.NEAREST)
    font = _font()
    lines = title_lines(title, img.width, font)
    left, top, right, bottom = font.getbbox("Ag(")
    line_height = bottom - top + 3
    title_height = 2 * TITLE_MARGIN + line_height * max(len(lines), rows)
    out = Image.new("RGB", (img.width, img.height + title_height), (255, 255, 255))
    out.paste(img, (0, title_height))
    draw = ImageDraw.Draw(out)
    for i, line in enumerate(lines):
        draw.text((TITLE_MARGIN, TITLE_MARGIN + i * line_height - top), line, fill=(0, 0, 0), font=font)
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
    titles = {"before": f"log-Mel before attack (dB above chunk minimum, {lo:.0f}..{hi:.0f})",
              "after": f"log-Mel after attack (same scale, {lo:.0f}..{hi:.0f} dB)",
              "difference": f"difference after - before (blue -{limit:.2f} .. red +{limit:.2f} dB)"}
    width = min(before.shape[1], MAX_WIDTH)
    rows = max(len(title_lines(t, width)) for t in titles.values())
    return {
        "before": _image(colorize((before - lo) / span, SEQUENTIAL), n, titles["before"], rows),
        "after": _image(colorize((after - lo) / span, SEQUENTIAL), n, titles["after"], rows),
        "difference": _image(colorize(diff / (2 * limit) + 0.5, DIVERGING), n, titles["difference"], rows),
    }
