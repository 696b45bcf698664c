"""Every white-box attack on the gradient model (ser_core/models/fast.py) against the same attack
on the model it replaced (`bundle.torch_model()`: unrolled LSTM, channels-last CNN), in one run:
CPU seconds per model row (a step's cost), outputs and decisions compared; and the gradient
model's share of one core's float32 peak.

    nice -n 15 .venv/bin/python benchmarks/fastpath_steps.py [--model emodb] [--n 16] [--clips 2]

Peak: the best of 5 single-thread 2048 x 2048 float32 matrix products (torch.mm, CPU seconds).
Model arithmetic: 155.1 MFLOP per example forward (conv1 1.24 M, conv2 2.45 M, conv3 1.00 M
multiply-adds per block x 9 blocks; the LSTM's input products 30.7 M and recurrence 4.7 M;
2 FLOP per multiply-add); a forward and input-gradient pass counts twice that. Each pass is timed
as the best of --reps, the old and the new model interleaved in each repetition.

Attacks: the feature attacks on the bundle's first --n held-out chunks (JSMA and both C&W on the
first 4), the white-box waveform attacks on the first --clips example clips; each runs once on
the old model and once on the new one, same inputs and settings. Rows: example rows through the
model forward (a backward row is counted per output cotangent), so `CPU / row` new / old is the
step-time ratio even where the two runs take a different number of steps."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from art_compare import PassCounter, held_out_examples  # noqa: E402
from ser_core.attacks import get_attack  # noqa: E402
from ser_core.attacks.features.base import QueryCounter, clean_scores  # noqa: E402
from ser_core.models.bundle import ModelBundle  # noqa: E402

FLOP = 155.1e6
FEATURE = {"fgsm": {"eps": 0.25}, "bim": {"eps": 0.25, "eps_step": 0.1, "max_iter": 100, "early_stop": False},
           "deepfool": {"max_iter": 5, "overshoot": 1e-5, "nb_grads": 5, "range_scaled_step": True},
           "jsma": {"theta": 1.0, "gamma": 1.0},
           "cw_l2": {"initial_const": 0.01, "learning_rate": 0.01, "max_iter": 10, "binary_search_steps": 20},
           "cw_linf": {"initial_const": 1e-4, "learning_rate": 0.01, "max_iter": 10, "largest_const": 20.0}}
FEW = {"jsma": 4, "cw_l2": 4, "cw_linf": 4}
WAVEFORM = {"apgd": {"snr_db": 30.0}, "pgd": {"snr_db": 30.0, "steps": 20}, "cw": {"steps": 20, "binary_steps": 3}}


def peak_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_cpu(lambda: a @ b) for _ in range(5))
    return 2 * 2048 ** 3 / best / 1e9


def _cpu(f) -> float:
    c = time.process_time()
    f()
    return time.process_time() - c


def model_passes(old, new, reps: int) -> list[dict]:
    x = torch.randn(64, 261, 128, generator=torch.Generator().manual_seed(0))

    def fb(m, n):
        xa = x[:n].clone().requires_grad_(True)
        lo = m(xa)
        torch.autograd.grad(lo[:, 0].sum() - lo[:, 1].sum(), xa)

    def fwd(m, n):
        with torch.no_grad():
            m(x[:n])
    jobs = [("forward", 64, fwd)] + [("forward + input-gradient", n, fb) for n in (1, 4, 16, 64)]
    best = {}
    for _ in range(reps):
        for job in jobs:
            for which, m in (("old", old), ("new", new)):
                t = _cpu(lambda: job[2](m, job[1]))
                best[job[:2], which] = min(best.get((job[:2], which), 1e9), t)
    return [{"pass": k, "batch": n, "old_s": best[(k, n), "old"], "new_s": best[(k, n), "new"]} for k, n, _ in jobs]


def clip_model_steps(bundle, clips, reps: int) -> list[dict]:
    """A waveform attack's white-box step: the clip model (front-end + model, chunking fixed)
    forward and input-gradient, on each clip, old and new model interleaved; best of reps."""
    from ser_core.attacks.waveform.base import ClipModel, from_pcm, to_pcm
    from ser_core.audio.chunkmap import chunk_index_map
    out = []
    for y in clips:
        pcm = to_pcm(y)
        index = chunk_index_map(from_pcm(pcm), bundle.feature_config)
        models = {"new": ClipModel(bundle, index)}
        original = bundle.gradient_model
        bundle.gradient_model = bundle.torch_model
        try:
            models["old"] = ClipModel(bundle, index)
        finally:
            bundle.gradient_model = original
        x = torch.from_numpy(pcm).float()[None]

        def step(m):
            xa = x.clone().requires_grad_(True)
            torch.autograd.grad(m(xa)[0, 0], xa)
        best = {}
        for _ in range(reps):
            for k, m in models.items():
                best[k] = min(best.get(k, 1e9), _cpu(lambda: step(m)))
        out.append({"chunks": int(index.shape[0]), "old_s": best["old"], "new_s": best["new"]})
    return out


def run_attack(bundle, name, params, inputs, passes, use_old: bool):
    original = bundle.gradient_model
    if use_old:
        bundle.gradient_model = bundle.torch_model  # the model every white-box attack used before
    try:
        passes.take()
        t = time.process_time()
        res = get_attack(name, bundle, **params)(inputs)
        cpu = time.process_time() - t
        fwd, bwd = passes.take()
    finally:
        bundle.gradient_model = original
    return res, cpu, fwd + bwd


def compare_attacks(bundle, x, clips, passes) -> list[dict]:
    rows = []
    jobs = [(n, p, x[:FEW.get(n, len(x))]) for n, p in FEATURE.items()] + [(n, p, clips) for n, p in WAVEFORM.items()]
    for name, params, inputs in jobs:
        if name in FEATURE:
            clean_scores(bundle, np.ascontiguousarray(inputs, np.float32), QueryCounter(bundle))  # warm for both
        get_attack(name, bundle, **params)(inputs[:1])  # warm-up, untimed
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        old, c_old, r_old = run_attack(bundle, name, params, inputs, passes, True)
        new, c_new, r_new = run_attack(bundle, name, params, inputs, passes, False)
        if name in FEATURE:
            diff = float(np.abs(old.x_adv - new.x_adv).max())
            same_cells = float((old.x_adv == new.x_adv).mean())
        else:
            diff = same_cells = None
        rows.append({"attack": name, "n": len(inputs), "old_cpu": c_old, "new_cpu": c_new, "old_rows": r_old,
                     "new_rows": r_new, "step_ratio": (c_new / max(r_new, 1)) / (c_old / max(r_old, 1)),
                     "flips_old": int(old.flipped.sum()), "flips_new": int(new.flipped.sum()),
                     "same_decisions": bool(np.array_equal(old.adv_pred, new.adv_pred)),
                     "max_abs_diff": diff, "equal_cells": same_cells})
        print(rows[-1], file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="emodb")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--clips", type=int, default=2)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--skip-attacks", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = ModelBundle.load(args.model)
    bundle.configure_onnx(threads=1)
    peak = peak_gflops()
    print(f"Model `{bundle.name}`; one torch and ONNX Runtime thread; single-core float32 peak {peak:.1f} GFLOP/s "
          "(best of 5 2048x2048 sgemm).\n")
    print("| pass | batch | old CPU s | new CPU s | new / old | old: share of peak | new: share of peak |")
    print("|---|---|---|---|---|---|---|")
    for r in model_passes(bundle.torch_model(), bundle.gradient_model(), args.reps):
        flop = FLOP * r["batch"] * (1 if r["pass"] == "forward" else 2) / 1e9
        print(f"| {r['pass']} | {r['batch']} | {r['old_s']:.4f} | {r['new_s']:.4f} | {r['new_s'] / r['old_s']:.3f} | "
              f"{flop / r['old_s'] / peak:.3f} | {flop / r['new_s'] / peak:.3f} |", flush=True)
    if args.skip_attacks:
        return 0
    from ser_core.audio.decode import load_audio
    x = held_out_examples(bundle, args.data, args.n)
    clips = [load_audio(f) for f in sorted((REPO / "examples").glob("*.wav"))[:args.clips]]
    print("\n| waveform white-box step (front-end + model) | chunks | old CPU s | new CPU s | new / old |")
    print("|---|---|---|---|---|")
    for i, r in enumerate(clip_model_steps(bundle, clips, args.reps)):
        print(f"| example clip {i + 1} | {r['chunks']} | {r['old_s']:.4f} | {r['new_s']:.4f} | {r['new_s'] / r['old_s']:.3f} |")
    passes = PassCounter(bundle.torch_model())
    passes.watch(bundle.gradient_model())
    rows = compare_attacks(bundle, x, clips, passes)
    print("\n| attack | n | CPU s old / new | model rows old / new | step time new / old | flipped old / new "
          "| same decisions | largest output difference | equal cells |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = "-" if r["max_abs_diff"] is None else f"{r['max_abs_diff']:.3g}"
        e = "-" if r["equal_cells"] is None else f"{r['equal_cells']:.5f}"
        print(f"| {r['attack']} | {r['n']} | {r['old_cpu']:.2f} / {r['new_cpu']:.2f} | {r['old_rows']} / {r['new_rows']} "
              f"| {r['step_ratio']:.3f} | {r['flips_old']} / {r['flips_new']} | {r['same_decisions']} | {d} | {e} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
