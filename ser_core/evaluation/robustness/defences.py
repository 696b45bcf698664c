"""Input defences attacked twice: naively and adaptively, to show which only look robust.

Each defence (ser_core/audio/defences.py) is put in front of the same bundle (`with_defence`:
the serving path applies it, so every flip is verified on the defended decision of the written
WAV) and attacked with the suite (suite.py) on the same clips under three attacker views:

  naive     APGD-CE crafted on the undefended model (the attacker ignores the defence);
  through   APGD-CE differentiating the defence as implemented: numpy steps give no gradient
            (gradient masking; the careless white-box evaluation);
  adaptive  APGD-CE through BPDA (straight-through or a differentiable approximation) and EOT
            (the mean probability over `eot` seeded draws of a random part), and Square, which
            queries the defended serving path only and so needs no gradient at all.

A defence *only looks robust* when a non-adaptive view leaves more robust accuracy than the
adaptive one (the 95 % Newcombe interval of the difference above 0) and the adaptive one is not
shown above the undefended model's (`verdict`). Randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019, arXiv 1902.02918) is also
certified (`certify`): CERTIFY with n0 selection and n estimation draws of Gaussian noise of
standard deviation sigma on the decoded waveform (full scale 1, the bundle's rate, before trim,
chunks and features), the Clopper-Pearson lower bound of the top class's probability pA at
level alpha, radius sigma * Phi^-1(pA) in L2 of that waveform, stated as the lowest SNR of the
clip it covers: 20 log10(|clip|_2 / radius). It holds for the smoothed classifier g (the most
probable decision of the undefended serving path under the noise), on that float waveform
representation, with probability at least 1 - alpha over the draws; not for the single noisy
draw the `noise` defence serves."""
from __future__ import annotations

import math

import numpy as np

from ser_core.audio.decode import load_audio
from ser_core.evaluation.robustness.run import run_suite, with_defence
from ser_core.evaluation.robustness.suite import SuiteConfig

DEFENCES = {"resample": "resample:rate=8000", "quantise": "quantise:bits=8", "mp3": "mp3:quality=2",
            "lowpass": "lowpass:cutoff=4000", "noise": "noise:sigma=0.002"}
VIEWS = {"naive": ("ignore", ("apgd-ce",)), "through": ("through", ("apgd-ce",)),
         "adaptive": ("adaptive", ("apgd-ce", "square"))}


def defence_runs(bundle, clips, defences: dict, base: SuiteConfig, out, eot: int = 8, log=None) -> dict:
    """Rows of the undefended bundle (APGD-CE and Square) and of each defence under each view,
    resumable in `out`: {"undefended": rows, (name, view): rows}."""
    from dataclasses import replace
    res = {"undefended": run_suite(bundle, clips, replace(base, members=VIEWS["adaptive"][1]), out, log=log)}
    for name, spec in defences.items():
        for label, (view, members) in VIEWS.items():
            b = with_defence(bundle, spec, view, eot)
            res[(name, label)] = run_suite(b, clips, replace(base, members=members), out, view, eot, log=log)
    return res


def robust_share(rows: list[dict], key: str) -> tuple[int, int]:
    return sum(r["budgets"][key]["robust"] for r in rows), len(rows)


def verdict(naive: tuple, through: tuple, adaptive: tuple, undefended: tuple) -> str:
    """(robust, n) of each view -> what the data shows, by 95 % Newcombe intervals of differences
    (ser_core/stats.py): 'only looks robust' when a non-adaptive view's robust accuracy is above
    the adaptive one's (interval above 0) and the adaptive one is not shown above undefended;
    'more robust than undefended' when the adaptive one is (interval above 0); else 'no gain shown'."""
    from ser_core.stats import newcombe_difference
    above = (lambda a, b: newcombe_difference(a[0], a[1], b[0], b[1])[1] > 0)
    gain = above(adaptive, undefended)
    if not gain and (above(naive, adaptive) or above(through, adaptive)):
        return "only looks robust"
    return "more robust than undefended" if gain else "no gain shown"


