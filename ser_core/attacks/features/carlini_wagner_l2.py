"""Carlini-Wagner L2: minimise ||x' - x||^2 + c * max(z_y - max_{o != y} z_o + confidence, 0).

Carlini, Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017
(arXiv 1608.04644). The study ran ART's `CarliniL2Method` (initial_const 0.01, learning_rate
0.01, max_iter 10, binary_search_steps 20, confidence 0); this follows ART 1.12
`art/attacks/evasion/carlini.py` (unchanged in ART 1.20):

  - change of variables x' = (tanh(w) + 1) / 2 * (clip_max - clip_min) + clip_min, so x' stays
    in the clip range; w starts at arctanh((2 u - 1) * 0.999999) for x scaled to u in [0, 1];
  - each iteration takes the gradient of c (z_y - z_o) + ||x' - x||^2 (ART's gradient keeps
    the class term even once the hinge is zero) and runs ART's line search along it: halve the
    learning rate (at most max_halving times) until the objective decreases, then, if the
    first try already did, double it (at most max_doubling times) while it keeps decreasing,
    and take the best step found; the learning rate carries over to the next iteration;
  - an iterate is adversarial when the hinge is zero; the adversarial iterate with the
    smallest L2 over every run is returned; an example never made adversarial is returned
    unchanged;
  - a binary search on c per example runs max_iter iterations from x for each c. ART 1.12's
    update: success -> c = (lower + c) / 2 and stop doubling; failure -> c = 2c while still
    doubling, else c = c + (c - lower) / 2; then, for failures, lower = the new c (ART binds
    `c_old` to the same array as `c_current`, so the lower bound is the updated value).

Speed without changing the result: each run is deterministic given c (it restarts from x with
the initial learning rate), and with the update above c stops changing once an example has
failed and then succeeded, so every later binary-search step would repeat the same run. An
example leaves the batch when its c stops changing (ART runs them all). The objective's
forward pass at an iterate also gives the next gradient, so an iteration costs one backward
pass plus the line-search forward passes, batched over all examples still searching; queries
count one per example per forward pass.

One departure (ART bug, not reproduced): when no line-search step improves an example, ART
keeps the loss of the last rejected trial for it and may take that trial's success for the
unchanged iterate's; here success and L2 are always those of the iterate itself.

Checked against ART 1.20.1's CarliniL2Method (same code as 1.12.2) on the first 4 test examples
of the `emodb-paper` bundle at the study's setting, one run: both flip 4 of 4, mean absolute
perturbation 0.00942 for both, L2 per example ART 3.48 / 6.43 / 3.10 / 3.27, here 3.41 / 6.56 /
3.26 / 3.32; each example first succeeds after 9-11 doublings of c (c about 5-20).

Distance minimised: L2. Minimisation.
Targeted (an Objective with targets): the class term is Carlini & Wagner's targeted hinge
max(max_{j != t} z_j - z_t + confidence, 0) (ART's `targeted=True`), success = decided as t.

Arguments: confidence (0), learning_rate (0.01), binary_search_steps (20), max_iter (10),
initial_const (0.01), max_halving (5), max_doubling (5). Targeted: yes.
Shapes: x (batch, 261, 128) standardised features -> x_adv of the same shape.
Example: `get_attack("cw_l2", bundle, binary_search_steps=5)(x, labels).summary()`."""
from __future__ import annotations

import numpy as np
import torch

from ser_core.control import should_stop
from ser_core.attacks.base import MinimisationAttack, register
from ser_core.attacks.features.base import FeatureAttack, TanhSpace
from ser_core.attacks.objective import logit_margin
from ser_core.attacks.params import Param

C_UPPER = 10e10  # ART's bound on c, beyond which an example stops searching


