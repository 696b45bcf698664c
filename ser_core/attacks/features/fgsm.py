"""FGSM: one signed-gradient step of size eps.

Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015
(arXiv 1412.6572). The study ran ART's `FastGradientMethod` (norm inf, eps 0.25 ... 1.25); this
follows ART 1.x `art/attacks/evasion/fast_gradient.py`:

    x_adv = clip(x + eps * sign(grad_x CE(f(x), y)))       untargeted: y the label to leave
    x_adv = clip(x - eps * sign(grad_x CE(f(x), t)))       targeted: t the label to reach

with the cross-entropy of the logits, a zero gradient
giving a zero step (np.sign(0) = 0), and the result clipped to the bundle's clip range. The
whole batch takes one forward and one backward pass: one query per example.

Distance bounded: Linf <= eps. Fixed-budget.
Arguments: eps (step size in standardised units, default 0.25). Targeted: yes.
Shapes: x (batch, 261, 128) standardised features -> x_adv of the same shape.
Example: `get_attack("fgsm", bundle, eps=0.5)(x, labels).summary()`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ser_core.attacks.base import FixedBudgetAttack, register
from ser_core.attacks.features.base import FeatureAttack
from ser_core.attacks.params import Param


@register
class LinfFastGradientAttack(FixedBudgetAttack, FeatureAttack):
    """Fast Gradient Sign Method (Goodfellow et al. 2015): x + eps * sign(gradient of the loss)."""

    name = "fgsm"
    kind = "white-box"
    targeted = True
    budget_params = ("eps",)
    params = {
        "eps": Param(0.25, float, 0.0, 20.0, help="Linf budget = step size, in standardised units"),
    }
    paper_settings = [{"eps": e} for e in (0.25, 0.5, 0.75, 1.0, 1.25)]

    def _attack_batch(self, x, objective, query, progress):
        y, count = objective.classes, query.count
        model, xb, yb = self.on_model(x, y)
        xb.requires_grad_(True)
        loss = F.cross_entropy(model(xb), yb, reduction="sum")
        count += 1
        (grad,) = torch.autograd.grad(loss, xb)
        with torch.no_grad():
            out = self.clip(xb + objective.sign * (self.settings["eps"] * grad.sign())).cpu().numpy()
        progress(1.0, "FGSM")
        return out
