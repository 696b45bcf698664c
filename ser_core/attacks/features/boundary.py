"""Boundary attack: start from an adversarial input and walk along the decision boundary
towards the clean input, using only the model's decisions.

Brendel, Rauber, Bethge, "Decision-Based Adversarial Attacks: Reliable Attacks Against
Black-Box Machine Learning Models", ICLR 2018 (arXiv 1712.04248). The study ran ART's
`BoundaryAttack` (untargeted; delta 0.01, epsilon 0.01, step_adapt 0.5, 100 iterations,
3 trials, 10 samples, 100 initial draws); this follows ART 1.x
`art/attacks/evasion/boundary.py` step for step, batched over examples:

  - start: uniform noise over the clip range, redrawn (at most init_size times) until the
    model's decision differs from the clean one;
  - each iteration, an orthogonal step: sample_size candidates adv + eta, eta of length
    delta * |x - adv| orthogonal to x - adv and projected back onto the sphere around x, up to
    num_trial rounds until one stays adversarial; delta is multiplied by step_adapt when under
    20 % stay adversarial and divided by it when over 50 % do;
  - then a step towards x: every surviving candidate moves by epsilon (x - candidate), up to
    num_trial rounds, epsilon adapted the same way; the adversarial one nearest to x (L2)
    becomes the new adv;
  - an example whose trials are exhausted stops there, as in ART.

Two additions, both off in the study's setting (init_steps 0, persist False): a binary search
on the line from the noise start to x before the walk, as Foolbox's blended-uniform-noise start
does (Rauber et al. 2017), so the walk begins at the boundary instead of at the far side of the
clip range; and an example whose rounds all fail keeps walking with its shrunk steps (as in
Brendel et al. and Foolbox) instead of stopping there for good.

Black-box: only ONNX Runtime decisions through `QueryCounter`, one call per step scoring the
candidates of all live examples, each counted against its example. Examples whose clean
decision already differs from the label are returned unchanged.

Targeted (an Objective with targets): every candidate must be decided as the target t. The
start is an input already decided as t, as Brendel et al. start targeted attacks from an image
of the target class: the example of the batch whose clean decision is t nearest to x (L2),
else uniform-noise draws until one is decided as t (ART without x_init); extra "start_example"
is that example's index in x (-1: noise, or none found). An example already decided as t is
returned unchanged.

Distance minimised: L2. Minimisation.
Arguments: delta 0.01, epsilon 0.01, step_adapt 0.5, max_iter 100, num_trial 3,
sample_size 10, init_size 100, init_steps 10, persist True, seed 0. Targeted: yes.
Shapes: x (batch, 261, 128) standardised features -> x_adv of the same shape.
Example: `get_attack("boundary", bundle, max_iter=20)(x).summary()`."""
from __future__ import annotations

import numpy as np

from ser_core.control import should_stop
from ser_core.attacks.base import MinimisationAttack, register
from ser_core.attacks.features.base import FeatureAttack
from ser_core.attacks.params import Param


