"""What the app (and its API) does, as plain functions the tests call too.

`app.py` is Gradio wiring only; every value it shows comes from here:
  available_models / get_bundle   the shipped bundles under models/ (lazily loaded, cached)
  attack_catalogue / presets      the registry's attacks, their parameters, the study's settings
  predict(path, model)            clip -> emotion and probabilities (serving path, ONNX), the
                                  model's measured accuracy, a speech check, an "unsure" note
  run_attack(path, model, ...)    clip -> attacked clip: decisions before/after, perturbation,
                                  log-Mel images, playable audio, features for download; under
                                  this Space's wall-clock deadline and parameter caps
  warm_up(models)                 load bundles and build/check ONNX sessions before serving
Every bad input raises a typed error of `errors.py` whose text says what was wrong and what is
accepted; the app shows that text as is, in the page and through the API."""
from __future__ import annotations

import atexit
import json
import math
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_core.models import bundle as bundle_module
from ser_core.attacks import attack_class, describe_attacks, get_attack
from ser_core.audio.decode import load_audio
from ser_core.attacks.clip import attack_clip, check_target
from ser_core.control import run_control, stop_reason
from ser_core.errors import AttackCancelledError, AudioError, EmptyAudioError, ModelBundleError, ParameterError, TooLongAudioError

MAX_PREDICT_SECONDS = 120.0   # prediction is cheap: a couple of minutes of speech
MAX_ATTACK_SECONDS = 30.0     # white-box attacks cost per chunk: ten 3 s chunks at most
DOMAIN_FEATURES = "features"
DOMAIN_WAVEFORM = "waveform"
# Shipped speaker-protocol models first, in the study's order; any other bundle after them.
PREFERRED = ("emodb", "emovo", "ravdess")
OUTPUT_TTL_SECONDS = 3600
# Every attack request stops at this wall-clock deadline (seconds; SER_APP_ATTACK_DEADLINE_S)
# and returns the best result so far, marked stopped early. The CLI and the evaluation run
# attacks without it (ser_core.control: no run_control, no deadline).
ATTACK_DEADLINE_S = float(os.environ.get("SER_APP_ATTACK_DEADLINE_S", "60"))
# Files one instance keeps: attack outputs in its own folder, oldest removed beyond this.
MAX_OUTPUT_BYTES = int(float(os.environ.get("SER_APP_MAX_OUTPUT_MB", "200")) * 1e6)
# Below this top probability the prediction comes with a plain "the model is unsure" sentence.
UNSURE_BELOW = 0.5

_bundles: dict[str, object] = {}
_bundles_lock = threading.Lock()


# --- models ---------------------------------------------------------------------------------
def available_models() -> list[str]:
    """Names (or folders) of the bundles the app serves: SER_APP_MODELS (comma-separated names
    or bundle folders) if set, else every bundle folder under models/ that has its config and
    weights. Missing ones are simply absent, so the app starts with whatever has been trained."""
    override = os.environ.get("SER_APP_MODELS", "").strip()
    if override:
        return [m.strip() for m in override.split(",") if m.strip()]
    root = bundle_module.MODELS_DIR
    found = [p.name for p in sorted(root.glob("*")) if not p.name.startswith(".")
             and (p / bundle_module.CONFIG).is_file() and (p / bundle_module.WEIGHTS).is_file()] \
        if root.is_dir() else []
    return sorted(found, key=lambda n: (PREFERRED.index(n) if n in PREFERRED else len(PREFERRED), n))


def model_info(name: str) -> dict:
    """What the model picker shows, read from the bundle's config without loading weights."""
    folder = Path(name) if (Path(name) / bundle_module.CONFIG).is_file() else bundle_module.MODELS_DIR / name
    try:
        cfg = json.loads((folder / bundle_module.CONFIG).read_text())
    except (OSError, ValueError):
        cfg = {}
    corpus = cfg.get("corpus", "?")
    language = cfg.get("language", "?")
    protocol = cfg.get("protocol", "?")
    card = folder / "README.md"
    return {"name": name, "corpus": corpus, "language": language, "protocol": protocol,
            "labels": cfg.get("labels", []),
            "title": f"{Path(name).name}: {language} ({corpus}), {protocol} protocol",
            "card": _strip_front_matter(card.read_text()) if card.is_file() else ""}


