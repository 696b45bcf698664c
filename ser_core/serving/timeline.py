"""The emotion over a longer clip, as the app's /timeline answers it: the model's 3 s window
slid along the clip every HOP_SECONDS, each window scored through the serving path (trim, loop
to 3 s, log-Mel, standardise, ONNX), so a window says what /predict would say of that excerpt.

A window shows an emotion only where there is speech: the clip passes the speech check
(ser_core.audio.speech) and the window itself holds at least MIN_SPEECH_SECONDS of voice frames
making MIN_SPEECH_FRACTION of it (every window, when the clip passed as speech the voice
detector was unsure of); other windows keep their probabilities, marked, with no label.
Bounded: MAX_TIMELINE_SECONDS of audio, so at most 1 + (MAX_TIMELINE_SECONDS - 3) / HOP_SECONDS
windows, scored in batches."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_core.audio import speech as speech_module
from ser_core.serving.catalogue import get_bundle
from ser_core.serving.files import output_folder
from ser_core.serving.limits import read_clip
from ser_core.serving.prediction import jsonable, withhold_emotion

HOP_SECONDS = 0.5
MAX_TIMELINE_SECONDS = 60.0
BATCH = 32
# one colour a class, in the order of the model's labels (enough for the largest label set, 8)
COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (23, 190, 207)]


@dataclass
class TimelineOutcome:
    result: dict   # the JSON the API returns
    image: Path    # the plot (PNG)


def window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the windows: one window for a clip no longer than a window, else one
    every `hop` that fits whole (a tail shorter than a hop is covered by the last window)."""
    if n_samples <= window:
        return [0]
    return list(range(0, n_samples - window + 1, hop))


def n_windows(seconds: float, window_seconds: float = 3.0, hop_seconds: float = HOP_SECONDS) -> int:
    """How many windows a clip of `seconds` gets (window_starts' count)."""
    if seconds <= window_seconds:
        return 1
    return 1 + math.floor((seconds - window_seconds) / hop_seconds + 1e-9)


def timeline(path, model: str, max_seconds: float = MAX_TIMELINE_SECONDS, out_dir=None) -> TimelineOutcome:
    """Probabilities of every 3 s window, every HOP_SECONDS, of the clip at `path`, with its
    start and end (seconds), the share of voice frames in it and its label (None where there
    is no speech); the clip's speech check; and a plot of the probabilities over time."""
    t0 = time.perf_counter()
    b = get_bundle(model)
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    voice = speech_module.voice_probabilities(y) if sr == speech_module.SAMPLE_RATE else None
    check = speech_module.check_speech(y, sr, probabilities=voice).to_dict()
    withheld = withhold_emotion(check)
    window, hop = b.feature_config.window_samples, int(round(HOP_SECONDS * sr))
    starts = window_starts(len(y), window, hop)
    x = np.concatenate([b.features(y[s:s + window]) for s in starts])
    probs = np.concatenate([b.predict_features(x[i:i + BATCH]) for i in range(0, len(x), BATCH)])
    windows = []
    for s, p in zip(starts, probs):
        end = min(s + window, len(y))
        share = _voice_share(voice, s, end) if voice is not None else check["speech_fraction"]
        # speech the detector is unsure of (shouted, whispered) was judged by its sound as a whole
        voiced = (share * (end - s) / sr >= speech_module.MIN_SPEECH_SECONDS
                  and share >= speech_module.MIN_SPEECH_FRACTION)
        spoken = withheld["emotion_shown"] and (voiced or check["detector_unsure"])
        windows.append({"start": round(s / sr, 3), "end": round(end / sr, 3),
                        "probabilities": dict(zip(b.labels, map(float, p))),
                        "model_label": b.labels[int(p.argmax())],
                        "label": b.labels[int(p.argmax())] if spoken else None,
                        "voice_fraction": round(float(share), 3), "has_speech": bool(spoken)})
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    image = out / "timeline.png"
    timeline_image(windows, b.labels, len(y) / sr, f"Emotion over time ({model}): 3 s windows "
                   f"every {HOP_SECONDS:g} s; grey: no speech, no emotion").save(image)
    notes = [check["note"]] if check["note"] else []
    result = dict(model=model, language=b.config.get("language"), labels=b.labels,
                  window_seconds=window / sr, hop_seconds=HOP_SECONDS, windows=windows,
                  seconds_of_audio=round(len(y) / sr, 3), speech=check, **withheld, notes=notes,
                  latency_seconds=round(time.perf_counter() - t0, 4))
    return TimelineOutcome(jsonable(result), image)


def _voice_share(voice: np.ndarray, start: int, end: int) -> float:
    """Share of the window [start, end) samples in Silero frames at or above its threshold."""
    f = speech_module.FRAME_SAMPLES
    frames = voice[start // f: max(start // f + 1, end // f)]
    return float((frames >= speech_module.FRAME_THRESHOLD).mean()) if len(frames) else 0.0


def timeline_image(windows: list[dict], labels: list[str], seconds: float, title: str,
                   width: int = 900, height: int = 320):
    """Probability of each class at each window's centre, a line a class, windows without
    speech shaded grey (Pillow only, as plots.py)."""
    from PIL import Image, ImageDraw, ImageFont
    try:
        font = ImageFont.load_default(size=12)  # Pillow's TrueType font: its bitmap one drops spaces
    except (TypeError, ImportError, OSError):
        font = ImageFont.load_default()
    left, right, top, bottom = 44, 12, 44, 30
    img = Image.new("RGB", (width, height), (255, 255, 255))
    d = ImageDraw.Draw(img)
    pw, ph = width - left - right, height - top - bottom
    span = max(seconds, 1e-6)

    def px(t, p):
        return left + pw * t / span, top + ph * (1 - p)

    for w in windows:  # grey where no emotion is shown: half a hop either side of the centre
        if not w["has_speech"]:
            c = (w["start"] + w["end"]) / 2
            half = max(HOP_SECONDS / 2, 0.05) if len(windows) > 1 else (w["end"] - w["start"]) / 2
            d.rectangle([px(max(c - half, 0), 1), px(min(c + half, span), 0)], fill=(225, 225, 225))
    d.rectangle([left, top, left + pw, top + ph], outline=(0, 0, 0))
    for p in (0.25, 0.5, 0.75, 1.0):
        d.line([px(0, p), px(span, p)], fill=(200, 200, 200))
        d.text((4, px(0, p)[1] - 6), f"{p:.2f}", fill=(0, 0, 0), font=font)
    step = next(s for s in (0.5, 1, 2, 5, 10, 20, 30, 60) if span / s <= 12)
    for i in range(int(span / step) + 1):
        x, y0 = px(i * step, 0)
        d.line([x, y0, x, y0 + 4], fill=(0, 0, 0))
        d.text((x - 8, y0 + 8), f"{i * step:g} s", fill=(0, 0, 0), font=font)
    centres = [(w["start"] + w["end"]) / 2 for w in windows]
    for k, label in enumerate(labels):
        colour = COLOURS[k % len(COLOURS)]
        points = [px(c, w["probabilities"][label]) for c, w in zip(centres, windows)]
        if len(points) > 1:
            d.line(points, fill=colour, width=2)
        for x, y in points:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
    x = left
    for k, label in enumerate(labels):  # the legend, one line above the plot
        colour = COLOURS[k % len(COLOURS)]
        d.rectangle([x, 26, x + 10, 36], fill=colour)
        d.text((x + 14, 25), label, fill=(0, 0, 0), font=font)
        x += 24 + int(font.getlength(label))
    d.text((left, 6), title, fill=(0, 0, 0), font=font)
    return img
