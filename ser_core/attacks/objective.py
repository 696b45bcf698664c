"""What an attack is after, for every attack in both domains: move each example's decision away
from a label (untargeted), or onto a chosen label (targeted).

    Objective()                         untargeted, away from the model's clean decisions
    Objective(labels=y)                 untargeted, away from the true labels y
    Objective(targets=t)                targeted: example i should be decided as t[i]

Every margin is `logit_margin` on scores (logits, or clip log-probabilities), signed so that it
is < 0 exactly when the objective is reached; torchattacks and ART flip the loss's sign the same
way for their targeted mode."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ser_core.errors import ParameterError


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


def _classes(v) -> np.ndarray | None:
    if v is None:
        return None
    a = np.atleast_1d(np.asarray(v))
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ParameterError(f"class labels must be integers, one per example (got {a.dtype} of shape {a.shape})")
    return a.astype(np.int64)


@dataclass(frozen=True, eq=False)
class Objective:
    """labels: (n,) the classes to move away from (None until the attack fills in the model's
    clean decisions); targets: (n,) the classes to land on, or None for an untargeted attack.
    A targeted objective keeps `labels` too (the clean decision, for reports)."""

    labels: np.ndarray | None = None
    targets: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "labels", _classes(self.labels))
        object.__setattr__(self, "targets", _classes(self.targets))

    @property
    def targeted(self) -> bool:
        return self.targets is not None

    @property
    def classes(self) -> np.ndarray:
        """What the attack's loss is computed against: the targets, or the labels to leave."""
        return self.targets if self.targeted else self.labels

    @property
    def sign(self) -> float:
        """+1: ascend the loss against `classes` (untargeted); -1: descend it (targeted)."""
        return -1.0 if self.targeted else 1.0

    def check(self, n: int, n_classes: int) -> None:
        for name, v in (("labels", self.labels), ("targets", self.targets)):
            if v is None:
                continue
            if len(v) != n:
                raise ParameterError(f"objective: {len(v)} {name} for {n} examples (accepted: one per example)")
            if len(v) and (v.min() < 0 or v.max() >= n_classes):
                raise ParameterError(f"objective: {name} outside the model's {n_classes} classes "
                                     f"(accepted: 0..{n_classes - 1})")

    def with_clean(self, clean_pred: np.ndarray) -> "Objective":
        """Labels filled in with the model's clean decisions where none were given."""
        return self if self.labels is not None else Objective(clean_pred, self.targets)

    def __len__(self) -> int:
        return len(self.classes) if self.classes is not None else 0

    def __getitem__(self, i) -> "Objective":
        """The objective of some examples (an index keeps a batch of one)."""
        i = slice(i, i + 1) if isinstance(i, (int, np.integer)) else i
        pick = (lambda v: None if v is None else v[i])
        return Objective(pick(self.labels), pick(self.targets))

    # --- one example (waveform attacks work clip by clip) ---------------------------------
    @property
    def label(self) -> int:
        return int(self.labels[0])

    @property
    def target(self) -> int | None:
        return None if self.targets is None else int(self.targets[0])

    # --- margins: < 0 exactly when reached ------------------------------------------------
    def margin(self, z):
        """(batch, classes) scores (torch or numpy; logits or log-probabilities) -> (batch,)
        margin. A one-example objective applies to every row (candidates of one clip)."""
        if self.targeted:
            return -logit_margin(z, self.targets if len(self.targets) > 1 else self.targets[0])
        return logit_margin(z, self.labels if len(self.labels) > 1 else self.labels[0])

    def serving_margin(self, probs: np.ndarray) -> np.ndarray:
        """(batch, classes) probabilities from the serving path -> (batch,) margin."""
        return self.margin(np.log(np.clip(probs, 1e-30, None)))

    def reached(self, pred):
        """Whether decisions `pred` (an int, or one per example) reach the objective."""
        ref = self.targets if self.targeted else self.labels
        if np.ndim(pred) == 0:
            return bool(pred == ref[0]) if self.targeted else bool(pred != ref[0])
        pred = np.asarray(pred)
        return pred == ref if self.targeted else pred != ref


def as_objective(objective, n: int) -> Objective:
    """None (untargeted, away from the clean decisions), an array of labels (untargeted, away from
    them) or an Objective."""
    if objective is None:
        return Objective()
    if isinstance(objective, Objective):
        return objective
    return Objective(labels=objective)
