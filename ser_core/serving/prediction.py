"""Clip -> emotion, as the app's /predict answers it, and the warm-up that makes the first
request as fast as the next ones.

  predict(path, model)   label, clip and per-chunk probabilities (serving path, ONNX), the
                         model's measured accuracy, a speech check and an "unsure" note; no
                         label for a clip that is not speech (the check's reason instead)
  withhold_emotion       the fields that say whether an emotion is shown, and why not
  label_value            what the page's label view shows: the probabilities, or "no emotion"
  model_accuracy         how well the model does and how that was measured (the bundle's config)
  confidence_note        a plain sentence when the top probability is low
  range_note             a plain sentence when the clip is longer, shorter, louder or quieter
                         than anything the model trained on (the bundle's input_range)
  warm_up(models)        load bundles and build/check ONNX sessions before serving; a model
                         whose files fail is taken out of service, the others serve
  warm_up_in_background  the same in a thread, for the models after the page's default
  jsonable               numpy values -> plain Python for the API's JSON"""
from __future__ import annotations

import logging
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ser_core.audio.level import clip_level
from ser_core.serving.catalogue import available_models, disable_model, disabled_models, get_bundle
from ser_core.serving.limits import MAX_PREDICT_SECONDS, read_clip
from ser_core.serving.robustness import model_robustness

_log = logging.getLogger(__name__)

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


def range_note(config: dict, level: dict) -> str | None:
    """A plain sentence when the clip's length or loudness (ser_core/audio/level.py) is outside
    the range of the clips the model trained on (config["input_range"]), else None."""
    rng = config.get("input_range") or {}
    out = []
    for key, what, unit in (("seconds", "long", "s"), ("loudness_dbfs", "loud", "dBFS")):
        r, v = rng.get(key), level.get(key)
        if not r or v is None:
            continue
        if v < r["min"]:
            out.append(f"{'shorter' if what == 'long' else 'quieter'} ({v:.1f} {unit}) than any clip it "
                       f"trained on ({r['min']:.1f} {unit} at least)")
        elif v > r["max"]:
            out.append(f"{'longer' if what == 'long' else 'louder'} ({v:.1f} {unit}) than any clip it "
                       f"trained on ({r['max']:.1f} {unit} at most)")
    if not out:
        return None
    return ("This clip is " + " and ".join(out) + ": the model has heard nothing like it, so treat "
            "its answer with caution.")


def speech_check(y: np.ndarray, sample_rate: int) -> dict:
    from ser_core.audio.speech import check_speech
    return check_speech(y, sample_rate).to_dict()


NO_EMOTION = "no emotion: not speech"


def withhold_emotion(speech: dict) -> dict:
    """`emotion_shown` (the speech check passed) and, when not, `no_emotion_reason`: the
    models know acted speech only, so for any other sound their top class is not an emotion."""
    shown = bool(speech.get("has_speech"))
    reason = None if shown else (f"{speech.get('verdict', 'no speech')}"
                                 + (f": {speech['reason']}" if speech.get("reason") else ""))
    return {"emotion_shown": shown, "no_emotion_reason": reason}


def label_value(probabilities: dict, result: dict):
    """The label view's value: the probabilities when an emotion is shown, else NO_EMOTION
    (a label without bars; the page's note carries the model's output, marked)."""
    return probabilities if result.get("emotion_shown", True) else NO_EMOTION


def predict(path, model: str, max_seconds: float = MAX_PREDICT_SECONDS) -> dict:
    """Emotion of a clip: label, clip probabilities (mean over 3 s chunks) and per-chunk ones,
    the model's measured accuracy, the speech check and, when the top probability is low, a
    plain note. A clip with little or no speech is still scored, but shows no emotion: `label`
    is None, `emotion_shown` False, `no_emotion_reason` and `notes` say why; `model_label` is
    the model's top class either way and `probabilities` stay."""
    t0 = time.perf_counter()
    b = get_bundle(model)
    y = read_clip(path, max_seconds, b.feature_config.sample_rate)
    pred = b.predict_clip(y, b.feature_config.sample_rate)
    speech = speech_check(y, b.feature_config.sample_rate)
    withheld = withhold_emotion(speech)
    unsure = confidence_note(pred.probabilities) if withheld["emotion_shown"] else None
    level = clip_level(y, b.feature_config.sample_rate)
    far = range_note(b.config, level) if withheld["emotion_shown"] else None
    out = dict(pred.to_dict(), model_label=pred.label, **withheld)
    if not withheld["emotion_shown"]:
        out["label"] = None
    return jsonable(dict(out, model=model, language=b.config.get("language"),
                         confidence=max(pred.probabilities.values()), unsure=unsure is not None,
                         speech=speech, model_accuracy=model_accuracy(b.config),
                         model_robustness=model_robustness(b.config),
                         input_level=level, outside_training_range=far is not None,
                         notes=[n for n in (speech["note"], unsure, far) if n],
                         seconds_of_audio=round(len(y) / b.feature_config.sample_rate, 3),
                         latency_seconds=round(time.perf_counter() - t0, 4)))


def warm_up(models: list[str] | None = None, ready: int | None = None) -> dict[str, float]:
    """Load the served bundles in order, build (or rebuild) and check each ONNX session and run a
    whole request once, and load the speech detector, so the first request is answered at full
    speed. A model whose files fail (weights changed, ONNX that cannot be built or checked) is
    taken out of service (catalogue.disable_model), the reason logged, and the next one tried;
    the others serve. ready: stop once that many models are warm (the page's default; the rest
    in the background, warm_up_in_background). Seconds per model warmed."""
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
            if ready is not None and len(seconds) >= ready:
                break
            if name in disabled_models():
                continue
            t0 = time.perf_counter()
            try:
                get_bundle(name).onnx_session()  # its files: weights checked, ONNX built or rebuilt
            except Exception as exc:  # one model's bad files must not stop the others serving
                disable_model(name, f"{type(exc).__name__}: {exc}")
                _log.warning("model %s is out of service: %s: %s", name, type(exc).__name__, exc)
                continue
            predict(str(clip), name)
            seconds[name] = round(time.perf_counter() - t0, 3)
    return seconds


def warm_up_in_background(models: list[str], done=None) -> threading.Thread:
    """warm_up(models) in a daemon thread (the app serves meanwhile: a request for a model not
    yet warm waits for its ONNX session); then done(seconds), if given."""
    def work():
        seconds = warm_up(models)
        if done:
            done(seconds)
    thread = threading.Thread(target=work, name="ser-warm-up", daemon=True)
    thread.start()
    return thread


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
