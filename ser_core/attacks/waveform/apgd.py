"""Auto-PGD on the waveform: PGD with a step size that adapts itself, momentum and restarts.

Croce, Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020), arXiv 2003.01690, Algorithm 1 (APGD).

Why: PGD with a fixed step (pgd.py) oscillates once the margin is small: on held-out clips its
margin stalls above 0 at 20 dB as at 30 dB, at 50 steps as at 200. APGD starts with a step of
2 eps, and at checkpoints w_j (p_0 = 0, p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06)
of the steps) halves it and restarts from the best point when fewer than rho = 0.75 of the steps
since the last checkpoint improved the loss, or when the step was not halved at the previous
checkpoint and the best loss has not moved since. Each update mixes the projected gradient step
z with the previous move (momentum, alpha = 0.75):
  z = P(x_k + eta sign(grad));  x_k+1 = P(x_k + alpha (z - x_k) + (1 - alpha)(x_k - x_k-1)).

Losses: `margin` (the clip margin, see base.py), `ce` (cross-entropy of the clip log-probability:
log p[label] minimised untargeted, -log p[target] targeted; APGD-CE of AutoAttack) or `dlr`, the
paper's difference of logits ratio
on the clip log-probabilities z (sorted z_pi1 >= z_pi2 >= ...):
  untargeted  (z_y - max_{j != y} z_j) / (z_pi1 - z_pi3),
  targeted    (max_{j != t} z_j - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)   (four classes or more),
minimised (the paper maximises its negative); both are < 0 exactly when the goal is reached.

Budgets (all guarantee the SNR after rounding to 16 bits when snr_db is given):
  `l2` (default): the L2 ball of the SNR, radius sqrt(clip energy) 10^(-snr/20) less the most
    that 16-bit rounding adds; the step is eta * radius * grad / |grad|_2 (APGD's L2 version).
    Every perturbation of that SNR is in it, Linf ones included, so the attack may put the
    noise where the model listens instead of spreading it evenly; measured, it flips more
    held-out clips than the linf budget at the same SNR (README.md, "Waveform attacks").
  `linf`: every sample within eps of the clean one (eps_16bit, or from snr_db as LinfBudget
    computes it), steps eta * eps * sign(grad) as in the paper.
  `masking`: the perturbation's short-time spectrum under the clip's own frequency masking
    threshold shifted by mask_margin_db (masking.py, the psychoacoustic model of Qin et al.
    2019), and within the SNR's L2 ball when snr_db is given. The attack works on the STFT X of
    the perturbation: a step moves each cell by eta * cap along its gradient (eta starts at 2,
    as 2 eps does for linf), P caps each cell's magnitude, then scales X into the L2 ball, and
    the waveform is the inverse STFT, so the noise follows the clip's own spectrum. The cap holds
    on X; the STFT of the written 16-bit perturbation can exceed it slightly (overlap-add,
    rounding).
Every result reports, beside the SNR, the measured fraction of STFT cells where the written
perturbation is above the clip's masking threshold and the perturbation-to-mask ratio.
Samples within 320 of a trim bound stay clean (chunkmap.trim_guard), so that the chunking the
white-box model holds fixed is the one the serving path computes from the written WAV.

As pgd.py: white-box through the torch front-end and model with the chunking fixed; whenever the
model's margin is < 0 at a new lowest margin, the rounded clip is scored by the serving path and
the attack stops at the first clip whose serving decision reaches the goal (untargeted: differs
from the clean one; targeted: is the target). A flip found with the first steps sits on the
budget's edge; `shrink` bisection steps then scale the perturbation down as far as the serving
path still reaches the goal (a higher SNR for the same flip). Restarts (from a uniform random point of the
budget, seeded) run only when a run ends without that. Checks `should_stop()` (control.py)
once per step and then returns the best clip so far with `stopped` set.
queries: forward passes of the clip model plus serving-path scorings, exactly.

Arguments: snr_db (l2, linf or masking budget) | eps_16bit (linf), budget ('l2': the L2 ball of
the SNR, which holds every perturbation of that SNR, Linf ones included), mask_margin_db (0.0),
steps (40, per run), loss ('margin'), restarts (0), rho (0.75), alpha (0.75), seed (0),
shrink (4), confidence (0.0: the first verified flip ends the attack; > 0: only once the
model's clip margin is below -confidence, Carlini & Wagner's kappa, for transfer); eot (0: off), eot_space ('room'), eot_seed (0), eot_confidence (2.0):
expectation over transformations (eot.py), the loss averaged over `eot` transforms sampled each
step, a flip accepted once the margin is below -eot_confidence in every sampled transform and the
digital clip reaches the goal; no shrink.
Input: one clip; output: adversarial 16-bit samples (on the integer grid).

Example: attack_clip(bundle, "clip.wav", "apgd", {"snr_db": 30}, target="sadness", domain="waveform")"""
from __future__ import annotations

