"""Random search on the waveform under an Linf budget, querying only the serving path.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search" (ECCV 2020), arXiv 1912.00049, carried to 1-D audio: the
perturbation sits on the vertices of the Linf ball (every used sample moved by +eps or -eps),
starts from random signs, and each round redraws the signs inside `population` random windows
of the samples the chunks use (window length p * samples, p halving on Square Attack's
schedule); the candidate with the lowest margin is kept if it improves on the current one.

Black-box: candidates are 16-bit clips scored by the serving path only (bundle.features: trim,
chunks, librosa log-Mel, standardiser; then ONNX Runtime, one call per round), never the torch
model. The search is on the 16-bit grid, so its final decision is the one a WAV of the clip
gets. queries: clips scored, exactly (the initial point included, the clean clip not).

Arguments: snr_db | eps_16bit (budget), max_queries (300), p_init (0.1), population (4),
seed (0). Early stop at the first flip.

Example: attack_waveform_clip(bundle, "clip.wav", "square", {"eps_16bit": 64, "max_queries": 200})"""
from __future__ import annotations

import numpy as np

from ..attacks.base import Param
from .base import PCM_MAX, PCM_MIN, LinfBudget, ServingPath, WaveformAttack, serving_margin


def p_schedule(p_init: float, fraction: float) -> float:
    """Square Attack's window-size schedule (halving at fixed fractions of the query budget)."""
    for i, edge in enumerate((0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)):
        if fraction <= edge:
            return p_init / 2 ** i
    return p_init / 2 ** 9


class LinfSquare(LinfBudget, WaveformAttack):
    """Black-box Linf random search on the waveform (Square Attack, Andriushchenko et al. 2020)."""

    name = "square"
    kind = "black-box"
    goal = "fixed-budget"
    params = {
        **LinfBudget.budget_params,
        "max_queries": Param(300, int, 1, 100_000, help="clips scored by the serving path at most"),
        "p_init": Param(0.1, float, 1e-4, 1.0, help="first window length, fraction of the used samples"),
        "population": Param(4, int, 1, 64, help="candidates scored per round (one ONNX call)"),
        "seed": Param(0, int, 0, 2 ** 31 - 1, help="seed of the random search"),
    }

    def run(self, pcm, label, index_map, progress):
        s = self.settings
        eps = self.epsilon(pcm, index_map)
        rng = np.random.default_rng(s["seed"])
        serving = ServingPath(self.bundle)
        used = np.unique(index_map)
        signs = rng.choice([-1.0, 1.0], size=len(used))

        def clip_of(sign_rows):
            x = np.repeat(pcm[None], len(sign_rows), 0)
            x[:, used] += eps * sign_rows
            return np.clip(x, PCM_MIN, PCM_MAX)

        current = serving_margin(serving(clip_of(signs[None])), label)[0]
        while current >= 0 and serving.count < s["max_queries"]:
            k = min(s["population"], s["max_queries"] - serving.count)
            length = max(1, int(round(p_schedule(s["p_init"], serving.count / s["max_queries"]) * len(used))))
            starts = rng.integers(0, len(used) - length + 1, size=k)
            cand = np.repeat(signs[None], k, 0)
            window = starts[:, None] + np.arange(length)
            cand[np.arange(k)[:, None], window] = rng.choice([-1.0, 1.0], size=(k, length))
            m = serving_margin(serving(clip_of(cand)), label)
            i = int(m.argmin())
            if m[i] < current:
                current, signs = float(m[i]), cand[i]
            progress(serving.count / s["max_queries"], f"square: {serving.count} queries, margin {current:.3f}")
        return clip_of(signs[None])[0], serving.count, {"eps_16bit": eps, "final_margin": current}