def _strip_front_matter(text: str) -> str:
    """A model card without its Hub YAML header (shown as page text otherwise)."""
    if text.startswith("---\n"):
        end = text.find("\n---", 4)
        if end != -1:
            return text[end + 4:].lstrip("\n")
    return text


def get_bundle(name: str):
    """The served bundle `name`, loaded once and kept (its ONNX session and torch model are
    built on first use by the bundle itself)."""
    served = available_models()
    if name not in served:
        raise ParameterError(f"model {name!r} is not served here "
                             f"(accepted: {', '.join(served) or 'none: no model bundle under models/'})")
    with _bundles_lock:
        if name not in _bundles:
            if name.startswith(bundle_module.HUB_PREFIX):
                _, revision = bundle_module.parse_hub_id(name)
                if not (revision and re.fullmatch(r"[0-9a-f]{40}", revision)):
                    raise ModelBundleError(f"{name}: a served Hub model must be pinned to a commit "
                                           f"(accepted: {bundle_module.HUB_PREFIX}user/repo@<40-hex commit>)")
            _bundles[name] = bundle_module.ModelBundle.load(name)
        return _bundles[name]


# --- attacks --------------------------------------------------------------------------------
def domains() -> list[str]:
    """Attack domains the app offers, the default first: waveform attacks with verified flips
    (adversarial audio you can play), then the study's feature attacks.
    SER_APP_DEFAULT_DOMAIN=features puts those first."""
    found = [DOMAIN_WAVEFORM, DOMAIN_FEATURES]
    first = os.environ.get("SER_APP_DEFAULT_DOMAIN", DOMAIN_WAVEFORM)
    return sorted(found, key=lambda d: d != first)


def default_domain() -> str:
    """The domain the app offers first and /attack uses when the caller names none."""
    return domains()[0]


# The attack each domain offers first: Auto-PGD flips the most held-out clips of the waveform
# attacks at every SNR measured, in the least median time (README.md "Waveform attacks",
# benchmarks/waveform_flip_rate.py); FGSM is the study's first.
DEFAULT_ATTACKS = {DOMAIN_WAVEFORM: "apgd", DOMAIN_FEATURES: "fgsm"}


def default_attack(domain: str) -> str | None:
    names = [a["name"] for a in attack_catalogue(domain)]
    preferred = DEFAULT_ATTACKS.get(domain)
    return preferred if preferred in names else (names[0] if names else None)


def attack_catalogue(domain: str = DOMAIN_FEATURES) -> list[dict]:
    """Name, kind, goal, parameters and the study's settings of each attack of `domain`
    (`Attack.describe`, as `python -m export attacks` lists them)."""
    if domain not in domains():
        raise ParameterError(f"unknown domain {domain!r} (accepted: {', '.join(domains())})")
    return describe_attacks(domain)


def _attack_entry(attack: str, domain: str) -> dict:
    """The catalogue entry of `attack`; an unknown name is told which domain it belongs to."""
    if domain not in domains():
        raise ParameterError(f"unknown domain {domain!r} (accepted: {', '.join(domains())})")
    return attack_class(attack, domain).describe()


def default_params(attack: str, domain: str = DOMAIN_FEATURES) -> dict:
    return {k: p["default"] for k, p in _attack_entry(attack, domain)["params"].items()}


# Waveform budgets offered as presets (the study has no waveform settings): SNR of the attacked
# clip against the clean one. The first, the app's default, is moderate (faint hiss); 20 dB is
# clearly audible noise, 50 dB barely audible.
WAVEFORM_SNR_PRESETS = (30.0, 20.0, 40.0, 50.0)
# Iterations of the waveform presets: enough to flip most EmoDB and EMOVO clips at 30 dB, few
# enough that an attack on a 3-4 s clip takes a few seconds on two CPU cores (PGD 40 steps:
# 0.2-2.2 s on one thread here, benchmarks/app_latency.py). C&W as in the evaluation's quick
# profile. The attack's own defaults stay available as the last preset.
WAVEFORM_APP_SETTINGS = {"pgd": {"steps": 40, "step_fraction": 0.1}, "apgd": {"steps": 40},
                         "cw": {"steps": 20, "binary_steps": 3}}