import math

import numpy as np
import torch

from ser_core.attacks.base import FixedBudgetAttack, register
from ser_core.attacks.params import Param
from ser_core.control import should_stop, stop_reason
from ser_core.errors import ParameterError
from ser_core.attacks.waveform.base import (DEFAULT_SNR_DB, PCM_MAX, PCM_MIN, LinfBudget, Objective, WaveformAttack, WaveformRun,
                   from_pcm)
from ser_core.audio.chunkmap import trim_guard
from ser_core.attacks.waveform.eot import EOT_PARAMS
from ser_core.attacks.waveform.masking import MaskingThreshold, istft


def checkpoints(steps: int) -> list[int]:
    """APGD's checkpoints w_j: p_1 = 0.22, p_j+1 = p_j + max(p_j - p_j-1 - 0.03, 0.06) of the
    steps, in the integer form of the authors' code (first 0.22 N, then intervals shrinking by
    0.03 N down to 0.06 N, each at least one step), up to the last step."""
    first, decrease, shortest = (max(int(f * steps), 1) for f in (0.22, 0.03, 0.06))
    marks, interval = [first], first
    while marks[-1] < steps:
        interval = max(interval - decrease, shortest)
        marks.append(marks[-1] + interval)
    return [m for m in marks if m < steps] + [steps]


def dlr(log_probs: torch.Tensor, objective: Objective) -> torch.Tensor:
    """(batch, classes) -> (batch,) DLR loss of Croce & Hein (2020), < 0 iff the objective is reached."""
    z = log_probs
    srt = z.sort(dim=1, descending=True).values
    if objective.target is None:
        scale = srt[:, 0] - srt[:, 2] if z.shape[1] >= 3 else torch.ones_like(srt[:, 0])
    else:
        scale = (srt[:, 0] - (srt[:, 2] + srt[:, 3]) / 2) if z.shape[1] >= 4 else torch.ones_like(srt[:, 0])
    return objective.margin(z) / (scale + 1e-12)


def cross_entropy(log_probs: torch.Tensor, objective: Objective) -> torch.Tensor:
    """(batch, classes) -> (batch,) the loss APGD-CE minimises: log p[label] (the cross-entropy
    of the label, negated: ascending it) untargeted, -log p[target] targeted."""
    rows = torch.as_tensor(objective.classes).expand(len(log_probs))[:, None]
    return objective.sign * log_probs.gather(1, rows).squeeze(1)


class _Linf:
    """The linf budget: the variable is the perturbation itself, steps are eta * eps * sign(grad)."""

    def __init__(self, eps: float, used: torch.Tensor):
        self.eps, self.used = eps, used

    def zeros(self):
        return torch.zeros_like(self.used)

    def random(self, g: torch.Generator):
        return (torch.rand(self.used.shape, generator=g, dtype=self.used.dtype) * 2 - 1) * self.eps * self.used

    def project(self, v):
        return v.clamp(-self.eps, self.eps) * self.used

    def step(self, v, grad, eta):
        return v - eta * self.eps * grad.sign()

    def delta(self, v):
        return v


class _L2:
    """The l2 budget: the perturbation within an L2 ball of radius r, steps eta * r * grad / |grad|_2."""

    def __init__(self, radius: float, used: torch.Tensor):
        self.radius, self.used = radius, used

    def zeros(self):
        return torch.zeros_like(self.used)

    def random(self, g: torch.Generator):
        v = torch.randn(self.used.shape, generator=g, dtype=self.used.dtype) * self.used
        return v * (self.radius * torch.rand((), generator=g) / v.norm().clamp_min(1e-30))

    def project(self, v):
        v = v * self.used
        n = v.norm()
        return v * (self.radius / n) if n > self.radius else v

    def step(self, v, grad, eta):
        g = grad * self.used
        return v - eta * self.radius * g / g.norm().clamp_min(1e-30)

    def delta(self, v):
        return v


