"""What every attack shares, in both domains: parameter declaration and checking, the
registry by (domain, name), the catalogue entry (`describe`), the logit margin, and for the
feature domain the batching loop, clipping and the result object.

One base class, `Attack`, for both domains. An attack's `domain` says what it perturbs:
  - "features": standardised log-Mel features x of shape (batch, 261, 128), the study's attacks
    (`FeatureAttack`, this module); a flip is the model's decision on the adversarial features;
  - "waveform": the 16-bit samples of one whole clip (`ser_core.attacks.waveform.base.WaveformAttack`);
    a flip counts only when the serving path's decision on the written 16-bit WAV differs.
Callers never need to tell them apart: `ser_core.attacks.get_attack(name, bundle, domain=...)`
makes either, `describe_attacks()` lists both, and `ser_core.attacks.clip.attack_clip` runs
either on a clip and returns one `ClipAttackResult`.

Feature attacks are untargeted: an example "flips" when the model's decision on the
adversarial input differs from its decision on the clean input (or from the true label, when
labels are given). Two families, as Foolbox names them:
  - fixed-budget attacks (FGSM, BIM, Pixel): given a budget, return the best input inside it;
  - minimisation attacks (DeepFool, JSMA, C&W, Boundary): return the smallest perturbation found.
White-box attacks get gradients from `bundle.torch_model()` and implement `_attack_batch`, which
`FeatureAttack._run` calls on batches of `BATCH` examples; black-box attacks only call
`bundle.predict_features` (ONNX Runtime) through `QueryCounter`, which counts every example
scored, and implement `_run` over the whole input."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ser_core.control import should_stop, stop_reason
from ser_core.errors import ParameterError

DOMAINS = ("features", "waveform")
BATCH = 64  # feature examples per forward/backward pass: bounds activation memory on long inputs
TANH_SMOOTHER = 0.999999  # ART's factor keeping arctanh finite at the clip bounds (TanhSpace)


@dataclass(frozen=True)
class Param:
    """One declared parameter: default, type, accepted range (inclusive) or choices, meaning."""

    default: Any
    type: type = float
    low: float | None = None
    high: float | None = None
    choices: tuple | None = None
    help: str = ""

    def check(self, attack: str, name: str, value):
        value = self._coerce(attack, name, value)
        if self.choices is not None and value not in self.choices:
            raise ParameterError(f"{attack}: {name}={value!r} (accepted: {', '.join(map(str, self.choices))})")
        if isinstance(value, float) and not np.isfinite(value):
            raise ParameterError(f"{attack}: {name}={value!r} is not finite")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ParameterError(f"{attack}: {name}={value!r} is outside [{self.low}, {self.high}]")
        return value

    def _coerce(self, attack: str, name: str, value):
        """Strings from a CLI or an API become the declared type; nothing is silently truncated."""
        bad = ParameterError(f"{attack}: {name}={value!r} is not a {self.type.__name__}")
        if self.type is bool:
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
                return _BOOL_WORDS[value.strip().lower()]
            if isinstance(value, (int, np.integer)) and value in (0, 1):
                return bool(value)
            raise ParameterError(f"{attack}: {name}={value!r} is not a boolean (accepted: true, false)")
        if isinstance(value, (bool, np.bool_)):
            raise bad
        try:
            if self.type is int:
                f = float(value)
                if not np.isfinite(f) or f != int(f):
                    raise bad
                return int(f)
            return self.type(value)
        except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond float range
            raise bad from None


def check_settings(attack: str, params: dict[str, Param], given: dict) -> dict:
    """Every declared parameter, checked, from `given` or its default; unknown names refused.
    A parameter whose default is None is optional: left out, it stays None."""
    unknown = set(given) - set(params)
    if unknown:
        raise ParameterError(f"{attack}: unknown parameters {sorted(unknown)} "
                             f"(accepted: {', '.join(params) or 'none'})")
    settings = {}
    for k, p in params.items():
        v = given.get(k, p.default)
        settings[k] = None if v is None and p.default is None else p.check(attack, k, v)
    return settings


_BOOL_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def logit_margin(z, y):
    """z[y] - max_{o != y} z[o] per row of the scores z (batch, classes): < 0 exactly when the
    decision is not y. y: one class for every row, or one per row. Works on torch tensors (with
    gradients: +1 to z_y, -1 to the strongest other class) and on numpy arrays alike. Every
    margin in the attacks (C&W's hinge, JSMA's saliency, DeepFool's overshoot check, the
    waveform objectives) is this function on logits or clip log-probabilities."""
    if isinstance(z, torch.Tensor):
        rows = torch.as_tensor(y, device=z.device).expand(len(z))[:, None]
        return z.gather(1, rows).squeeze(1) - z.scatter(1, rows, -torch.inf).amax(1)
    rows = np.broadcast_to(np.asarray(y), (len(z),))[:, None]
    others = z.copy()
    np.put_along_axis(others, rows, -np.inf, axis=1)
    return np.take_along_axis(z, rows, axis=1)[:, 0] - others.max(1)


@dataclass
class AttackResult:
    """x_adv: adversarial inputs, same shape as x. flipped: (batch,) bool. Perturbation figures
    per example: mean absolute difference over all cells (as the study reports it), L2, Linf,
    number of changed cells. queries: model evaluations (examples scored) spent, per example.
    stopped_early: the run's deadline passed or it was cancelled (ser_core.control) before the
    attack finished; x_adv is then the best found so far and stop_reason says why."""

    attack: str
    params: dict
    x: np.ndarray
    x_adv: np.ndarray
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    clean_probs: np.ndarray
    adv_probs: np.ndarray
    queries: np.ndarray
    seconds: float
    labels: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    stop_reason: str | None = None  # 'deadline' or 'cancelled' when stopped early

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    @property
    def flipped(self) -> np.ndarray:
        ref = self.clean_pred if self.labels is None else self.labels
        return self.adv_pred != ref

    @property
    def delta(self) -> np.ndarray:
        return (self.x_adv - self.x).reshape(len(self.x), -1)

    @property
    def mean_abs(self) -> np.ndarray:
        return np.abs(self.delta).mean(1)

    @property
    def l2(self) -> np.ndarray:
        return np.linalg.norm(self.delta, axis=1)

    @property
    def linf(self) -> np.ndarray:
        return np.abs(self.delta).max(1)

    @property
    def changed_cells(self) -> np.ndarray:
        return (self.delta != 0).sum(1)

    def summary(self) -> dict:
        f = self.flipped
        return {"attack": self.attack, "params": self.params, "examples": int(len(f)),
                "flipped": int(f.sum()), "success_rate": float(f.mean()) if len(f) else 0.0,
                "mean_perturbation": float(self.mean_abs.mean()) if len(f) else 0.0,
                "mean_l2": float(self.l2.mean()) if len(f) else 0.0,
                "mean_linf": float(self.linf.mean()) if len(f) else 0.0,
                "mean_changed_cells": float(self.changed_cells.mean()) if len(f) else 0.0,
                "queries": int(self.queries.sum()), "seconds": round(self.seconds, 4),
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason}


class QueryCounter:
    """Black-box access: probabilities from ONNX Runtime, every scored example counted per
    source example."""

    def __init__(self, bundle, batch_size: int = 256):
        self.bundle = bundle
        self.batch_size = batch_size
        self.count = None

    def __call__(self, x: np.ndarray, owners: np.ndarray | None = None) -> np.ndarray:
        """Probabilities of x (n, ...); owners[i] = index of the attacked example x[i] serves."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.count is not None:
            np.add.at(self.count, np.arange(len(x)) if owners is None else owners, 1)
        out = [self.bundle.predict_features(x[i:i + self.batch_size])
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.bundle.labels)), np.float32)


