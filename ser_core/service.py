"""What the app (and its API) does, as plain functions the tests call too.

`app.py` is Gradio wiring only; every value it shows comes from here:
  available_models / get_bundle   the shipped bundles under models/ (lazily loaded, cached)
  attack_catalogue / presets      the registry's attacks, their parameters, the study's settings
  predict(path, model)            clip -> emotion and probabilities (serving path, ONNX)
  run_attack(path, model, ...)    clip -> attacked clip: decisions before/after, perturbation,
                                  log-Mel images, playable audio, features for download
Every bad input raises a typed error of `errors.py` whose text says what was wrong and what is
accepted; the app shows that text as is, in the page and through the API."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import bundle as bundle_module
from .audio import load_audio
from .errors import AudioError, EmptyAudioError, ParameterError, TooLongAudioError

MAX_PREDICT_SECONDS = 120.0   # prediction is cheap: a couple of minutes of speech
MAX_ATTACK_SECONDS = 30.0     # white-box attacks cost per chunk: ten 3 s chunks at most
DOMAIN_FEATURES = "features"
DOMAIN_WAVEFORM = "waveform"
# Shipped speaker-protocol models first, in the study's order; any other bundle after them.
PREFERRED = ("emodb", "emovo", "ravdess")
OUTPUT_TTL_SECONDS = 3600

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
            _bundles[name] = bundle_module.ModelBundle.load(name)
        return _bundles[name]


# --- attacks --------------------------------------------------------------------------------
def _waveform_module():
    """ser_core.waveform when its clip attack is available (the verified waveform domain)."""
    try:
        from . import waveform
    except ImportError:
        return None
    return waveform if hasattr(waveform, "attack_waveform_clip") else None


def domains() -> list[str]:
    """Attack domains this installation offers, the default first: waveform attacks with
    verified flips (adversarial audio you can play) when ser_core.waveform provides them, and
    the study's feature attacks always. SER_APP_DEFAULT_DOMAIN=features puts those first."""
    found = ([DOMAIN_WAVEFORM] if _waveform_module() else []) + [DOMAIN_FEATURES]
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
    """Name, kind, goal, parameters and the study's settings of each attack of `domain`."""
    if domain == DOMAIN_WAVEFORM:
        wf = _waveform_module()
        if wf is None:
            raise ParameterError(f"domain {domain!r} is not available here (accepted: {', '.join(domains())})")
        return wf.describe_waveform_attacks()
    if domain != DOMAIN_FEATURES:
        raise ParameterError(f"unknown domain {domain!r} (accepted: {', '.join(domains())})")
    from .attacks import describe_attacks
    return describe_attacks()


def _attack_entry(attack: str, domain: str) -> dict:
    catalogue = attack_catalogue(domain)
    for a in catalogue:
        if a["name"] == attack:
            return a
    raise ParameterError(f"unknown {domain} attack {attack!r} "
                         f"(accepted: {', '.join(a['name'] for a in catalogue)}){_other_domain_hint(attack, domain)}")


def _other_domain_hint(attack, domain: str) -> str:
    """'; fgsm is a features attack: pass domain 'features'' when the name belongs elsewhere
    (the default domain is the waveform one; API callers of the study's attacks name theirs)."""
    for other in domains():
        if other != domain and any(a["name"] == attack for a in attack_catalogue(other)):
            return f"; {attack} is a {other} attack: pass domain {other!r}"
    return ""


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


def parse_params(params) -> dict:
    """Attack parameters from a dict or its JSON text ('' or None: the attack's defaults)."""
    if params is None or (isinstance(params, str) and not params.strip()):
        return {}
    if isinstance(params, str):
        try:
            params = json.loads(params)
        except ValueError as exc:
            raise ParameterError(f"parameters are not valid JSON ({exc.msg} at character {exc.pos}); "
                                 'accepted: a JSON object such as {"eps": 0.25}') from None
    if not isinstance(params, dict):
        raise ParameterError(f"parameters must be a JSON object, not {type(params).__name__} "
                             '(accepted: e.g. {"eps": 0.25})')
    return params


