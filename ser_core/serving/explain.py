"""Why the model decided, as the app's /explain answers it: occlusion on the log-Mel (Zeiler &
Fergus, "Visualizing and understanding convolutional networks", ECCV 2014, arXiv:1311.2901).

Each 3 s chunk's standardised log-Mel (261 frames x 128 bands) is cut into a grid of patches
(PATCH_FRAMES frames, about a third of a second, by PATCH_BANDS Mel bands); one patch at a time
is set to 0, the training set's mean for those cells (what the model saw on average there),
and the chunk is scored again through the serving path (ONNX). A patch's importance is how much
hiding it lowers the probability of the explained class: red where the patch argued for the
class, blue where it argued against. The map has the log-Mel's shape (every cell takes its
patch's value); the image lays it over the clip's log-Mel.

Bounded: MAX_EXPLAIN_SECONDS of audio, so at most that many 3 s chunks, each 1 + 9 x 8 = 73
model evaluations in one batch. The class explained is the model's top class for the clip
(its emotion when the clip is speech; for other sounds it is marked as not an emotion)."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_core.serving.catalogue import get_bundle
from ser_core.serving.files import output_folder
from ser_core.serving.limits import read_clip
from ser_core.serving.prediction import jsonable, speech_check, withhold_emotion

PATCH_FRAMES, PATCH_BANDS = 29, 16   # 261 = 9 x 29 frames (0.33 s), 128 = 8 x 16 bands
MAX_EXPLAIN_SECONDS = 15.0
TOP_PATCHES = 5


@dataclass
class ExplainOutcome:
    result: dict        # the JSON the API returns
    log_mel: Path       # the clip's log-Mel (PNG)
    explanation: Path   # the occlusion map over the log-Mel (PNG)
    map: np.ndarray     # (n_chunks, frames, bands), the log-Mel's shape


def patch_grid(shape: tuple[int, int]) -> list[tuple[slice, slice]]:
    """(frames, bands) -> the patches' (frame slice, band slice), row by row in time; the last
    row and column take what is left when the sizes do not divide."""
    frames, bands = shape
    return [(slice(f, min(f + PATCH_FRAMES, frames)), slice(m, min(m + PATCH_BANDS, bands)))
            for f in range(0, frames, PATCH_FRAMES) for m in range(0, bands, PATCH_BANDS)]


def occlusion_map(bundle, x: np.ndarray, class_index: int) -> tuple[np.ndarray, int]:
    """Standardised features (n_chunks, frames, bands) -> (map of the same shape, model
    evaluations): for each cell, the probability of class `class_index` for its chunk minus
    that probability with the cell's patch set to 0 (the training mean)."""
    patches = patch_grid(x.shape[1:])
    out = np.zeros(x.shape, np.float32)
    for i, chunk in enumerate(x):
        batch = np.repeat(chunk[None], len(patches) + 1, axis=0)
        for j, (f, m) in enumerate(patches, start=1):
            batch[j, f, m] = 0.0
        p = bundle.predict_features(batch)[:, class_index]
        for j, (f, m) in enumerate(patches, start=1):
            out[i, f, m] = p[0] - p[j]
    return out, len(x) * (len(patches) + 1)