class Attack:
    """Base class of every attack. Subclasses set `name`, `domain` ("features" | "waveform"),
    `kind` ("white-box" | "black-box"), `goal` ("fixed-budget" | "minimisation"), `params`
    (name -> Param) and `paper_settings` (the study's settings, feature attacks only), and
    register with `@register`. Parameters whose declared default is None are optional."""

    name: ClassVar[str] = ""
    domain: ClassVar[str] = ""  # set by FeatureAttack and WaveformAttack
    kind: ClassVar[str] = "white-box"
    goal: ClassVar[str] = "fixed-budget"
    params: ClassVar[dict[str, Param]] = {}
    paper_settings: ClassVar[list[dict]] = []  # the study's settings (PAPER.md), for presets/grids

    def __init__(self, bundle, **kwargs):
        self.bundle = bundle
        self.settings = check_settings(self.name, self.params, kwargs)
        self._validate()

    def _validate(self):
        """Cross-parameter checks; raise ParameterError."""

    @classmethod
    def describe(cls) -> dict:
        """The catalogue entry the CLI (`python -m export attacks`) and the app show: name,
        domain, kind, goal, one-line doc, parameters (default, type, range, choices, meaning)
        and the study's settings."""
        return {"name": cls.name, "domain": cls.domain, "kind": cls.kind, "goal": cls.goal,
                "doc": (cls.__doc__ or "").strip().split("\n")[0],
                "params": {k: {"default": p.default, "type": p.type.__name__, "low": p.low, "high": p.high,
                               "choices": p.choices, "help": p.help} for k, p in cls.params.items()},
                "paper_settings": cls.paper_settings}

    def model(self) -> torch.nn.Module:
        if self.kind != "white-box":
            raise RuntimeError(f"{self.name} is black-box: it must not touch the torch model")
        return self.bundle.torch_model()


