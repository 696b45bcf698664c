"""What the app offers: the served models, the attack domains, each domain's attacks with their
parameters, and the strength presets the page starts from.

  available_models / model_info / get_bundle   the shipped bundles under models/ (lazily loaded,
                                               cached; Hub bundles only pinned to a commit)
  disable_model / disabled_models              models taken out of service, with the reason
  domains / default_domain / DOMAIN_LABELS     waveform (verified flips) first, then features
  attack_catalogue / default_attack            the registry's attacks (`Attack.describe`)
  presets / default_preset                     the study's settings; SNR budgets for waveform
  attack_choices / target_choices              the same lists as (label, value) pairs for pickers"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path

from ser_core.attacks import attack_class, describe_attacks
from ser_core.errors import ModelBundleError, ParameterError, excerpt
from ser_core.models import bundle as bundle_module
from ser_core.serving.robustness import defence_text, model_robustness

DOMAIN_FEATURES = "features"
DOMAIN_WAVEFORM = "waveform"
DOMAIN_LABELS = {DOMAIN_WAVEFORM: "waveform (verified)",
                 DOMAIN_FEATURES: "log-Mel features (the study)"}
# The multi-corpus model first (every emotion, all three corpora: what a visitor's voice is
# closest to), then the study's per-corpus models in its order; any other bundle after them.
PREFERRED = ("any", "emodb", "emovo", "ravdess")
# The target picker's "any other emotion"; parse_target reads it (and '') as untargeted.
NO_TARGET = "none"
# Threads a request computes on (torch and each ONNX Runtime session, the latter without spinning):
# on the Space's two vCPUs, attacks run one at a time beside at most two predictions, and with the
# libraries' defaults their threads mostly wait on each other: the default attack request took
# 0.59 CPU-s with them and 0.18 with one (benchmarks/app_attack_cpu.py, --threads 1).
SERVING_THREADS = int(os.environ.get("SER_APP_THREADS", "1"))

_bundles: dict[str, object] = {}
_bundles_lock = threading.Lock()
_disabled: dict[str, str] = {}  # model -> why it is not served (its ONNX could not be built, ...)


# --- models ---------------------------------------------------------------------------------
def available_models() -> list[str]:
    """Names (or folders) of the bundles the app serves: SER_APP_MODELS (comma-separated names
    or bundle folders) if set, else every bundle folder under models/ that has its config and
    weights. Missing ones are simply absent, so the app starts with whatever has been trained.
    A defended bundle (adversarially trained, or behind an input defence) follows its base model."""
    override = os.environ.get("SER_APP_MODELS", "").strip()
    if override:
        return [m.strip() for m in override.split(",") if m.strip() and m.strip() not in _disabled]
    root = bundle_module.MODELS_DIR
    found = [p.name for p in sorted(root.glob("*")) if not p.name.startswith(".") and p.name not in _disabled
             and (p / bundle_module.CONFIG).is_file() and (p / bundle_module.WEIGHTS).is_file()] \
        if root.is_dir() else []
    rank = {n: PREFERRED.index(n) if n in PREFERRED else len(PREFERRED) for n in found}
    base = {n: _base_of(root / n) for n in found}
    return sorted(found, key=lambda n: (rank.get(base[n], rank[n]), base[n] or n, base[n] is not None, n))


def _base_of(folder: Path) -> str | None:
    """The model a defended bundle was made from (its config's defended_from, or its adversarial
    training's base), or None."""
    try:
        cfg = json.loads((folder / bundle_module.CONFIG).read_text())
    except (OSError, ValueError):
        return None
    return cfg.get("defended_from") or (cfg.get("defence") or {}).get("base")


def disable_model(name: str, reason: str) -> None:
    """Take `name` out of service (available_models leaves it out; get_bundle names the reason)."""
    with _bundles_lock:
        _disabled[name] = reason
        _bundles.pop(name, None)


def disabled_models() -> dict[str, str]:
    """Models taken out of service, with the reason."""
    return dict(_disabled)


def _served(name) -> str:
    """`name` when it is in the one allow-list of served models (available_models), else a
    ParameterError naming the accepted ones: a caller's name never becomes a path on its own."""
    served = available_models()
    if isinstance(name, str) and name in _disabled:  # the reason (paths) stays in the server's log
        raise ModelBundleError(f"model {excerpt(name)} is out of service here: its files failed to load at "
                               f"start-up (accepted: {', '.join(served) or 'none'})")
    if not isinstance(name, str) or name not in served:
        raise ParameterError(f"model {excerpt(name)} is not served here "
                             f"(accepted: {', '.join(served) or 'none: no model bundle under models/'})")
    return name


def model_info(name: str) -> dict:
    """What the model picker shows, read from a served bundle's config without loading weights
    (a name outside the allow-list is refused before any file is looked at)."""
    name = _served(name)
    folder = Path(name) if (Path(name) / bundle_module.CONFIG).is_file() else bundle_module.MODELS_DIR / name
    try:
        cfg = json.loads((folder / bundle_module.CONFIG).read_text())
    except (OSError, ValueError):
        cfg = {}
    corpus = cfg.get("corpus", "?")
    language = cfg.get("language", "?")
    protocol = cfg.get("protocol", "?")
    card = folder / "README.md"
    defended = defence_text(cfg, short=True)
    return {"name": name, "corpus": corpus, "language": language, "protocol": protocol,
            "labels": cfg.get("labels", []), "defence": defence_text(cfg), "robustness": model_robustness(cfg),
            "title": f"{Path(name).name}: {language} ({corpus}), {protocol} protocol"
                     + (f"; defended: {defended}" if defended else ""),
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
    name = _served(name)
    with _bundles_lock:
        if name not in _bundles:
            if name.startswith(bundle_module.HUB_PREFIX):
                _, revision = bundle_module.parse_hub_id(name)
                if not (revision and re.fullmatch(r"[0-9a-f]{40}", revision)):
                    raise ModelBundleError(f"{name}: a served Hub model must be pinned to a commit "
                                           f"(accepted: {bundle_module.HUB_PREFIX}user/repo@<40-hex commit>)")
            _bundles[name] = bundle_module.ModelBundle.load(name)
            _bundles[name].configure_onnx(threads=SERVING_THREADS)
        return _bundles[name]


def forget_bundle(name: str) -> None:
    """Drop a cached bundle (its files changed, or it is no longer served)."""
    with _bundles_lock:
        _bundles.pop(name, None)


def target_choices(model) -> list[tuple[str, str]]:
    """'none' (any other emotion) first, then the model's emotions."""
    try:
        labels = model_info(model)["labels"] if model else []
    except Exception:  # an unknown model is named by the attack itself
        labels = []
    return [("none: any other emotion", NO_TARGET)] + [(label, label) for label in labels]


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
        raise ParameterError(f"unknown domain {excerpt(domain)} (accepted: {', '.join(domains())})")
    return describe_attacks(domain)


def attack_choices(domain: str) -> list[tuple[str, str]]:
    """The attack picker's (label, name) pairs for `domain`."""
    return [(f"{a['name']} ({a['kind']}, {a['goal']})", a["name"]) for a in attack_catalogue(domain)]


def _attack_entry(attack: str, domain: str) -> dict:
    """The catalogue entry of `attack`; an unknown name is told which domain it belongs to."""
    if domain not in domains():
        raise ParameterError(f"unknown domain {excerpt(domain)} (accepted: {', '.join(domains())})")
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
