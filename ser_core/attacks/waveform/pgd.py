"""Linf projected gradient descent on the waveform (PGD / BIM).

Kurakin, Goodfellow, Bengio, "Adversarial examples in the physical world" (ICLR workshop 2017),
arXiv 1607.02533 (BIM); Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks" (ICLR 2018), arXiv 1706.06083 (PGD, random start).

Distance: Linf on the 16-bit samples, budget eps_16bit or snr_db (see LinfBudget). Each step
moves every sample the chunks use by step_fraction * eps against the sign of the gradient of
the clip margin (white-box, through the torch front-end and model with the chunking fixed),
then projects back into the budget and the 16-bit range. When the model says the clip flipped,
the rounded clip is scored by the serving path; the attack stops at the first clip the serving
path also flips (early stop), else keeps going and returns the iterate with the lowest margin.

Targeted mode (a Objective with a target): the same steps on the target margin, stopping when the
serving path's decision is the target.

Arguments: snr_db | eps_16bit (budget), steps (100), step_fraction (0.05), random_start (False),
seed (0). Input: one clip; output: adversarial 16-bit samples (on the integer grid).
queries: forward passes of the clip plus serving-path scorings.

Example: attack_clip(bundle, "clip.wav", "pgd", {"snr_db": 30}, domain="waveform")"""
from __future__ import annotations

import numpy as np
import torch

from ser_core.attacks.base import FixedBudgetAttack, register
from ser_core.attacks.params import Param
from ser_core.control import should_stop
from ser_core.attacks.waveform.base import PCM_MAX, PCM_MIN, LinfBudget, WaveformAttack, WaveformRun


@register
class LinfPGD(LinfBudget, FixedBudgetAttack, WaveformAttack):
    """Linf PGD/BIM on the waveform, budget in SNR dB or 16-bit units (Madry et al. 2018)."""

    name = "pgd"
    kind = "white-box"
    targeted = True
    # the evaluation grid: three SNR budgets, 20 steps of a tenth of the budget
    grid_settings = [{"snr_db": s, "steps": 20, "step_fraction": 0.1} for s in (20.0, 30.0, 40.0)]
    params = {
        **LinfBudget.linf_params,
        "steps": Param(100, int, 1, 2000, help="iterations at most"),
        "step_fraction": Param(0.05, float, 1e-4, 1.0, help="step size as a fraction of the budget"),
        "random_start": Param(False, bool, help="start from a uniform point in the budget (PGD)"),
        "seed": Param(0, int, 0, 2 ** 31 - 1, help="seed of the random start"),
    }

    def _attack_clip(self, pcm, objective, index_map, progress):
        eps = self.epsilon(pcm, index_map)
        s = self.settings
        model, serving, used, x0 = self.white_box(pcm, index_map)
        delta = torch.zeros_like(x0)
        if s["random_start"]:
            g = torch.Generator().manual_seed(s["seed"])
            delta = (torch.rand(len(pcm), generator=g) * 2 - 1) * eps * used
        alpha = s["step_fraction"] * eps
        best, best_margin, forwards, found = None, np.inf, 0, False
        for step in range(s["steps"]):
            if should_stop():
                break
            delta.requires_grad_(True)
            x = (x0 + delta).clamp(PCM_MIN, PCM_MAX)
            m = objective.margin(model(x[None]))[0]
            forwards += 1
            grad, = torch.autograd.grad(m, delta)
            m = m.item()
            if m < best_margin:
                best_margin, best = m, np.round(x.detach().double().numpy())
                # the model and the serving path can disagree near the boundary (fixed chunking,
                # float32 front-end): only the serving path's decision ends the attack
                if m < 0 and objective.serving_margin(serving(best[None]))[0] < 0:
                    found = True
                    break
            with torch.no_grad():
                delta = ((delta - alpha * grad.sign()).clamp(-eps, eps) * used)
            progress((step + 1) / s["steps"], f"pgd step {step + 1}: margin {m:.3f}")
        if best is None:  # stopped before the first step: the clean clip
            best = np.array(pcm, dtype=np.float64)
        return WaveformRun(best, forwards + serving.count, {"eps_16bit": eps, "iterations": forwards,
                                                            "model_flipped": found or best_margin < 0})
