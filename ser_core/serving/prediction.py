"""Clip -> emotion, as the app's /predict answers it, and the warm-up that makes the first
request as fast as the next ones.

  predict(path, model)   label, clip and per-chunk probabilities (serving path, ONNX), the
                         model's measured accuracy, a speech check and an "unsure" note
  model_accuracy         how well the model does and how that was measured (the bundle's config)
  confidence_note        a plain sentence when the top probability is low
  warm_up(models)        load bundles and build/check ONNX sessions before serving
  jsonable               numpy values -> plain Python for the API's JSON"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ser_core.serving.catalogue import available_models, get_bundle
from ser_core.serving.limits import MAX_PREDICT_SECONDS, read_clip

# Below this top probability the prediction comes with a plain "the model is unsure" sentence.
UNSURE_BELOW = 0.5


def model_accuracy(config: dict) -> dict:
    """How well the model does, as measured, with how it was measured: the speaker-fold
    cross-validation (config["crossval"]) when the bundle has one, else its test split."""
    cv = config.get("crossval")
    if isinstance(cv, dict) and isinstance(cv.get("accuracy"), (int, float)):
        ci = cv.get("accuracy_ci95") or [None, None]
        out = {"source": "crossval", "accuracy": cv["accuracy"], "accuracy_ci95": cv.get("accuracy_ci95"),
               "uar": cv.get("uar"), "uar_ci95": cv.get("uar_ci95"), "protocol": cv.get("protocol"),
               "folds": cv.get("folds"), "n_speakers": cv.get("n_speakers"), "n_clips": cv.get("n_clips"),
               "baseline": cv.get("baseline"), "report": cv.get("report")}
        text = f"Cross-validated accuracy {cv['accuracy']:.2f}"
        if None not in ci:
            text += f" (95% CI {ci[0]:.2f}-{ci[1]:.2f})"
        text += (f": {cv.get('folds', '?')} {cv.get('protocol', 'folds')}, {cv.get('n_speakers', '?')} speakers, "
                 f"{cv.get('n_clips', '?')} clips")
        base = cv.get("baseline") or {}
        if isinstance(base.get("accuracy"), (int, float)):
            text += f"; baseline {base.get('name', '?')}: {base['accuracy']:.2f}"
        out["text"] = text + "."
        return out
    test = (config.get("metrics") or {}).get("test") or {}
    if isinstance(test.get("accuracy"), (int, float)):
        split = test.get("subset") or (
            "held-out test speakers" if config.get("protocol") == "speaker"
            else "random test split (the study's protocol: its speakers were also trained on)")
        return {"source": "test", "accuracy": test["accuracy"], "n": test.get("n"),
                "protocol": config.get("protocol"),
                "text": f"Accuracy {test['accuracy']:.2f} on {split}, n={test.get('n', '?')} clips."}
    return {"source": None, "accuracy": None, "text": "No measured accuracy in this model bundle."}


def confidence_note(probabilities: dict) -> str | None:
    """A plain sentence when the top probability is below UNSURE_BELOW, else None."""
    ranked = sorted(probabilities.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or ranked[0][1] >= UNSURE_BELOW:
        return None
    (top, p), rest = ranked[0], ranked[1:]
    second = f"; next is {rest[0][0]} at {rest[0][1]:.2f}" if rest else ""
    return (f"The model is unsure: its top emotion, {top}, has probability {p:.2f} (below "
            f"{UNSURE_BELOW:.2f}){second}. Treat this prediction as a guess.")


def speech_check(y: np.ndarray, sample_rate: int) -> dict:
    from ser_core.audio.speech import check_speech
    return check_speech(y, sample_rate).to_dict()


def predict(path, model: str, max_seconds: float = MAX_PREDICT_SECONDS) -> dict:
    """Emotion of a clip: label, clip probabilities (mean over 3 s chunks) and per-chunk ones,
    the model's measured accuracy, the speech check and, when the top probability is low, a
    plain note. A clip with little or no speech is still scored; `speech.has_speech` is False
    and `notes` says so."""
    t0 = time.perf_counter()
    b = get_bundle(model)
    y = read_clip(path, max_seconds, b.feature_config.sample_rate)
    pred = b.predict_clip(y, b.feature_config.sample_rate)
    speech = speech_check(y, b.feature_config.sample_rate)
    unsure = confidence_note(pred.probabilities)
    return jsonable(dict(pred.to_dict(), model=model, language=b.config.get("language"),
                         confidence=max(pred.probabilities.values()), unsure=unsure is not None,
                         speech=speech, model_accuracy=model_accuracy(b.config),
                         notes=[n for n in (speech["note"], unsure) if n],
                         seconds_of_audio=round(len(y) / b.feature_config.sample_rate, 3),
                         latency_seconds=round(time.perf_counter() - t0, 4)))


def warm_up(models: list[str] | None = None) -> dict[str, float]:
    """Load every served bundle, build or check its ONNX session and run it once, and load the
    speech detector, so the first request is answered at full speed. Seconds per model."""
    import soundfile as sf
    seconds = {}
    with tempfile.TemporaryDirectory(prefix="ser-warm-") as tmp:
        # a whole request's path once: decoding, resampling, log-Mel (librosa's first calls
        # are slow), ONNX Runtime, the speech detector
        sr = 22_050
        t = np.arange(int(1.5 * sr)) / sr
        clip = Path(tmp) / "warm.wav"
        sf.write(str(clip), 0.3 * np.sin(2 * np.pi * 180 * t) * np.sin(np.pi * t / 1.5), sr, subtype="PCM_16")
        for name in models if models is not None else available_models():
            t0 = time.perf_counter()
            predict(str(clip), name)
            seconds[name] = round(time.perf_counter() - t0, 3)
    return seconds


def jsonable(obj):
    """Numpy scalars and arrays -> plain Python, recursively (for the API's JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