def explain(path, model: str, max_seconds: float = MAX_EXPLAIN_SECONDS, out_dir=None) -> ExplainOutcome:
    """Occlusion map of the clip at `path` for the model's top class, its top patches (chunk,
    seconds, Hz, importance), the speech check, and two images: the log-Mel and the map."""
    t0 = time.perf_counter()
    b = get_bundle(model)
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    x = b.features(y)
    pred = b.prediction_from_probabilities(b.predict_features(x))
    k = b.labels.index(pred.label)
    heat, evaluations = occlusion_map(b, x, k)
    check = speech_check(y, sr)
    withheld = withhold_emotion(check)
    patches = patch_grid(x.shape[1:])
    grid = np.array([[heat[i, f.start, m.start] for f, m in patches] for i in range(len(x))])
    cfg = b.feature_config
    edges = _mel_edges(cfg)
    top = []
    for flat in np.argsort(-grid.ravel())[:TOP_PATCHES]:
        i, j = divmod(int(flat), len(patches))
        f, m = patches[j]
        top.append({"chunk": i, "seconds": [round(f.start * cfg.hop_length / sr, 2), round(f.stop * cfg.hop_length / sr, 2)],
                    "hz": [round(float(edges[m.start])), round(float(edges[m.stop]))],
                    "importance": round(float(grid.ravel()[flat]), 4)})
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    shown = pred.label if withheld["emotion_shown"] else f"{pred.label} (not speech: no emotion)"
    db = b.standardizer.inverse(x)
    images = _images(db, heat, shown, out)
    rows, cols = -(-x.shape[1] // PATCH_FRAMES), -(-x.shape[2] // PATCH_BANDS)
    result = dict(model=model, language=b.config.get("language"), method="occlusion",
                  label=pred.label if withheld["emotion_shown"] else None, model_label=pred.label,
                  explained_class=pred.label, probabilities=pred.probabilities,
                  patch={"frames": PATCH_FRAMES, "bands": PATCH_BANDS,
                         "seconds": round(PATCH_FRAMES * cfg.hop_length / sr, 3), "occluded_with": 0.0},
                  map_shape=list(heat.shape), grid=grid.reshape(len(x), rows, cols).round(4),
                  top_patches=top, evaluations=evaluations, chunks=len(x), speech=check, **withheld,
                  notes=[n for n in [check["note"]] if n],
                  seconds_of_audio=round(len(y) / sr, 3), latency_seconds=round(time.perf_counter() - t0, 4))
    return ExplainOutcome(jsonable(result), images["log_mel"], images["explanation"], heat)


def _mel_edges(cfg) -> np.ndarray:
    """Hz at the centre of each Mel band, and the top band's upper edge (librosa's Mel scale)."""
    import librosa
    return librosa.mel_frequencies(cfg.n_mels + 2, fmin=0.0, fmax=cfg.sample_rate / 2)[1:]


def _images(db: np.ndarray, heat: np.ndarray, label: str, out: Path) -> dict[str, Path]:
    """The log-Mel (dB) and the occlusion map laid over it in grey, chunks side by side."""
    from ser_core.serving.plots import DIVERGING, MAX_WIDTH, SEQUENTIAL, _image, colorize, title_lines
    canvas = np.concatenate(list(db), axis=0).T[::-1]
    lo, hi = float(canvas.min()), float(canvas.max())
    level = (canvas - lo) / max(hi - lo, 1e-6)
    h = np.concatenate(list(heat), axis=0).T[::-1]
    limit = max(float(np.abs(h).max()), 1e-6)
    colour = colorize(h / (2 * limit) + 0.5, DIVERGING).astype(np.float64)
    grey = np.repeat((255 * (0.25 + 0.75 * level))[..., None], 3, axis=2)
    alpha = np.clip(np.abs(h) / limit, 0, 1)[..., None] * 0.85
    overlay = np.round(grey * (1 - alpha) + colour * alpha).astype(np.uint8)
    titles = {"log_mel": f"log-Mel (dB above chunk minimum, {lo:.0f}..{hi:.0f})",
              "explanation": f"occlusion for {label}: red for, blue against (up to {limit:.2f})"}
    rows = max(len(title_lines(t, min(canvas.shape[1], MAX_WIDTH))) for t in titles.values())  # aligned
    paths = {"log_mel": out / "explain_log_mel.png", "explanation": out / "explain_occlusion.png"}
    for name, rgb in (("log_mel", colorize(level, SEQUENTIAL)), ("explanation", overlay)):
        _image(rgb, len(db), titles[name], rows).save(paths[name])
    return paths