def check_params(bundle, attack: str, params: dict, domain: str) -> None:
    """Fail before any audio work when the attack or a parameter is not accepted."""
    if not isinstance(attack, str):
        raise ParameterError(f"attack must be a name, not {type(attack).__name__} "
                             f"(accepted: {', '.join(a['name'] for a in attack_catalogue(domain))})")
    _attack_entry(attack, domain)  # an unknown name is told which domain it belongs to
    if domain == DOMAIN_FEATURES:
        from .attacks import get_attack
        get_attack(attack, bundle, **params)
    else:
        _waveform_module().get_waveform_attack(attack, bundle, params)


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
def predict(path, model: str, max_seconds: float = MAX_PREDICT_SECONDS) -> dict:
    """Emotion of a clip: label, clip probabilities (mean over 3 s chunks) and per-chunk ones."""
    t0 = time.perf_counter()
    b = get_bundle(model)
    y = read_clip(path, max_seconds, b.feature_config.sample_rate)
    pred = b.predict_clip(y, b.feature_config.sample_rate)
    return jsonable(dict(pred.to_dict(), model=model, language=b.config.get("language"),
                         seconds_of_audio=round(len(y) / b.feature_config.sample_rate, 3),
                         latency_seconds=round(time.perf_counter() - t0, 4)))


# --- attack ---------------------------------------------------------------------------------
@dataclass
class AttackOutcome:
    """result: the JSON the API returns. The files live in `folder`."""

    result: dict
    folder: Path
    images: dict[str, Path] = field(default_factory=dict)  # before, after, difference (PNG)
    attacked_audio: Path | None = None  # playable: listening copy, or the verified adversarial WAV
    features: Path | None = None        # adversarial standardised features (.npy)


def output_folder() -> Path:
    """A fresh folder for one request's files; folders older than an hour are removed."""
    root = Path(os.environ.get("SER_APP_OUTPUT_DIR", Path(tempfile.gettempdir()) / "ser-space"))
    root.mkdir(parents=True, exist_ok=True)
    now = time.time()
    for old in root.glob("attack-*"):
        try:
            if now - old.stat().st_mtime > OUTPUT_TTL_SECONDS:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass
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
               target=None) -> AttackOutcome:
    """Attack a clip with `attack` on `model` and gather what the app shows.

    domain None: the default domain (waveform where available). Waveform domain: the attack
    perturbs the samples; the playable audio is its adversarial 16-bit WAV, and `flipped` is
    the serving path's decision on that file. Feature domain (the study): attack_clip attacks
    the standardised log-Mel chunks; the playable audio is a listening copy made by Griffin-Lim
    inversion, re-scored by the serving path. params '' or None: the attack's own defaults.
    target: an emotion of the model to land on (waveform attacks; the result's `target_reached`
    is the serving path's decision on the written WAV), or None/'none' for any other emotion."""
    t0 = time.perf_counter()
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
        _waveform_module().check_target(b, target)
    sr = b.feature_config.sample_rate
    y = read_clip(path, max_seconds, sr)
    out = Path(out_dir) if out_dir else output_folder()
    out.mkdir(parents=True, exist_ok=True)
    if domain == DOMAIN_FEATURES:
        outcome = _feature_attack(b, y, attack, params, max_seconds, progress, out)
    else:
        outcome = _waveform_attack(b, y, attack, params, max_seconds, progress, out, target)
    outcome.result.update(domain=domain, model=model, language=b.config.get("language"),
                          seconds_of_audio=round(len(y) / sr, 3),
                          total_seconds=round(time.perf_counter() - t0, 3))
    outcome.result = jsonable(outcome.result)
    return outcome


def _feature_attack(b, y, attack, params, max_seconds, progress, out: Path) -> AttackOutcome:
    from .clip_attack import attack_clip
    from .inversion import LABEL, listening_copy
    sr = b.feature_config.sample_rate
    r = attack_clip(b, y, attack, params, sample_rate=sr, max_seconds=max_seconds, progress=progress)
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
    wf = _waveform_module()
    sr = b.feature_config.sample_rate
    r = wf.attack_waveform_clip(b, y, attack=attack, params=params, sample_rate=sr,
                                max_seconds=max_seconds, out_dir=out, progress=progress, target=target)
    result = r.to_dict()
    result["flipped"] = r.verified_flipped  # only the decision on the written WAV counts
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


def _images(b, x, x_adv, out: Path) -> dict[str, Path]:
    from .plots import log_mel_images
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