def presets(attack: str, domain: str = DOMAIN_FEATURES) -> list[tuple[str, dict]]:
    """Strength presets over the attack's defaults, the app's default first: the study's
    settings (PAPER.md) for feature attacks; for waveform attacks SNR budgets (budgeted ones)
    at the app's iteration counts, then the attack's defaults."""
    entry = _attack_entry(attack, domain)
    base = default_params(attack, domain)
    settings = list(entry.get("paper_settings") or [])
    if domain == DOMAIN_WAVEFORM:
        fast = WAVEFORM_APP_SETTINGS.get(attack, {})
        settings = [dict(snr_db=s, **fast) for s in WAVEFORM_SNR_PRESETS] if "snr_db" in base else [fast]
    out = [(", ".join(f"{k}={v}" for k, v in s.items()) or "defaults", dict(base, **s)) for s in settings if s]
    if domain == DOMAIN_WAVEFORM or not out:
        out.append(("defaults", base))
    return out


def default_preset(domain: str | None = None) -> tuple[str, str, dict]:
    """(attack, preset label, parameters) the app starts with, and /attack runs when the
    caller gives only a clip and a model."""
    domain = domain or default_domain()
    attack = default_attack(domain)
    label, params = presets(attack, domain)[0]
    return attack, label, params


MAX_PARAMS_CHARS = 2000
MAX_NUMBER_CHARS = 30   # digits of one JSON number
MAX_STRING_CHARS = 100  # one string value
ACCEPTED_PARAMS = 'accepted: a flat JSON object of numbers, true/false or short strings, e.g. {"eps": 0.25}'


def _json_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ParameterError(f"a number of {len(text)} digits ({text[:12]}...) in the parameters "
                             f"(accepted: at most {MAX_NUMBER_CHARS} digits)")
    return int(text)


def _json_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ParameterError(f"a number of {len(text)} characters ({text[:12]}...) in the parameters "
                             f"(accepted: at most {MAX_NUMBER_CHARS} characters)")
    return float(text)


def _json_constant(name: str):
    raise ParameterError(f"{name} in the parameters is not a number (accepted: finite numbers)")


def parse_params(params) -> dict:
    """Attack parameters from a dict or its JSON text ('' or None: the attack's defaults).
    Every malformed value is a ParameterError naming it: text over MAX_PARAMS_CHARS, invalid
    JSON, numbers of more than MAX_NUMBER_CHARS digits, NaN/Infinity, nesting of any depth
    (values are scalars), long strings."""
    if params is None or (isinstance(params, str) and not params.strip()):
        return {}
    if isinstance(params, (bytes, bytearray)):
        params = params.decode("utf-8", "replace")
    if isinstance(params, str):
        if len(params) > MAX_PARAMS_CHARS:
            raise ParameterError(f"parameters are {len(params)} characters long "
                                 f"(accepted: at most {MAX_PARAMS_CHARS}; {ACCEPTED_PARAMS})")
        try:
            params = json.loads(params, parse_int=_json_int, parse_float=_json_float,
                                parse_constant=_json_constant)
        except ParameterError:
            raise
        except json.JSONDecodeError as exc:
            raise ParameterError(f"parameters are not valid JSON ({exc.msg} at character {exc.pos}); "
                                 f"{ACCEPTED_PARAMS}") from None
        except RecursionError:
            raise ParameterError(f"parameters are nested too deeply to read ({ACCEPTED_PARAMS})") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise ParameterError(f"parameters cannot be read ({type(exc).__name__}); {ACCEPTED_PARAMS}") from None
    if not isinstance(params, dict):
        raise ParameterError(f"parameters must be a JSON object, not {type(params).__name__} "
                             f"({ACCEPTED_PARAMS})")
    for k, v in params.items():
        name = k if len(str(k)) <= 40 else f"{str(k)[:40]}..."
        if isinstance(v, (dict, list, tuple)):
            raise ParameterError(f"parameter {name!r} is a nested {type(v).__name__} ({ACCEPTED_PARAMS})")
        if v is not None and not isinstance(v, (bool, int, float, str)):
            raise ParameterError(f"parameter {name!r} is a {type(v).__name__} ({ACCEPTED_PARAMS})")
        if isinstance(v, str) and len(v) > MAX_STRING_CHARS:
            raise ParameterError(f"parameter {name!r} is a string of {len(v)} characters "
                                 f"(accepted: at most {MAX_STRING_CHARS})")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10 ** MAX_NUMBER_CHARS:
            raise ParameterError(f"parameter {name!r} is an integer of {len(str(abs(v)))} digits "
                                 f"(accepted: at most {MAX_NUMBER_CHARS} digits)")
        if isinstance(v, float) and not math.isfinite(v):
            raise ParameterError(f"parameter {name!r}={v} is not finite (accepted: finite numbers)")
    return params


