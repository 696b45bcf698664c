"""What feature attacks share: the batching loop, clipping, counted black-box access and C&W's
change of variables. A feature attack perturbs standardised log-Mel features x of shape
(batch, 261, 128), the study's domain; a flip is the decision on the adversarial features.

One override point, `_attack_batch(x, objective, query, progress)`: white-box attacks get
batches of at most `batch_size` (BATCH) examples and gradients from `bundle.gradient_model()`;
black-box attacks set `batch_size = None`, get the whole input in one call and only score
candidates through `query` (ONNX Runtime, `bundle.predict_features`), which counts every example
scored. Either way `query.count` is the per-example query count of the examples in hand."""
from __future__ import annotations

import hashlib
import threading
import time
import weakref
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from ser_core.attacks.base import Attack
from ser_core.attacks.objective import Objective
from ser_core.attacks.result import AttackResult
from ser_core.control import should_stop, stop_reason
from ser_core.errors import ParameterError

BATCH = 64  # feature examples per forward/backward pass: bounds activation memory on long inputs
TANH_SMOOTHER = 0.999999  # ART's factor keeping arctanh finite at the clip bounds (TanhSpace)


class QueryCounter:
    """Black-box access: probabilities from ONNX Runtime, every scored example counted per
    source example. `view(sl)` is the same access for the examples sl of a batch."""

    def __init__(self, bundle, batch_size: int = 256):
        self.bundle = bundle
        self.batch_size = batch_size
        self.count = None
        self.offset = 0

    def __call__(self, x: np.ndarray, owners: np.ndarray | None = None, scorer=None) -> np.ndarray:
        """Probabilities of x (n, ...); owners[i] = index of the attacked example x[i] serves.
        scorer(x[sl], sl): the same probabilities computed another way (blockwise.BlockScorer),
        in the same batches; each example is counted either way."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if self.count is not None:
            np.add.at(self.count, np.arange(len(x)) if owners is None else owners, 1)
        out = [self.bundle.predict_features(x[i:i + self.batch_size]) if scorer is None else
               scorer(x[i:i + self.batch_size], slice(i, i + self.batch_size))
               for i in range(0, len(x), self.batch_size)]
        return np.concatenate(out) if out else np.zeros((0, len(self.bundle.labels)), np.float32)

    def view(self, sl: slice) -> "QueryCounter":
        v = QueryCounter(self.bundle, self.batch_size)
        v.count = self.count[sl]  # a numpy view: counts land in the whole run's array
        return v


_CLEAN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # bundle -> {key: probabilities}
_CLEAN_KEPT = 8  # inputs remembered per bundle
_CLEAN_LOCK = threading.Lock()


def clean_scores(bundle, x: np.ndarray, query: "QueryCounter") -> np.ndarray:
    """The serving path's probabilities of the clean inputs x, scored once for the same inputs
    and session however many attack calls follow (the grid attacks one set of examples at five
    budgets; the app one clip with any attack): remembered by content (blake2b of the bytes),
    shape and ONNX Runtime's threads and providers, the last _CLEAN_KEPT inputs per bundle."""
    key = (hashlib.blake2b(x.data, digest_size=16).digest(), x.shape, bundle.onnx_threads,
           tuple(bundle.onnx_session().get_providers()))
    with _CLEAN_LOCK:
        hit = _CLEAN.setdefault(bundle, {}).get(key)
    if hit is None:
        hit = query(x)
        with _CLEAN_LOCK:
            seen = _CLEAN[bundle]
            seen[key] = hit
            while len(seen) > _CLEAN_KEPT:
                del seen[next(iter(seen))]
    return hit.copy()