@register
class BoundaryAttack(MinimisationAttack, FeatureAttack):
    """Boundary attack (Brendel et al. 2018): decision-based walk along the boundary towards x."""

    name = "boundary"
    kind = "black-box"
    targeted = True
    batch_size = None  # the whole input in one call: candidates are scored population-wide
    params = {
        "delta": Param(0.01, float, 1e-6, 1.0, help="initial orthogonal step (fraction of |x - adv|)"),
        "epsilon": Param(0.01, float, 1e-6, 1.0, help="initial step towards x (fraction of x - adv)"),
        "step_adapt": Param(0.5, float, 0.01, 0.99, help="factor that shrinks or grows both steps"),
        "max_iter": Param(100, int, 0, 100_000, help="walk iterations"),
        "num_trial": Param(3, int, 1, 100, help="rounds per step before an example stops"),
        "sample_size": Param(10, int, 1, 1000, help="orthogonal candidates per round"),
        "init_size": Param(100, int, 1, 100_000, help="uniform-noise draws to find a start"),
        "init_steps": Param(10, int, 0, 50, help="binary-search steps from the noise start towards x "
                                                 "(0: ART's plain noise start, as in the study)"),
        "persist": Param(True, bool, help="keep walking (steps shrunk) when num_trial rounds fail, as "
                                          "Foolbox does; False: stop the example there, as ART and the study"),
        "seed": Param(0, int, 0, 2**31 - 1, help="random seed"),
    }
    paper_settings = [{"delta": 0.01, "epsilon": 0.01, "step_adapt": 0.5, "max_iter": 100,
                       "num_trial": 3, "sample_size": 10, "init_size": 100, "init_steps": 0,
                       "persist": False}]

    def _decide(self, query, cand, owners) -> np.ndarray:
        return query(self.clip(cand), owners).argmax(1)

    def _adversarial(self, query, cand, owners, objective) -> np.ndarray:
        """Whether each candidate reaches its owner's objective (off the label, or on the target)."""
        return objective[owners].reached(self._decide(query, cand, owners))

    def _start(self, x, objective, query, rng, todo, clean_pred):
        """Starts for the examples in `todo`: targeted, the nearest example of the batch already
        decided as the target; then uniform noise (ART's _init_sample); then the optional binary
        search towards x. Returns (adv, found, start_example) for all examples."""
        adv = x.copy()
        found = np.zeros(len(x), bool)
        start_example = np.full(len(x), -1)
        if objective.targeted:
            for i in todo:
                same = np.flatnonzero(clean_pred == objective.targets[i])
                if len(same):
                    dist = np.linalg.norm((self.clip(x[same]) - x[i]).reshape(len(same), -1), axis=1)
                    start_example[i] = same[dist.argmin()]
                    adv[i] = self.clip(x[start_example[i]])
                    found[i] = True
        pending = todo[~found[todo]]
        for _ in range(self.settings["init_size"]):
            if len(pending) == 0 or should_stop():
                break
            noise = rng.uniform(self.clip_min, self.clip_max, (len(pending),) + x.shape[1:]).astype(np.float32)
            ok = self._adversarial(query, noise, pending, objective)
            adv[pending[ok]] = noise[ok]
            found[pending[ok]] = True
            pending = pending[~ok]
        ex = np.flatnonzero(found)
        lo, hi = np.zeros(len(ex)), np.ones(len(ex))  # blend weight of the noise: hi is adversarial
        for _ in range(self.settings["init_steps"]):
            if should_stop():
                break  # hi stays adversarial
            mid = (lo + hi) / 2
            cand = x[ex] + mid[:, None, None].astype(np.float32) * (adv[ex] - x[ex])
            ok = self._adversarial(query, cand, ex, objective)
            hi, lo = np.where(ok, mid, hi), np.where(ok, lo, mid)
        if self.settings["init_steps"]:
            adv[ex] = x[ex] + hi[:, None, None].astype(np.float32) * (adv[ex] - x[ex])
        return adv, found, start_example

    def _orthogonal(self, x, adv, delta, rng):
        """ART's _orthogonal_perturb for rows (x, adv, delta): a random step of length
        delta |x - adv| orthogonal to x - adv, mapped back onto the sphere around x."""
        n = len(x)
        d = (x - adv).reshape(n, -1)
        dist = np.linalg.norm(d, axis=1, keepdims=True)
        p = rng.standard_normal(d.shape).astype(np.float32)
        p *= (delta[:, None] * dist / np.linalg.norm(p, axis=1, keepdims=True)).astype(np.float32)
        u = d / np.maximum(dist, 1e-12)
        p -= (p * u).sum(1, keepdims=True) * u
        h = np.sqrt(1 + delta ** 2)[:, None].astype(np.float32)
        step = ((1 - h) * -d + p) / h
        return adv + step.reshape(adv.shape)

    def _attack_batch(self, x, objective, query, progress):
        s = self.settings
        rng = np.random.default_rng(s["seed"])
        n = len(x)
        # an example whose clean decision already reaches the objective needs no perturbation:
        # one counted query each (labels may differ from the clean decision the base class saw)
        clean_pred = self._decide(query, x, np.arange(n))
        done = objective.reached(clean_pred)
        adv, found, start_example = self._start(x, objective, query, rng, np.flatnonzero(~done), clean_pred)
        delta = np.full(n, s["delta"])
        epsilon = np.full(n, s["epsilon"])
        live = np.flatnonzero(found)
        stopped = np.zeros(n, bool)
        for it in range(s["max_iter"]):
            if len(live) == 0 or should_stop():
                break
            # orthogonal step: rounds until each live example keeps an adversarial candidate
            pending = live
            kept, kept_owner = [], []
            for _ in range(s["num_trial"]):
                if len(pending) == 0:
                    break
                owners = np.repeat(pending, s["sample_size"])
                cand = self.clip(self._orthogonal(x[owners], adv[owners], delta[owners], rng))
                ok = self._adversarial(query, cand, owners, objective).reshape(len(pending), -1)
                ratio = ok.mean(1)
                delta[pending] *= np.where(ratio < 0.2, s["step_adapt"], np.where(ratio > 0.5, 1 / s["step_adapt"], 1.0))
                okf = ok.ravel()
                kept.append(cand[okf])
                kept_owner.append(owners[okf])
                pending = pending[ratio == 0]
            if not s["persist"]:
                stopped[pending] = True  # ART: "adversarial example found but not optimal", returns adv
            if not kept:
                break
            cands = np.concatenate(kept)
            owner = np.concatenate(kept_owner)
            # step towards x: rounds until each example keeps an adversarial candidate
            pending = np.unique(owner)
            for _ in range(s["num_trial"]):
                if len(pending) == 0:
                    break
                rows = np.flatnonzero(np.isin(owner, pending))
                o = owner[rows]
                moved = self.clip(cands[rows] + epsilon[o][:, None, None].astype(np.float32) * (x[o] - cands[rows]))
                ok = self._adversarial(query, moved, o, objective)
                tried = np.bincount(o, minlength=n)[pending]
                ratio = np.bincount(o, weights=ok, minlength=n)[pending] / tried
                epsilon[pending] *= np.where(ratio < 0.2, s["step_adapt"], np.where(ratio > 0.5, 1 / s["step_adapt"], 1.0))
                self._take_nearest(x, adv, moved[ok], o[ok])
                pending = pending[ratio == 0]
            if len(pending):
                # ART returns the nearest orthogonal candidate and stops the example
                rows = np.flatnonzero(np.isin(owner, pending))
                self._take_nearest(x, adv, cands[rows], owner[rows])
                if not s["persist"]:
                    stopped[pending] = True
            live = live[~stopped[live]]
            progress((it + 1) / s["max_iter"], f"boundary: iteration {it + 1}/{s['max_iter']}")
        extra = {"started": found.tolist(), "already_adversarial": done.tolist(),
                 "stopped_early": stopped.tolist()}
        if objective.targeted:
            extra["start_example"] = start_example.tolist()
        return adv, extra

    @staticmethod
    def _take_nearest(x, adv, cands, owners):
        """adv[i] = the candidate of example i nearest to x[i] (L2), for each owner present."""
        if len(owners) == 0:
            return
        dist = np.linalg.norm((cands - x[owners]).reshape(len(owners), -1), axis=1)
        order = np.lexsort((dist, owners))
        first = order[np.r_[True, owners[order][1:] != owners[order][:-1]]]
        adv[owners[first]] = cands[first]
