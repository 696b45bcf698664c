"""BIM: FGSM repeated with a small step, projected back into the eps ball after every step.

Kurakin, Goodfellow, Bengio, "Adversarial Examples in the Physical World", ICLR workshop 2017
(arXiv 1607.02533). The study ran ART's `BasicIterativeMethod` (eps 0.25 ... 1.25, eps_step
0.1, 100 iterations), which is ART's projected gradient descent without random start; this
follows ART 1.x `art/attacks/evasion/projected_gradient_descent/`:

    x_0 = x;  x_{t+1} = x + clamp(clip(x_t + eps_step * sign(grad CE(f(x_t), y))) - x, -eps, eps)

(the step is clipped to the clip range first, then projected on the Linf ball around x; the
projection of a point inside the box stays inside it). One query per example per iteration.

One departure, on by default (`early_stop`): an example leaves the batch at the first
iterate whose decision differs from y, and that iterate is returned. The forward pass that
computes the next gradient also decides this, so it costs nothing, and the result is an
adversarial example inside the same eps ball (with a smaller perturbation than iterating on).
ART iterates every example `max_iter` times and returns the last iterate, which can
occasionally step back over the boundary; `early_stop=False` reproduces that exactly.

Distance bounded: Linf <= eps. Fixed-budget.
Targeted (an Objective with targets): the same steps descending the cross-entropy of the target
(x_t - eps_step * sign(grad CE(f(x_t), t))), stopping early at the first iterate decided as t.

Arguments: eps (default 0.25), eps_step (0.1), max_iter (100), early_stop (True). Targeted: yes.
Shapes: x (batch, 261, 128) standardised features -> x_adv of the same shape.
Example: `get_attack("bim", bundle, eps=0.5)(x, labels).summary()`."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ser_core.control import should_stop
from ser_core.attacks.base import FixedBudgetAttack, register
from ser_core.attacks.features.base import FeatureAttack
from ser_core.attacks.params import Param


@register
class LinfBasicIterativeAttack(FixedBudgetAttack, FeatureAttack):
    """Basic Iterative Method (Kurakin et al. 2017): iterated FGSM projected on the Linf ball."""

    name = "bim"
    kind = "white-box"
    targeted = True
    budget_params = ("eps",)
    params = {
        "eps": Param(0.25, float, 0.0, 20.0, help="Linf budget around the clean input, standardised units"),
        "eps_step": Param(0.1, float, 1e-6, 20.0, help="size of each signed-gradient step"),
        "max_iter": Param(100, int, 1, 10000, help="number of steps"),
        "early_stop": Param(True, bool, help="stop each example at its first flipped iterate "
                                             "(False: ART's fixed number of steps)"),
    }
    # ART (the study) iterates all 100 steps: early_stop off reproduces its perturbation sizes
    paper_settings = [{"eps": e, "eps_step": 0.1, "max_iter": 100, "early_stop": False}
                      for e in (0.25, 0.5, 0.75, 1.0, 1.25)]

    def _attack_batch(self, x, objective, query, progress):
        y, count = objective.classes, query.count
        model, x0, y = self.on_model(x, y)
        device = x0.device
        eps, step, iters = self.settings["eps"], self.settings["eps_step"], self.settings["max_iter"]
        x_adv = x0.clone()
        live = torch.arange(len(x0), device=device)  # examples still iterating
        for t in range(iters):
            if should_stop():
                break  # the iterate so far is inside the budget
            whole = len(live) == len(x0)  # every example still iterating: no gathers, no scatters
            xa = (x_adv if whole else x_adv[live]).detach().requires_grad_(True)
            logits = model(xa)
            if whole:
                count += 1
            else:
                count[live.cpu().numpy()] += 1
            keep = (self._not_reached(logits.argmax(1), y[live], objective.targeted)
                    if self.settings["early_stop"] else None)
            if keep is not None and not keep.all():
                if not keep.any():
                    break
                logits, live = logits[keep], live[keep]
            (grad,) = torch.autograd.grad(F.cross_entropy(logits, y if len(live) == len(x0) else y[live],
                                                          reduction="sum"), xa)
            xa = xa.detach()
            if keep is not None and len(live) < len(xa):
                xa, grad = xa[keep], grad[keep]
            with torch.no_grad():
                stepped = self.clip(xa + objective.sign * (step * grad.sign()))
                if len(live) == len(x0):
                    x_adv = x0 + (stepped - x0).clamp(-eps, eps)
                else:
                    x_adv[live] = x0[live] + (stepped - x0[live]).clamp(-eps, eps)
            progress((t + 1) / iters, f"BIM step {t + 1}/{iters}, {len(live)} left")
        return x_adv.cpu().numpy()

    @staticmethod
    def _not_reached(pred, y, targeted: bool):
        return pred != y if targeted else pred == y