class FeatureAttack(Attack):
    """An attack on standardised log-Mel features (the study's domain). White-box attacks
    implement `_attack_batch`; black-box ones override `_run`."""

    domain = "features"
    # per-example counts a white-box `_attack_batch` returns beside x_adv (e.g. "steps"); they
    # reach AttackResult.extra, zero for examples a stopped run never reached
    batch_figures: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bundle, **kwargs):
        super().__init__(bundle, **kwargs)
        self.clip_min, self.clip_max = (float(v) for v in bundle.clip_range)

    def clip(self, x):
        if isinstance(x, torch.Tensor):
            return x.clamp(self.clip_min, self.clip_max)
        return np.clip(x, self.clip_min, self.clip_max)

    def __call__(self, x: np.ndarray, labels: np.ndarray | None = None, progress=None) -> AttackResult:
        """Attack a batch of standardised features. progress(fraction, message) is called now and
        then for long attacks."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != tuple(self.bundle.feature_config.input_shape):
            raise ParameterError(f"{self.name}: features of shape {x.shape} (accepted: "
                                 f"(batch, {', '.join(map(str, self.bundle.feature_config.input_shape))}))")
        counter = QueryCounter(self.bundle)
        clean_probs = counter(x)  # the clean decision is scored on the serving path, uncounted
        counter.count = np.zeros(len(x), np.int64)
        t0 = time.perf_counter()
        x_adv, extra = self._run(x, clean_probs.argmax(1) if labels is None else np.asarray(labels),
                                 counter, progress or (lambda f, m="": None))
        seconds = time.perf_counter() - t0
        x_adv = np.asarray(x_adv, dtype=np.float32)
        adv_probs = self.bundle.predict_features(x_adv)
        return AttackResult(self.name, dict(self.settings), x, x_adv, clean_probs.argmax(1),
                            adv_probs.argmax(1), clean_probs, adv_probs, counter.count, seconds,
                            None if labels is None else np.asarray(labels), extra or {},
                            stop_reason())

    def _run(self, x: np.ndarray, y: np.ndarray, query: QueryCounter, progress) -> tuple[np.ndarray, dict]:
        """Return (x_adv, extra). y: the labels to move away from. White-box attacks: every
        batch of BATCH examples through `_attack_batch`, in order; a run stopped early
        (ser_core.control) leaves the batches it never reached clean."""
        out = x.copy()
        extra = {k: np.zeros(len(x), np.int64) for k in self.batch_figures}
        for start in range(0, len(x), BATCH):
            if should_stop():
                break
            sl = slice(start, start + BATCH)
            n = len(out[sl])
            got = self._attack_batch(x[sl], y[sl], query.count[sl],
                                     lambda f, m="", start=start, n=n: progress((start + f * n) / len(x), m))
            if self.batch_figures:
                out[sl] = got[0]
                for k, v in zip(self.batch_figures, got[1:]):
                    extra[k][sl] = v
            else:
                out[sl] = got
        return out, extra

    def on_model(self, x: np.ndarray, y: np.ndarray):
        """What a white-box batch starts from: (the torch model, x and y as tensors on its device)."""
        model = self.model()
        device = next(model.parameters()).device
        return model, torch.from_numpy(x).to(device), torch.from_numpy(np.asarray(y, np.int64)).to(device)

    def _attack_batch(self, x: np.ndarray, y: np.ndarray, count: np.ndarray, progress):
        """One batch of at most BATCH examples: x_adv, followed by one array per name in
        `batch_figures` when it names any. count: this batch's view of the query counter,
        updated in place (a query per forward pass per example)."""
        raise NotImplementedError


class TanhSpace:
    """Carlini & Wagner's change of variables, as ART writes it, for feature attacks:
    x' = (tanh(w) + 1) / 2 * (clip_max - clip_min) + clip_min keeps x' in the clip range, and
    w starts at arctanh((2 u - 1) * TANH_SMOOTHER) for x scaled to u in [0, 1]."""

    def to_tanh(self, x: torch.Tensor) -> torch.Tensor:
        u = (self.clip(x) - self.clip_min) / (self.clip_max - self.clip_min)
        return torch.atanh((2 * u - 1) * TANH_SMOOTHER)

    def from_tanh(self, w: torch.Tensor) -> torch.Tensor:
        return (torch.tanh(w) + 1) / 2 * (self.clip_max - self.clip_min) + self.clip_min

    @property
    def tanh_chain(self) -> float:
        """dx'/dw = tanh_chain * (1 - tanh(w)^2), with ART's smoothing factor in it."""
        return (self.clip_max - self.clip_min) / (2 * TANH_SMOOTHER)


# domain -> attack name -> class; names are unique across domains
REGISTRY: dict[str, dict[str, type[Attack]]] = {d: {} for d in DOMAINS}


def register(cls: type[Attack]) -> type[Attack]:
    if cls.domain not in REGISTRY:
        raise ValueError(f"{cls.__name__}: domain {cls.domain!r} (accepted: {', '.join(DOMAINS)})")
    taken = [d for d in DOMAINS if d != cls.domain and cls.name in REGISTRY[d]]
    if taken:
        raise ValueError(f"{cls.__name__}: attack name {cls.name!r} is already a {taken[0]} attack")
    REGISTRY[cls.domain][cls.name] = cls
    return cls
