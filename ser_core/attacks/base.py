"""What every attack shares: parameter declaration and checking, clipping, the result object.

Attacks work on standardised log-Mel features x of shape (batch, 261, 128) and are untargeted:
an example "flips" when the model's decision on the adversarial input differs from its decision
on the clean input (or from the true label, when labels are given). Two families, as Foolbox
names them:
  - fixed-budget attacks (FGSM, BIM, Pixel): given a budget, return the best input inside it;
  - minimisation attacks (DeepFool, JSMA, C&W, Boundary): return the smallest perturbation found.
White-box attacks get gradients from `bundle.torch_model()`; black-box attacks only call
`bundle.predict_features` (ONNX Runtime) through `QueryCounter`, which counts every example
scored."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from ..control import stop_reason
from ..errors import ParameterError


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
    """Base class. Subclasses set `name`, `kind` ("white-box" | "black-box"), `goal`
    ("fixed-budget" | "minimisation"), `params` (name -> Param) and implement `_run`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "white-box"
    goal: ClassVar[str] = "fixed-budget"
    params: ClassVar[dict[str, Param]] = {}
    paper_settings: ClassVar[list[dict]] = []  # the study's settings (PAPER.md), for presets/grids

    def __init__(self, bundle, **kwargs):
        self.bundle = bundle
        self.settings = check_settings(self.name, self.params, kwargs)
        self.clip_min, self.clip_max = (float(v) for v in bundle.clip_range)
        self._validate()

    def _validate(self):
        """Cross-parameter checks; raise ParameterError."""

    # -- plumbing for subclasses --
    def model(self) -> torch.nn.Module:
        if self.kind != "white-box":
            raise RuntimeError(f"{self.name} is black-box: it must not touch the torch model")
        return self.bundle.torch_model()

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
        """Return (x_adv, extra). y: the labels to move away from. White-box attacks count a
        query per forward pass per example too (add to query.count)."""
        raise NotImplementedError


REGISTRY: dict[str, type[Attack]] = {}


def register(cls: type[Attack]) -> type[Attack]:
    REGISTRY[cls.name] = cls
    return cls