def defence_table(res: dict, budgets: list[str]) -> str:
    lines = ["| defence | clean | budget | naive | through (as implemented) | adaptive (BPDA/EOT + Square) "
             "| undefended | verdict |", "|---|---|---|---|---|---|---|---|"]
    und = res["undefended"]
    names = sorted({k[0] for k in res if isinstance(k, tuple)}, key=list(DEFENCES).index)
    for key in budgets:
        u = robust_share(und, key)
        lines.append(f"| none | {sum(r['clean_correct'] for r in und)}/{len(und)} | {key} | - | - | - "
                     f"| {u[0]}/{u[1]} | the reference |")
    for name in names:
        rows = {v: res.get((name, v), []) for v in VIEWS}
        n = max(len(r) for r in rows.values())
        clean = max((sum(r["clean_correct"] for r in rs) for rs in rows.values() if len(rs) == n), default=0)
        for key in budgets:
            f = {v: robust_share(rows[v], key) for v in VIEWS}
            u = robust_share(und, key)
            cells = " | ".join(f"{k}/{m}" if m else "-" for k, m in f.values())
            done = all(m == n == u[1] for _, m in f.values())
            call = verdict(f["naive"], f["through"], f["adaptive"], u) if done else "(unfinished)"
            lines.append(f"| {name} | {clean}/{n} | {key} | {cells} | {u[0]}/{u[1]} | {call} |")
    return "\n".join(lines)


def certify(bundle, y: np.ndarray, sigma: float, n0: int = 16, n: int = 100, alpha: float = 0.001,
            seed: int = 0) -> dict:
    """Cohen et al.'s CERTIFY on one decoded clip: the smoothed decision (None: abstain), pA's
    lower bound, the certified L2 radius (full scale 1) and the lowest SNR it covers (dB)."""
    from scipy.stats import beta, norm
    rng = np.random.default_rng(seed)
    y = np.asarray(y, np.float32)

    def counts(k):
        c = np.zeros(len(bundle.labels), int)
        for _ in range(k):
            noisy = (y + sigma * rng.standard_normal(len(y))).astype(np.float32)
            c[bundle.labels.index(bundle.predict_clip(noisy, bundle.feature_config.sample_rate).label)] += 1
        return c

    top = int(counts(n0).argmax())
    n_a = int(counts(n)[top])
    p_low = float(beta.ppf(alpha, n_a, n - n_a + 1)) if n_a > 0 else 0.0
    if p_low <= 0.5:
        return {"pred": None, "p_lower": p_low, "radius": 0.0, "snr_db": None}
    radius = sigma * float(norm.ppf(p_low))
    return {"pred": top, "p_lower": round(p_low, 4), "radius": radius,
            "snr_db": round(20 * math.log10(float(np.linalg.norm(y.astype(np.float64))) / radius), 2)}


def certify_clips(bundle, clips, sigma: float, n0: int = 16, n: int = 100, alpha: float = 0.001,
                  snrs=(40.0, 30.0)) -> dict:
    """CERTIFY over clips (Utterances): certified accuracy at each SNR (correct, not abstaining,
    radius covering that SNR's L2 ball), with the per-clip records."""
    records = []
    for i, u in enumerate(clips):
        y = load_audio(u.path, bundle.feature_config.sample_rate)
        c = certify(bundle, y, sigma, n0, n, alpha, seed=i)
        records.append(dict(c, clip=u.name, label=bundle.labels.index(u.emotion)))
    out = {"sigma": sigma, "n0": n0, "n": n, "alpha": alpha, "clips": len(records),
           "smoothed_correct": sum(r["pred"] == r["label"] for r in records),
           "abstained": sum(r["pred"] is None for r in records),
           "median_certified_snr_db": (float(np.median([r["snr_db"] for r in records if r["snr_db"] is not None]))
                                       if any(r["snr_db"] is not None for r in records) else None),
           "certified": {f"{s:g}dB": sum(r["pred"] == r["label"] and r["snr_db"] is not None and r["snr_db"] <= s
                                         for r in records) for s in snrs},
           "records": records}
    return out
