"""JSMA: change the two most salient cells by theta, repeat until the decision flips.

Papernot, McDaniel, Jha, Fredrikson, Celik, Swami, "The Limitations of Deep Learning in
Adversarial Settings", IEEE EuroS&P 2016 (arXiv 1511.07528). The study ran ART's
`SaliencyMapMethod` (theta -1, -0.5, 0.5, 1; gamma 1); this follows ART 1.x
`art/attacks/evasion/saliency_map.py`:

  - each step computes one gradient and moves the two cells with the largest saliency (ART's
    pair: the top 2 by argpartition) by theta, clipped to the clip range;
  - the search domain is every cell that can still move in theta's direction (below clip_max
    for theta > 0, above clip_min for theta < 0); a cell leaves it on reaching that bound,
    and may be picked again until then;
  - an example stops when its decision flips, when the cells changed so far exceed gamma of
    all cells, or when its search domain is empty.

The saliency. ART's JSMA is targeted (without labels it draws a random target class) and
ranks cells by the target logit's gradient alone. Untargeted, as the study uses it, this
attack ranks cells by sign(theta) * d(z_o - z_y)/dx, the gradient of the margin between
the strongest other class o (re-chosen at every step among all k classes, whatever k is) and
the class y to move away from, so each pair moves the decision toward the nearest boundary.
An example stops at the first flip instead of at a random target class, which takes fewer
cells and fewer steps. Each step is one forward and one backward pass over the examples
still running (the forward also decides the previous step's flip; ART spends a second
forward on it); queries count one per example per forward pass. `max_iter` caps the pair
updates (ART has no cap; an example that has not flipped by then is returned as is).

Targeted (an Objective with targets; Papernot et al.'s own setting): cells are ranked by
sign(theta) * d(z_t - z_o)/dx for the target t and its strongest rival o (re-chosen every
step), so each pair raises the target's logit over the others'; an example stops once it is
decided as t. Papernot et al. weigh the target's gradient against the sum of the other classes'
gradients, ART against nothing; the strongest rival is the untargeted mode's choice too.

Distance minimised: L0 (number of changed cells). Minimisation.
Arguments: theta (default 1.0), gamma (1.0), max_iter (2000). Targeted: yes.
Shapes: x (batch, 261, 128) standardised features -> x_adv of the same shape.
Example: `get_attack("jsma", bundle, theta=-0.5)(x, labels).summary()`."""
from __future__ import annotations

import torch

from ser_core.control import should_stop
from ser_core.attacks.base import MinimisationAttack, register
from ser_core.attacks.features.base import FeatureAttack
from ser_core.attacks.objective import logit_margin
from ser_core.attacks.params import Param
from ser_core.errors import ParameterError


@register
class SaliencyMapAttack(MinimisationAttack, FeatureAttack):
    """Jacobian-based Saliency Map Attack (Papernot et al. 2016), two cells a step."""

    name = "jsma"
    kind = "white-box"
    targeted = True
    params = {
        "theta": Param(1.0, float, -20.0, 20.0,
                       help="change applied to each selected cell per step (negative: decrease); not 0"),
        "gamma": Param(1.0, float, 0.0, 1.0, help="largest fraction of cells that may change, in (0, 1]"),
        "max_iter": Param(2000, int, 1, 1_000_000, help="most pair updates per example"),
    }
    paper_settings = [{"theta": t, "gamma": 1.0} for t in (-1.0, -0.5, 0.5, 1.0)]
    batch_figures = ("steps",)  # pair updates per example

    def _validate(self):
        if self.settings["theta"] == 0:
            raise ParameterError(f"{self.name}: theta=0 changes nothing (accepted: a nonzero value in [-20, 20])")
        if self.settings["gamma"] <= 0:
            raise ParameterError(f"{self.name}: gamma={self.settings['gamma']!r} lets no cell change "
                                 f"(accepted: a fraction in (0, 1])")

    def _attack_batch(self, x, objective, query, progress):
        y, count = objective.classes, query.count
        model, x0, y = self.on_model(x, y)
        device = x0.device
        theta, iters = self.settings["theta"], self.settings["max_iter"]
        n, cells = len(x), x[0].size
        max_changed = self.settings["gamma"] * cells
        bound = self.clip_max if theta > 0 else self.clip_min
        x_adv = x0.reshape(n, cells).clone()
        movable = (x_adv < bound) if theta > 0 else (x_adv > bound)  # the search domain
        changed = torch.zeros(n, cells, dtype=torch.bool, device=device)
        steps = torch.zeros(n, dtype=torch.int64, device=device)
        live = torch.arange(n, device=device)
        sign = objective.sign  # +1: away from y; -1: onto the target y
        for t in range(iters + 1):
            xa = x_adv[live].reshape(len(live), *x.shape[1:]).requires_grad_(True)
            logits = model(xa)
            count[live.cpu().numpy()] += 1
            pending = (logits.argmax(1) != y[live]) if objective.targeted else (logits.argmax(1) == y[live])
            keep = (pending & (changed[live].sum(1) <= max_changed)
                    & movable[live].any(1))
            if t == iters or not keep.any() or should_stop():
                break
            live, logits = live[keep], logits[keep]
            # untargeted: raise z_o - z_y; targeted: raise z_t - z_o (sign flips the margin)
            (grad,) = torch.autograd.grad((-sign * logit_margin(logits, y[live])).sum(), xa)
            with torch.no_grad():
                saliency = grad[keep].reshape(len(live), cells) * (1.0 if theta > 0 else -1.0)
                saliency[~movable[live]] = -torch.inf
                pair = saliency.topk(2, 1).indices  # (n, 2); with one movable cell left the
                # second pick sits at the bound and does not move
                rows = live[:, None].expand_as(pair)
                old = x_adv[rows, pair]
                new = (old + theta).clamp(max=bound) if theta > 0 else (old + theta).clamp(min=bound)
                x_adv[rows, pair] = new
                changed[rows, pair] |= new != old
                movable[rows, pair] = x_adv[rows, pair] != bound
                steps[live] += 1
            if t % 20 == 0:
                progress(t / iters, f"JSMA step {t}, {len(live)} left")
        return x_adv.reshape(x.shape).cpu().numpy(), steps.cpu().numpy()
