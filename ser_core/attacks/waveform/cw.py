"""Carlini-Wagner L2 on the waveform: the smallest perturbation that flips, with its SNR.

Carlini, Wagner, "Towards Evaluating the Robustness of Neural Networks" (IEEE S&P 2017),
arXiv 1608.04644; on audio: Carlini, Wagner, "Audio Adversarial Examples: Targeted Attacks on
Speech-to-Text" (2018), arXiv 1801.01944.

Minimises  ||delta||^2 / ||clip||^2 + c * max(margin + confidence, 0)  with Adam over the samples
the chunks use (distance = noise-to-signal energy ratio, so the trade-off constant c does not
depend on the clip's loudness), with C&W's binary search on c (log scale: x10 until a flip,
then geometric bisection) and early abort when the loss stalls. At the end of each search step
its smallest model-flipping perturbation is rounded to 16 bits and scored by the serving path;
the smallest one the serving path flips is the result, and `snr_needed_db` in `extra` is its
SNR. When none is found the attack returns the iterate with the lowest margin.

Targeted mode: the margin term is the target margin, a search step succeeds when the serving
path's decision is the target.

Arguments: steps (100), binary_steps (6), initial_const (0.01), learning_rate (0.005, Adam step
as a fraction of the clip's RMS), confidence (0.0, margin in log-probability).
queries: forward passes of the clip plus serving-path scorings.

Example: attack_clip(bundle, "clip.wav", "cw", {"binary_steps": 4}, domain="waveform")"""
from __future__ import annotations

import math

import numpy as np
import torch

from ser_core.attacks.base import MinimisationAttack, register
from ser_core.attacks.params import Param
from ser_core.control import should_stop
from ser_core.attacks.waveform.base import PCM_MAX, PCM_MIN, WaveformAttack, WaveformRun, snr_db


@register
class L2CarliniWagnerWaveformAttack(MinimisationAttack, WaveformAttack):
    """Carlini-Wagner L2 on the waveform, binary search on c, reports the SNR needed."""

    name = "cw"
    kind = "white-box"
    targeted = True
    # the evaluation grid: the SNR each clip needs, 20 Adam steps for each of 3 values of c
    grid_settings = [{"steps": 20, "binary_steps": 3}]
    params = {
        "steps": Param(100, int, 1, 5000, help="Adam steps per value of c"),
        "binary_steps": Param(6, int, 1, 30, help="values of c tried (binary search)"),
        "initial_const": Param(0.01, float, 1e-8, 1e6, help="first trade-off constant c"),
        "learning_rate": Param(0.005, float, 1e-6, 1.0, help="Adam step, fraction of the clip's RMS"),
        "confidence": Param(0.0, float, 0.0, 20.0, help="margin to reach beyond the boundary (log-prob)"),
    }

    def _attack_clip(self, pcm, objective, index_map, progress):
        s = self.settings
        model, serving, used, x0 = self.white_box(pcm, index_map)
        energy = float(np.sum(pcm ** 2))
        rms = math.sqrt(energy / float(used.sum()))
        c, lo, hi = s["initial_const"], 0.0, math.inf
        best, best_snr, fallback, fallback_margin, forwards = None, -math.inf, None, math.inf, 0
        for b in range(s["binary_steps"]):
            if should_stop():
                break
            w = torch.zeros(len(pcm), requires_grad=True)  # perturbation in units of the clip's RMS
            opt = torch.optim.Adam([w], lr=s["learning_rate"])
            stage_best, stage_dist, prev = None, math.inf, math.inf
            for step in range(s["steps"]):
                if should_stop():
                    break
                x = (x0 + w * rms * used).clamp(PCM_MIN, PCM_MAX)
                dist = ((x - x0) ** 2).sum() / energy
                m = objective.margin(model(x[None]))[0]
                forwards += 1
                loss = dist + c * torch.relu(m + s["confidence"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                m, d = m.item(), dist.item()
                if m < 0 and d < stage_dist:
                    stage_dist, stage_best = d, np.round(x.detach().double().numpy())
                if m < fallback_margin:
                    fallback_margin, fallback = m, np.round(x.detach().double().numpy())
                # C&W's early abort: stop this c when the loss has not improved by 0.01 %
                if step % max(1, s["steps"] // 10) == 0:
                    if loss.item() > prev * 0.9999:
                        break
                    prev = loss.item()
            verified = stage_best is not None and objective.serving_margin(serving(stage_best[None]))[0] < 0
            if verified:
                snr = snr_db(pcm, stage_best)
                if snr > best_snr:
                    best, best_snr = stage_best, snr
                hi = c
            else:
                lo = c
            c = c * 10 if hi == math.inf else (math.sqrt(lo * hi) if lo > 0 else hi / 10)
            progress((b + 1) / s["binary_steps"],
                     f"cw search step {b + 1}: best SNR {best_snr:.1f} dB" if best is not None
                     else f"cw search step {b + 1}: no flip yet (c={c:.3g})")
        out = best if best is not None else fallback
        if out is None:  # stopped before the first step: the clean clip
            out = np.array(pcm, dtype=np.float64)
        return WaveformRun(out, forwards + serving.count,
                           {"snr_needed_db": best_snr if best is not None else None,
                            "iterations": forwards, "final_const": c})