# What a 2-vCPU Space runs per attack request: (lowest, highest) accepted value of the settings
# that multiply the work, tighter than the attacks' own ranges (which the CLI and the evaluation
# keep). With them the defaults and the study's settings still run; each request also stops at
# ATTACK_DEADLINE_S. Measured before these caps on a 30 s clip: square with 100k queries 2 h,
# waveform cw 11.6 h, boundary and cw_l2 far more.
SPACE_CAPS = {
    (DOMAIN_WAVEFORM, "pgd"): {"steps": (1, 200)},
    (DOMAIN_WAVEFORM, "apgd"): {"steps": (1, 200), "restarts": (0, 3), "shrink": (0, 8)},
    (DOMAIN_WAVEFORM, "cw"): {"steps": (1, 100), "binary_steps": (1, 6)},
    (DOMAIN_WAVEFORM, "square"): {"max_queries": (1, 1000), "population": (1, 16)},
    (DOMAIN_FEATURES, "bim"): {"max_iter": (1, 200)},
    (DOMAIN_FEATURES, "deepfool"): {"max_iter": (1, 50)},
    (DOMAIN_FEATURES, "jsma"): {"max_iter": (1, 2000)},
    (DOMAIN_FEATURES, "cw_l2"): {"binary_search_steps": (1, 20), "max_iter": (0, 20),
                                 "max_halving": (1, 10), "max_doubling": (1, 10)},
    (DOMAIN_FEATURES, "cw_linf"): {"max_iter": (0, 20), "const_factor": (2.0, 1000.0),
                                   "decrease_factor": (1e-6, 0.9)},
    (DOMAIN_FEATURES, "boundary"): {"max_iter": (0, 200), "num_trial": (1, 5), "sample_size": (1, 20),
                                    "init_size": (1, 200), "init_steps": (0, 20)},
    (DOMAIN_FEATURES, "pixel"): {"max_iter": (0, 40), "th": (1, 20)},
}


def space_caps(attack: str, domain: str) -> dict:
    return SPACE_CAPS.get((domain, attack), {})


def _check_caps(attack: str, domain: str, settings: dict) -> None:
    for name, (low, high) in space_caps(attack, domain).items():
        v = settings.get(name)
        if v is not None and not low <= v <= high:
            raise ParameterError(f"{attack}: {name}={v!r} is outside this Space's limits [{low}, {high}] "
                                 "(2 vCPU; the command-line tool `python -m export attack` accepts "
                                 "the attack's full range)")


def check_params(bundle, attack: str, params: dict, domain: str) -> None:
    """Fail before any audio work when the attack or a parameter is not accepted."""
    if not isinstance(attack, str):
        raise ParameterError(f"attack must be a name, not {type(attack).__name__} "
                             f"(accepted: {', '.join(a['name'] for a in attack_catalogue(domain))})")
    runner = get_attack(attack, bundle, domain=domain, **params)  # an unknown name is told its domain
    _check_caps(attack, domain, runner.settings)


# --- audio ----------------------------------------------------------------------------------
def read_clip(path, max_seconds: float, sample_rate: int) -> np.ndarray:
    """Decoded, validated clip. The duration is checked from the file header first when the
    header can be read, so an hours-long upload is refused without decoding it."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise EmptyAudioError("<no audio>", "no audio was given", "upload or record a clip")
    path = Path(path)
    try:
        import soundfile as sf
        info = sf.info(str(path))
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
    except Exception:  # not a header libsndfile knows: load_audio decides and explains
        seconds = 0.0
    if seconds > max_seconds:
        raise TooLongAudioError(path.name, f"{seconds:.1f} s long", f"at most {max_seconds:g} s")
    try:
        return load_audio(path, sample_rate, max_seconds=max_seconds)
    except AudioError as exc:  # name the file as its sender knows it, not the server's copy
        raise type(exc)(path.name, exc.problem, exc.accepted) from None


# --- prediction -----------------------------------------------------------------------------
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


def prediction_markdown(result: dict) -> str:
    """What the page shows beside a prediction: its notes, then the model's accuracy."""
    lines = [f"**Note:** {n}" for n in result.get("notes") or []]
    acc = (result.get("model_accuracy") or {}).get("text")
    if acc:
        lines.append(f"Model: {acc}")
    return "\n\n".join(lines)


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