class _Masking:
    """The masking budget: the variable is the STFT of the perturbation, each cell capped at the
    clip's masking threshold; steps move each cell by eta * cap along its gradient. With a radius
    (snr_db given) the capped spectrogram is also scaled down until its waveform is within the
    SNR's L2 ball (a feasible point of both constraints, not the exact projection)."""

    def __init__(self, cap: np.ndarray, used: torch.Tensor, radius: float | None = None):
        self.cap = torch.from_numpy(cap.astype(np.float32))
        self.used, self.length, self.radius = used, len(used), radius

    def zeros(self):
        return torch.zeros(self.cap.shape, dtype=torch.complex64)

    def random(self, g: torch.Generator):
        r = torch.rand(self.cap.shape, generator=g)
        phase = torch.rand(self.cap.shape, generator=g) * (2 * math.pi)
        return torch.polar(r * self.cap, phase)

    def project(self, v):
        mag = v.abs()
        v = v * torch.where(mag > self.cap, self.cap / mag.clamp_min(1e-30), torch.ones_like(mag))
        if self.radius is not None:
            n = float(self.delta(v).norm())
            if n > self.radius:
                v = v * (self.radius / n)
        return v

    def step(self, v, grad, eta):
        return v - eta * self.cap * grad / grad.abs().clamp_min(1e-30)

    def delta(self, v):
        return istft(v, self.length) * self.used


