"""One result shape for every attack, feature or waveform, white- or black-box."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ser_core.attacks.objective import Objective


@dataclass
class AttackResult:
    """x, x_adv: the attacked inputs and their adversarial versions (features: arrays (batch, 261,
    128); waveform: one array of samples per clip, full scale 1, x_adv as the written 16-bit WAV
    decodes). clean_pred / adv_pred, clean_probs / adv_probs: the serving path's decisions and
    probabilities before and after (waveform: on the written WAV, so a flip is verified).
    objective: what the attack was after, with its labels filled in (the clean decisions unless
    labels were given). flipped: the decision left the label; success: the objective was reached
    (untargeted: flipped; targeted: the decision is the target). Perturbation figures per example:
    mean absolute difference over all cells or samples (as the study reports it), L2, Linf,
    number of changed cells. queries: model evaluations (examples scored) spent, per example.
    extra: the attack's own per-example figures (arrays or lists, one entry per example).
    stop_reason: 'deadline' or 'cancelled' when the run (ser_core.control) stopped the attack before
    it finished; x_adv is then the best found so far."""

    attack: str
    params: dict
    x: np.ndarray | list
    x_adv: np.ndarray | list
    clean_pred: np.ndarray
    adv_pred: np.ndarray
    clean_probs: np.ndarray
    adv_probs: np.ndarray
    queries: np.ndarray
    seconds: float
    objective: Objective = field(default_factory=Objective)
    extra: dict = field(default_factory=dict)
    stop_reason: str | None = None
    domain: str = "features"
    # clip inputs (waveform): the serving path's ClipPrediction before and after, per clip
    predictions: list | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.objective.labels

    @property
    def targeted(self) -> bool:
        return self.objective.targeted

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    @property
    def flipped(self) -> np.ndarray:
        return self.adv_pred != self.objective.labels

    @property
    def success(self) -> np.ndarray:
        return self.objective.reached(self.adv_pred)

    def _deltas(self) -> list[np.ndarray]:
        return [np.asarray(a, np.float64).ravel() - np.asarray(b, np.float64).ravel()
                for a, b in zip(self.x_adv, self.x)]

    @property
    def delta(self) -> np.ndarray:
        """(batch, cells) perturbation of same-shape inputs (features)."""
        return (np.asarray(self.x_adv) - np.asarray(self.x)).reshape(len(self.x), -1)

    def _figure(self, fn) -> np.ndarray:
        if isinstance(self.x, np.ndarray) and isinstance(self.x_adv, np.ndarray):
            return fn(self.delta, 1)
        return np.array([fn(d[None], 1)[0] for d in self._deltas()], dtype=np.float64)

    @property
    def mean_abs(self) -> np.ndarray:
        return self._figure(lambda d, a: np.abs(d).mean(a))

    @property
    def l2(self) -> np.ndarray:
        return self._figure(lambda d, a: np.linalg.norm(d, axis=a))

    @property
    def linf(self) -> np.ndarray:
        return self._figure(lambda d, a: np.abs(d).max(a))

    @property
    def changed_cells(self) -> np.ndarray:
        return self._figure(lambda d, a: (d != 0).sum(a)).astype(np.int64)

    def summary(self) -> dict:
        f, n = self.flipped, len(self.flipped)
        return {"attack": self.attack, "params": self.params, "examples": int(n),
                "flipped": int(f.sum()), "success_rate": float(self.success.mean()) if n else 0.0,
                "mean_perturbation": float(self.mean_abs.mean()) if n else 0.0,
                "mean_l2": float(self.l2.mean()) if n else 0.0,
                "mean_linf": float(self.linf.mean()) if n else 0.0,
                "mean_changed_cells": float(self.changed_cells.mean()) if n else 0.0,
                "queries": int(self.queries.sum()), "seconds": round(self.seconds, 4),
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
                "targeted": self.targeted}