class FeatureAttack(Attack):
    """An attack on standardised log-Mel features (the study's domain)."""

    domain = "features"
    batch_size: ClassVar[int | None] = BATCH  # None: the whole input in one call (black-box attacks)
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

    def _attack(self, x, objective: Objective, progress) -> AttackResult:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 3 or x.shape[1:] != tuple(self.bundle.feature_config.input_shape):
            raise ParameterError(f"{self.name}: features of shape {x.shape} (accepted: "
                                 f"(batch, {', '.join(map(str, self.bundle.feature_config.input_shape))}))")
        counter = QueryCounter(self.bundle)
        clean_probs = clean_scores(self.bundle, x, counter)  # the serving path's, uncounted
        counter.count = np.zeros(len(x), np.int64)
        objective = objective.with_clean(clean_probs.argmax(1))
        t0 = time.perf_counter()
        x_adv, extra = self._batches(x, objective, counter, progress)
        seconds = time.perf_counter() - t0
        adv_probs = self.bundle.predict_features(x_adv)
        return AttackResult(self.name, dict(self.settings), x, x_adv, clean_probs.argmax(1), adv_probs.argmax(1),
                            clean_probs, adv_probs, counter.count, seconds, objective, extra, stop_reason(),
                            self.domain)

    def _batches(self, x, objective, counter, progress) -> tuple[np.ndarray, dict]:
        """Every batch through `_attack_batch`, in order; a run stopped early (ser_core.control)
        leaves the batches it never reached clean."""
        out = x.copy()
        extra = {k: np.zeros(len(x), np.int64) for k in self.batch_figures}
        size = self.batch_size or max(len(x), 1)
        for start in range(0, len(x), size):
            if should_stop() and self.batch_size:
                break
            sl = slice(start, start + size)
            n = len(out[sl])
            got = self._attack_batch(x[sl], objective[sl], counter.view(sl),
                                     lambda f, m="", start=start, n=n: progress((start + f * n) / len(x), m))
            if not isinstance(got, tuple):
                out[sl] = got
            elif isinstance(got[1], dict):  # a one-call attack's own figures
                out[sl] = got[0]
                extra.update(got[1])
            else:
                out[sl] = got[0]
                for k, v in zip(self.batch_figures, got[1:]):
                    extra[k][sl] = v
        return np.asarray(out, dtype=np.float32), extra

    # --- one audio clip (ser_core.attacks.clip): its chunks, attacked as one batch -----------
    def clip_inputs(self, y: np.ndarray) -> np.ndarray:
        return self.bundle.features(y)

    def clip_predictions(self, result: AttackResult):
        """The clip decision before and after: the mean of its chunks' probabilities."""
        return (self.bundle.prediction_from_probabilities(result.clean_probs),
                self.bundle.prediction_from_probabilities(result.adv_probs))

    def write_clip(self, result: AttackResult, out_dir: Path | None, stem: str) -> list[Path]:
        """Nothing: the adversarial features are in the result (see `save_clip`)."""
        return []

    def save_clip(self, result: AttackResult, files: list[Path], out_dir: Path) -> list[Path]:
        """clean.npy and adversarial.npy (standardised features) in out_dir."""
        out_dir.mkdir(parents=True, exist_ok=True)
        np.save(out_dir / "clean.npy", result.x)
        np.save(out_dir / "adversarial.npy", result.x_adv)
        return [out_dir / "clean.npy", out_dir / "adversarial.npy"]

    def clip_figures(self, result: AttackResult, before, after, wav_path) -> dict:
        return {"head": {"flipped": before.label != after.label, "chunks": int(len(result.x)),
                         "chunks_flipped": int(result.flipped.sum()),
                         "mean_perturbation": float(result.mean_abs.mean()), "l2": float(result.l2.mean()),
                         "linf": float(result.linf.max()), "changed_cells": int(result.changed_cells.sum())}}

    def torch_decisions(self, result: AttackResult) -> np.ndarray | None:
        """White-box attacks are crafted on the torch model and scored on ONNX Runtime."""
        if self.kind != "white-box":
            return None
        from ser_core.models.bundle import torch_probabilities
        return torch_probabilities(self.bundle, result.x_adv).argmax(1)

    def on_model(self, x: np.ndarray, y: np.ndarray):
        """What a white-box batch starts from: (the torch model, x and y as tensors on its device)."""
        model = self.model()
        device = model.device
        return model, torch.from_numpy(x).to(device), torch.from_numpy(np.asarray(y, np.int64)).to(device)

    def _attack_batch(self, x: np.ndarray, objective: Objective, query: QueryCounter, progress):
        """One batch: x_adv, or (x_adv, figures...) with one array per name in `batch_figures`,
        or (x_adv, dict of the attack's own figures). objective: this batch's (its `classes`
        are what the loss is computed against, `sign` the direction). query.count: this batch's
        per-example query counts, updated in place (a query per forward pass per example)."""
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