@register
class L2CarliniWagnerAttack(TanhSpace, MinimisationAttack, FeatureAttack):
    """Carlini-Wagner L2 attack (Carlini & Wagner 2017), ART's line-search variant."""

    name = "cw_l2"
    kind = "white-box"
    targeted = True
    params = {
        "confidence": Param(0.0, float, 0.0, 1000.0, help="logit margin the adversarial class must win by"),
        "learning_rate": Param(0.01, float, 1e-9, 100.0, help="initial step of the line search (tanh space)"),
        "binary_search_steps": Param(20, int, 1, 1000, help="runs with different c per example"),
        "max_iter": Param(10, int, 0, 100_000, help="gradient iterations per run"),
        "initial_const": Param(0.01, float, 1e-12, 1e10, help="first c (weight of the class term)"),
        "max_halving": Param(5, int, 1, 100, help="line search: most halvings of the learning rate"),
        "max_doubling": Param(5, int, 1, 100, help="line search: most doublings of the learning rate"),
    }
    paper_settings = [{"initial_const": 0.01, "learning_rate": 0.01, "max_iter": 10,
                       "binary_search_steps": 20, "confidence": 0.0}]
    batch_figures = ("runs",)  # binary-search steps actually run per example

    # --- ART's objective in tanh space (TanhSpace) -------------------------------------------
    def _objective(self, logits, x_adv, x, y, c, sign=1.0):
        """(loss, squared L2, adversarial?) per example; the class term is ART's hinge, with
        sign = objective.sign (-1: the targeted hinge, y the targets)."""
        hinge = (sign * logit_margin(logits, y) + self.settings["confidence"]).clamp(min=0)
        l2 = (x_adv - x).flatten(1).pow(2).sum(1)
        return c * hinge + l2, l2, hinge <= 0

    # --- the attack -------------------------------------------------------------------------
    def _attack_batch(self, x, objective, query, progress):
        y, count = objective.classes, query.count
        model, x0, y = self.on_model(x, y)
        device = x0.device
        s = self.settings
        n = len(x0)
        w0 = self.to_tanh(x0)
        c = torch.full((n,), s["initial_const"], dtype=torch.float64, device=device)
        lower = torch.zeros_like(c)
        doubling = torch.ones(n, dtype=torch.bool, device=device)
        searching = torch.ones(n, dtype=torch.bool, device=device)
        best_l2 = torch.full((n,), torch.inf, device=device)
        best_x = x0.clone()
        runs = np.zeros(n, np.int64)
        chain = self.tanh_chain
        sign = objective.sign  # +1: away from y; -1: onto the target y

        def score(rows, w_rows, xs, ys, cs):
            x_try = self.from_tanh(w_rows)
            with torch.no_grad():
                logits = model(x_try)
            count[rows.cpu().numpy()] += 1
            return self._objective(logits, x_try, xs, ys, cs, sign)[0]

        for step in range(s["binary_search_steps"]):
            idx = (searching & (c < C_UPPER)).nonzero().squeeze(1)
            if len(idx) == 0 or should_stop():
                break
            runs[idx.cpu().numpy()] += 1
            xs, ys, cs = x0[idx], y[idx], c[idx].float()
            w = w0[idx].clone()
            x_adv = xs.clone()  # ART scores the first iterate at x itself, not through tanh
            lr = torch.full((len(idx),), s["learning_rate"], device=device)
            success_any = torch.zeros(len(idx), dtype=torch.bool, device=device)
            for it in range(s["max_iter"] + 1):
                xg = x_adv.requires_grad_(True)
                logits = model(xg)
                count[idx.cpu().numpy()] += 1
                loss, l2, success = self._objective(logits.detach(), x_adv.detach(), xs, ys, cs, sign)
                success_any |= success
                better = success & (l2 < best_l2[idx])
                if better.any():
                    best_l2[idx[better]] = l2[better]
                    best_x[idx[better]] = x_adv.detach()[better]
                if it == s["max_iter"] or should_stop():
                    break
                (g,) = torch.autograd.grad((cs * (sign * logit_margin(logits, ys))).sum(), xg)
                x_adv = x_adv.detach()
                with torch.no_grad():
                    direction = -(g + 2 * (x_adv - xs)) * chain * (1 - torch.tanh(w) ** 2)
                    w, x_adv, lr = self._line_search(score, idx, w, x_adv, direction, lr, loss, xs, ys, cs)
            # ART 1.12's binary-search update, lower-bound aliasing included (see docstring)
            ok = success_any
            cc, lo, dbl = c[idx].clone(), lower[idx].clone(), doubling[idx].clone()
            dbl[ok] = False
            cc[ok] = (lo[ok] + cc[ok]) / 2
            cc[~ok & dbl] *= 2
            grow = ~ok & ~dbl
            cc[grow] += (cc[grow] - lo[grow]) / 2
            lo[~ok] = cc[~ok]
            searching[idx[cc == c[idx]]] = False  # same c: the next run would repeat this one
            c[idx], lower[idx], doubling[idx] = cc, lo, dbl
            progress((step + 1) / s["binary_search_steps"],
                     f"C&W L2 binary-search step {step + 1}, {int(searching.sum())} searching")
        return best_x.cpu().numpy(), runs

    def _line_search(self, score, idx, w, x_adv, direction, lr, loss, xs, ys, cs):
        """ART's halving-then-doubling search along `direction` in tanh space; returns the
        updated (w, x_adv, learning rate) of every row."""
        s = self.settings
        best_loss, trial_loss = loss.clone(), loss.clone()
        best_lr = torch.zeros_like(lr)
        halvings = torch.zeros_like(lr)

        def trial(rows):
            trial_loss[rows] = score(idx[rows], w[rows] + lr[rows, None, None] * direction[rows],
                                     xs[rows], ys[rows], cs[rows])
            improved = rows[trial_loss[rows] < best_loss[rows]]
            best_lr[improved] = lr[improved]
            best_loss[improved] = trial_loss[improved]

        for _ in range(s["max_halving"]):
            rows = (trial_loss >= loss).nonzero().squeeze(1)
            if len(rows) == 0:
                break
            trial(rows)
            lr[rows] /= 2
            halvings[rows] += 1
        lr *= 2
        for _ in range(s["max_doubling"]):
            rows = ((halvings == 1) & (trial_loss <= best_loss)).nonzero().squeeze(1)
            if len(rows) == 0:
                break
            lr[rows] *= 2
            trial(rows)
        lr[halvings == 1] /= 2
        moved = (best_lr > 0).nonzero().squeeze(1)
        w = w.clone()
        x_adv = x_adv.clone()
        w[moved] = w[moved] + best_lr[moved, None, None] * direction[moved]
        x_adv[moved] = self.from_tanh(w[moved])
        return w, x_adv, lr