# --- attack ---------------------------------------------------------------------------------
@dataclass
class AttackOutcome:
    """result: the JSON the API returns. The files live in `folder`."""

    result: dict
    folder: Path
    images: dict[str, Path] = field(default_factory=dict)  # before, after, difference (PNG)
    attacked_audio: Path | None = None  # playable: listening copy, or the verified adversarial WAV
    features: Path | None = None        # adversarial standardised features (.npy)


_output_root: Path | None = None


def output_root() -> Path:
    """This instance's folder for attack outputs: SER_APP_OUTPUT_DIR, or a fresh temporary
    folder per process (removed at exit), never one shared by every instance on the host."""
    global _output_root
    if _output_root is None:
        given = os.environ.get("SER_APP_OUTPUT_DIR")
        if given:
            _output_root = Path(given)
            _output_root.mkdir(parents=True, exist_ok=True)
        else:
            _output_root = Path(tempfile.mkdtemp(prefix=f"ser-space-{os.getpid()}-"))
            atexit.register(shutil.rmtree, _output_root, True)
    return _output_root


def folder_bytes(root) -> int:
    """Bytes of the files under `root` (0 if absent)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def prune(root, max_bytes: int, max_age: float | None = None, min_age: float = 0.0,
          pattern: str = "*") -> int:
    """Remove entries of `root` matching `pattern`, oldest first, that are older than
    `max_age`, then until the rest fit in `max_bytes`; entries younger than `min_age` seconds
    stay (a page may still be fetching them). Returns the bytes removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    now = time.time()
    entries = []
    for p in root.glob(pattern):
        try:
            entries.append((p.stat().st_mtime, p, folder_bytes(p) if p.is_dir() else p.stat().st_size))
        except OSError:
            pass
    entries.sort(key=lambda e: e[0])
    total = sum(e[2] for e in entries)
    removed = 0
    for mtime, p, size in entries:
        age = now - mtime
        if age < min_age:
            continue
        if (max_age is not None and age > max_age) or total > max_bytes:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            total -= size
            removed += size
    return removed


def output_folder() -> Path:
    """A fresh folder for one request's files. Older ones go after OUTPUT_TTL_SECONDS, and the
    oldest first whenever this instance holds more than MAX_OUTPUT_BYTES."""
    root = output_root()
    prune(root, MAX_OUTPUT_BYTES, OUTPUT_TTL_SECONDS, min_age=30.0, pattern="attack-*")
    return Path(tempfile.mkdtemp(prefix="attack-", dir=root))