@register
class AutoPGD(LinfBudget, FixedBudgetAttack, WaveformAttack):
    """Auto-PGD on the waveform, budget an SNR (L2 ball), Linf, or the masking threshold (Croce & Hein 2020)."""

    name = "apgd"
    kind = "white-box"
    targeted = True
    # the evaluation grid: the app's default attack at the two budgets its presets offer
    grid_settings = [{"snr_db": s} for s in (30.0, 40.0)]
    params = {
        **LinfBudget.linf_params,
        "budget": Param("l2", str, choices=("l2", "linf", "masking"),
                        help="l2: the SNR's L2 ball (snr_db); linf: eps_16bit or snr_db; masking: "
                             "under the clip's masking threshold"),
        "mask_margin_db": Param(0.0, float, -40.0, 40.0, help="masking budget: threshold shifted by this, dB"),
        "steps": Param(40, int, 1, 2000, help="gradient steps per run"),
        "loss": Param("margin", str, choices=("margin", "dlr", "ce"),
                      help="loss minimised: clip margin, DLR, or cross-entropy"),
        "restarts": Param(0, int, 0, 20, help="further runs from random points, only while none reached "
                           "the goal"),
        "rho": Param(0.75, float, 0.0, 1.0, help="checkpoint: halve the step when fewer steps improved"),
        "alpha": Param(0.75, float, 0.0, 1.0, help="weight of the new step against the previous move"),
        "seed": Param(0, int, 0, 2 ** 31 - 1, help="seed of the restarts' random starts"),
        "shrink": Param(4, int, 0, 20, help="after a verified flip, bisection steps scaling the "
                        "perturbation down while the flip holds (one serving query each; 0: off; "
                        "not under EOT)"),
        "confidence": Param(0.0, float, 0.0, 50.0, help="a flip counts once the clip margin is below "
                            "-confidence (log-probability units; Carlini & Wagner's kappa): more margin "
                            "for a flip to carry over to other models (transfer); not under EOT, which "
                            "has eot_confidence"),
        **EOT_PARAMS,
    }

    def _validate(self):
        super()._validate()
        s = self.settings
        if s["budget"] != "linf" and s["eps_16bit"] is not None:
            raise ParameterError(f"apgd: eps_16bit bounds the linf budget, not {s['budget']} "
                                 "(accepted: budget='linf' with eps_16bit, or snr_db)")

    def l2_radius(self, pcm: np.ndarray, k: int) -> float:
        """Radius of the L2 ball (16-bit units) that guarantees snr_db after rounding to 16 bits:
        sqrt(clip energy) 10^(-snr/20) less 0.5 sqrt(k), the most that rounding k samples adds."""
        snr = self.settings["snr_db"] if self.settings["snr_db"] is not None else DEFAULT_SNR_DB
        radius = math.sqrt(float(np.sum(pcm ** 2))) * 10 ** (-snr / 20) - 0.5 * math.sqrt(k)
        if radius <= 0:
            raise ParameterError(f"apgd: snr_db={snr:g} leaves no room above 16-bit rounding for this "
                                 f"clip (accepted: a lower snr_db)")
        return radius

    def _attack_clip(self, pcm, objective, index_map, progress):
        s = self.settings
        model, serving, used, x0 = self.white_box(pcm, index_map)
        # samples near a trim bound stay clean, so the chunking the model sees is the serving one
        used[torch.from_numpy(trim_guard(from_pcm(pcm), self.bundle.feature_config))] = 0.0
        extra = {"budget": s["budget"]}
        if s["budget"] == "linf":
            eps = self.epsilon(pcm, index_map)
            space, extra["eps_16bit"] = _Linf(float(eps), used), eps
        elif s["budget"] == "l2":
            radius = self.l2_radius(pcm, int(used.sum()))
            space, extra["l2_radius_16bit"] = _L2(radius, used), round(radius, 2)
        else:
            mask = MaskingThreshold.of(pcm, self.bundle.feature_config.sample_rate)
            radius = None if s["snr_db"] is None else self.l2_radius(pcm, int(used.sum()))
            space = _Masking(mask.amplitude_cap(s["mask_margin_db"]), used, radius)
            extra["l2_radius_16bit"] = None if radius is None else round(radius, 2)
        loss_fn = {"margin": lambda lp, o: o.margin(lp), "dlr": dlr, "ce": cross_entropy}[s["loss"]]
        steps, marks = s["steps"], checkpoints(s["steps"])
        total = steps * (s["restarts"] + 1)
        # a margin to spare: EOT in every sampled room; else `confidence` (0: the first flip)
        goal = s["eot_confidence"] if s["eot"] else s["confidence"]
        state = {"forwards": 0, "best": None, "best_margin": math.inf, "found": False}

        def evaluate(v):
            """Loss, its gradient in v, and the bookkeeping of the lowest margin and the early stop."""
            v = v.detach().requires_grad_(True)
            x = (x0 + space.delta(v)).clamp(PCM_MIN, PCM_MAX)
            lp = model(x[None])
            rows = model.objective_for(objective)  # EOT: each transform's own clean decision
            loss = loss_fn(lp, rows).mean()  # one row, or one per EOT transform: their average
            state["forwards"] += 1
            grad, = torch.autograd.grad(loss, v)
            m = rows.margin(lp.detach()).max().item()  # EOT: reached in every sampled transform
            if m < state["best_margin"]:
                state["best_margin"], state["best"] = m, np.round(x.detach().double().numpy())
                # only the serving path's decision on the rounded clip ends the attack
                if m < -goal and objective.serving_margin(serving(state["best"][None]))[0] < 0:
                    state["found"] = True
            return loss.item(), grad

        g = torch.Generator().manual_seed(s["seed"])
        done = 0
        for run in range(s["restarts"] + 1):
            v = space.zeros() if run == 0 else space.project(space.random(g))
            eta = 2.0
            loss, grad = evaluate(v)
            done += 1
            best_v, best_loss, best_grad = v, loss, grad
            prev_v, improved, last_mark = v, 0, 0
            reduced_last, best_at_last = False, best_loss
            for k in range(1, steps):
                if state["found"] or should_stop():
                    break
                z = space.project(space.step(v, grad, eta))
                a = 1.0 if k == 1 else s["alpha"]
                new_v = space.project(v + a * (z - v) + (1 - a) * (v - prev_v))
                prev_v, v = v, new_v
                prev_loss = loss
                loss, grad = evaluate(v)
                done += 1
                improved += loss < prev_loss
                if loss < best_loss:
                    best_v, best_loss, best_grad = v, loss, grad
                if k in marks:
                    stalled = improved < s["rho"] * (k - last_mark)
                    flat = not reduced_last and best_at_last == best_loss
                    reduced_last = stalled or flat
                    if reduced_last:
                        eta /= 2
                        v, grad = best_v, best_grad
                        prev_v = v
                    improved, last_mark, best_at_last = 0, k, best_loss
                progress(done / total, f"apgd step {done}: margin {state['best_margin']:.3f}, step {eta:.3g}")
            if state["found"] or should_stop():
                break
        best = state["best"]
        if state["found"] and s["shrink"] and not s["eot"]:
            best = self._shrink(pcm, best, objective, serving, s["shrink"])
        extra.update(iterations=state["forwards"], runs=run + 1,
                     model_reached=state["found"] or state["best_margin"] < 0,
                     final_margin=round(state["best_margin"], 4), stopped=stop_reason())
        return WaveformRun(best, state["forwards"] + serving.count, extra)

    @staticmethod
    def _shrink(pcm, adv, objective, serving, steps):
        """Bisection on a factor in (0, 1] that scales the found perturbation down, keeping the
        smallest one the serving path still scores as reaching the objective (one query each)."""
        delta, lo, hi = adv - pcm, 0.0, 1.0
        for _ in range(steps):
            mid = (lo + hi) / 2
            cand = np.clip(np.round(pcm + mid * delta), PCM_MIN, PCM_MAX)
            if objective.serving_margin(serving(cand[None]))[0] < 0:
                hi, adv = mid, cand
            else:
                lo = mid
        return adv
