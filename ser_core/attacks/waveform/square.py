"""Random search on the waveform under an Linf budget, querying only the serving path.

Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search" (ECCV 2020), arXiv 1912.00049 (Linf version), carried to
1-D audio. As in the paper the perturbation stays on the vertices of the Linf ball (every used
sample moved by +eps or -eps), starts from "stripes" and changes one random window at a time,
a change kept only when the margin loss on the serving probabilities drops,
  log p[clean] - max_{j != clean} log p[j]   (< 0: flipped),
with the window length p * samples shrinking on the paper's schedule (p halves at fixed
fractions of the query budget, from p_init).

What a window holds is where audio differs from images. The paper fills a square with one sign
(a low-frequency block, which image CNNs are sensitive to). On log-Mel input, sign blocks and
white +-eps noise put their energy where the clip has none, mostly under the features' 80 dB
floor, and barely move the decision (0 of 4 clips flipped at 30 dB). Here a window holds
+-eps * sign(clip band-passed into one of `bands` Mel-spaced bands): a square wave on the clip's
own harmonics in that band, in phase (louder) or in antiphase (quieter) with it, so its energy
lands in time-frequency cells the features see. Stripes: consecutive windows of 1 % of the
samples, each with a random band and phase. On 2 held-out clips per gender and corpus, 300
queries: 7 of 12 flipped at 20 dB, 3 of 12 at 30 dB; white-noise windows 0 of 12 at either
(measured with the waveform evaluation before it became grid cells: docs/attacks.md, "Square").

Black-box: candidates are 16-bit clips scored by the serving path only (bundle.features: trim,
chunks, librosa log-Mel, standardiser; then ONNX Runtime, one call per `population`
candidates), never the torch model; the band-passed clip is computed from the clean samples
the attack is given. The search is on the 16-bit grid, so its final decision is the one a WAV
of the clip gets. queries: clips scored, exactly (the initial point included, the clean clip
not). Early stop at the first flip.

Targeted mode: the same search on the serving path's target margin, stopping when its decision
is the target.

Arguments: snr_db | eps_16bit (budget), max_queries (300), p_init (0.3), bands (8),
population (1: the paper's one candidate per iteration), seed (0).

Example: attack_clip(bundle, "clip.wav", "square", {"snr_db": 20, "max_queries": 300}, domain="waveform")"""
from __future__ import annotations

import numpy as np

from ser_core.attacks.base import FixedBudgetAttack, register
from ser_core.attacks.params import Param
from ser_core.control import should_stop
from ser_core.attacks.waveform.base import PCM_MAX, PCM_MIN, LinfBudget, ServingPath, WaveformAttack, WaveformRun

STRIPE_FRACTION = 0.01  # initial windows: 1 % of the used samples (30 ms of a 3 s clip)


def p_schedule(p_init: float, fraction: float) -> float:
    """Square Attack's window-size schedule (halving at fixed fractions of the query budget)."""
    for i, edge in enumerate((0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8)):
        if fraction <= edge:
            return p_init / 2 ** i
    return p_init / 2 ** 9


def band_signs(samples: np.ndarray, sample_rate: int, bands: int) -> np.ndarray:
    """(bands, samples) signs (+-1) of `samples` band-passed (FFT mask) into `bands` bands
    equally spaced on the Mel scale from 0 Hz to Nyquist; exact zeros (silence) count as +1."""
    n = len(samples)
    spectrum = np.fft.rfft(np.asarray(samples, np.float64))
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    top = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    edges = 700.0 * (10 ** (np.linspace(0.0, top, bands + 1) / 2595.0) - 1.0)
    edges[-1] = np.inf
    out = np.empty((bands, n))
    for k in range(bands):
        part = np.fft.irfft(spectrum * ((freqs >= edges[k]) & (freqs < edges[k + 1])), n)
        out[k] = np.where(part < 0, -1.0, 1.0)
    return out


@register
class LinfSquare(LinfBudget, FixedBudgetAttack, WaveformAttack):
    """Black-box Linf random search on the waveform (Square Attack, Andriushchenko et al. 2020)."""

    name = "square"
    kind = "black-box"
    targeted = True
    # the evaluation grid: two SNR budgets, at most 300 serving-path queries a clip
    grid_settings = [{"snr_db": s, "max_queries": 300} for s in (20.0, 30.0)]
    params = {
        **LinfBudget.linf_params,
        "max_queries": Param(300, int, 1, 100_000, help="clips scored by the serving path at most"),
        "p_init": Param(0.3, float, 1e-4, 1.0, help="first window length, fraction of the used samples"),
        "bands": Param(8, int, 1, 64, help="Mel-spaced bands of the clip whose signs fill a window"),
        "population": Param(1, int, 1, 64, help="candidates scored per round (one ONNX call)"),
        "seed": Param(0, int, 0, 2 ** 31 - 1, help="seed of the random search"),
    }

    def _attack_clip(self, pcm, objective, index_map, progress):
        s = self.settings
        eps = self.epsilon(pcm, index_map)
        rng = np.random.default_rng(s["seed"])
        serving = ServingPath(self.bundle)
        used = np.unique(index_map)
        n = len(used)
        basis = band_signs(pcm[used], self.bundle.feature_config.sample_rate, s["bands"])

        def with_windows(signs, starts, length):
            """Copies of `signs`, window i (starts[i], length) refilled with a random band's
            signs in a random phase."""
            k = len(starts)
            window = starts[:, None] + np.arange(length)
            band = rng.integers(0, s["bands"], size=(k, 1))
            phase = rng.choice([-1.0, 1.0], size=(k, 1))
            cand = np.repeat(signs[None], k, 0)
            cand[np.arange(k)[:, None], window] = phase * basis[band, window]
            return cand

        def clip_of(sign_rows):
            x = np.repeat(pcm[None], len(sign_rows), 0)
            x[:, used] += eps * sign_rows
            return np.clip(x, PCM_MIN, PCM_MAX)

        stripe = max(1, int(round(STRIPE_FRACTION * n)))
        signs = np.ones(n)
        for start in range(0, n, stripe):
            signs = with_windows(signs, np.array([start]), min(stripe, n - start))[0]
        current = float(objective.serving_margin(serving(clip_of(signs[None])))[0])
        while current >= 0 and serving.count < s["max_queries"] and not should_stop():
            k = min(s["population"], s["max_queries"] - serving.count)
            length = max(1, int(round(p_schedule(s["p_init"], serving.count / s["max_queries"]) * n)))
            cand = with_windows(signs, rng.integers(0, n - length + 1, size=k), length)
            m = objective.serving_margin(serving(clip_of(cand)))
            i = int(m.argmin())
            if m[i] < current:
                current, signs = float(m[i]), cand[i]
            progress(serving.count / s["max_queries"], f"square: {serving.count} queries, margin {current:.3f}")
        return WaveformRun(clip_of(signs[None])[0], serving.count, {"eps_16bit": eps, "final_margin": current})