def parse_target(target) -> str | None:
    """The emotion a targeted attack should land on; None, '' or 'none' mean untargeted."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "none")):
        return None
    if not isinstance(target, str):
        raise ParameterError(f"target must be an emotion name, not {type(target).__name__} "
                             "(accepted: one of the model's emotions, or none)")
    return target.strip()


def run_attack(path, model: str, attack: str, params=None, domain: str | None = None,
               max_seconds: float = MAX_ATTACK_SECONDS, progress=None, out_dir=None,
               deadline_s: float | None = None, cancel: threading.Event | None = None,
               target=None) -> AttackOutcome:
    """Attack a clip with `attack` on `model` and gather what the app shows.

    domain None: the default domain (waveform where available). Waveform domain: the attack
    perturbs the samples; the playable audio is its adversarial 16-bit WAV, and `flipped` is
    the serving path's decision on that file. Feature domain (the study): attack_clip attacks
    the standardised log-Mel chunks; the playable audio is a listening copy made by Griffin-Lim
    inversion, re-scored by the serving path. params '' or None: the attack's own defaults.
    target: an emotion of the model to land on (waveform attacks; the result's `target_reached`
    is the serving path's decision on the written WAV), or None/'none' for any other emotion.

    The attack runs under this Space's parameter caps (SPACE_CAPS) and wall-clock deadline
    (deadline_s, default ATTACK_DEADLINE_S): at the deadline, or when `cancel` is set, it stops
    and the result is the best so far, with stopped_early, stop_reason ('deadline' or
    'cancelled') and the seconds spent."""
    t0 = time.perf_counter()
    deadline_s = ATTACK_DEADLINE_S if deadline_s is None else float(deadline_s)
    domain = domain or default_domain()
    if domain not in domains():
        raise ParameterError(f"domain {domain!r} is not available (accepted: {', '.join(domains())})")
    b = get_bundle(model)
    params = parse_params(params)
    check_params(b, attack, params, domain)
    target = parse_target(target)
    if target is not None:
        if domain != DOMAIN_WAVEFORM:
            raise ParameterError(f"a target emotion is for waveform attacks, not {domain} attacks "
                                 f"(accepted: domain {DOMAIN_WAVEFORM!r}, or target none)")
        check_target(b, target)
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    with run_control(deadline_s=deadline_s, cancel=cancel):
        if domain == DOMAIN_FEATURES:
            outcome = _feature_attack(b, y, attack, params, max_seconds, progress, out)
        else:
            outcome = _waveform_attack(b, y, attack, params, max_seconds, progress, out, target)
    outcome.result.update(domain=domain, model=model, language=b.config.get("language"),
                          seconds_of_audio=round(len(y) / sr, 3), deadline_seconds=deadline_s,
                          model_accuracy=model_accuracy(b.config), speech=speech_check(y, sr),
                          total_seconds=round(time.perf_counter() - t0, 3))
    outcome.result = jsonable(outcome.result)
    return outcome


def _feature_attack(b, y, attack, params, max_seconds, progress, out: Path) -> AttackOutcome:
    from ser_core.serving.inversion import LABEL, listening_copy
    sr = b.feature_config.sample_rate
    r = attack_clip(b, y, attack, params, sample_rate=sr, max_seconds=max_seconds, progress=progress)
    _stop_if_cancelled(attack)
    if progress:
        progress(0.95, "listening copy (Griffin-Lim inversion)")
    copy = listening_copy(b, y, r.features, r.adversarial_features, out)
    features = out / "adversarial_features.npy"
    np.save(features, r.adversarial_features.astype(np.float32))
    result = r.to_dict()
    result["listening_copy"] = copy.to_dict(r.before.label)
    result["attacked_audio"] = LABEL
    images = _images(b, r.features, r.adversarial_features, out)
    return AttackOutcome(result, out, images, copy.path, features)


def _waveform_attack(b, y, attack, params, max_seconds, progress, out: Path, target=None) -> AttackOutcome:
    sr = b.feature_config.sample_rate
    r = attack_clip(b, y, attack, params, domain=DOMAIN_WAVEFORM, sample_rate=sr, max_seconds=max_seconds,
                    out_dir=out, progress=progress, target=target)
    _stop_if_cancelled(attack)
    result = r.to_dict()
    result["flipped"] = r.flipped  # the decision on the written WAV: the only one that counts
    wav = Path(r.wav_path)
    # the images compare what the serving path computes from the clean clip and the WAV
    x, x_adv = b.features(y), b.features(r.adversarial_audio)
    if x_adv.shape != x.shape:  # the perturbed clip trims into another number of chunks
        n = min(len(x), len(x_adv))
        x, x_adv = x[:n], x_adv[:n]
    features = out / "adversarial_features.npy"
    np.save(features, x_adv)
    result["attacked_audio"] = "adversarial audio (16-bit WAV), its decision verified by the serving path"
    return AttackOutcome(result, out, _images(b, x, x_adv, out), wav, features)


def _stop_if_cancelled(attack: str) -> None:
    """A cancelled run skips the images, inversion and files nobody will see."""
    if stop_reason() == "cancelled":
        raise AttackCancelledError(f"{attack}: cancelled by the caller")


def _images(b, x, x_adv, out: Path) -> dict[str, Path]:
    from ser_core.serving.plots import log_mel_images
    images = log_mel_images(b.standardizer.inverse(x), b.standardizer.inverse(x_adv))
    paths = {}
    for name, img in images.items():
        paths[name] = out / f"log_mel_{name}.png"
        img.save(paths[name])
    return paths


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


# --- report ---------------------------------------------------------------------------------
def report() -> tuple[str, list[Path]]:
    """The committed evaluation report (reports/README.md) and its plots (any PNG under reports/),
    or a note. Inline images become pointers to the gallery the app shows below the text."""
    import re
    folder = bundle_module.REPO_ROOT / "reports"
    readme = folder / "README.md"
    plots = sorted(folder.rglob("*.png")) if folder.is_dir() else []
    if not readme.is_file():
        return ("No evaluation report has been committed yet (reports/README.md). Run the "
                "evaluation to create it; its tables and plots will appear here."), plots
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f"*(figure {Path(m.group(2)).name}: "
                  f"{m.group(1) or 'plot'}, in the gallery below)*", readme.read_text())
    return text, plots
