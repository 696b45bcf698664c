"""Our feature attacks against torchattacks 3.5 (Kim 2020, arXiv 2010.01950) on the same model and
the same examples, in one run: FGSM, the study's BIM (100 steps, no early stop) and the
published DeepFool (overshoot 0.02 at every step, 50 steps, every class a candidate).

    nice -n 15 .venv/bin/python benchmarks/torchattacks_compare.py [--model emodb] [--n 16]
        [--attacks fgsm,bim,deepfool] [--out results.json]

torchattacks is a benchmark-only dependency (`pip install torchattacks==3.5.1`; not in
requirements-dev.txt: no test imports it). The examples are art_compare.py's (the bundle's
held-out chunks, gender-interleaved), clipped to the bundle's clip range. torchattacks wants
images in [0, 1], so it attacks u = (x - clip_min) / width through a wrapper that maps u back
(x = clip_min + width * u) into `bundle.torch_model()` (the module ART gets in art_compare.py),
and its eps and step sizes are ours divided by the width: the same algorithm in other units, so
the outputs agree up to float rounding. Both toolboxes attack away from the clean ONNX decision
(passed to torchattacks as its labels; ours computes it itself, inside its timed call, on the
serving path).

Success: the ONNX decision on the adversarial input differs from the clean one (one scorer for
both). Perturbation: the mean absolute difference per example, averaged. Seconds: wall and CPU
(`time.process_time`) of the attack call, torch on `--threads` threads (default 1) and ONNX
Runtime on as many, without spinning. Each toolbox runs each attack once, untimed, on one
example first (warm-up). Rows: example rows through the torch module forward and reached by a
backward pass (ours differentiate `bundle.gradient_model()`, the same function rewritten for
speed; both are counted)."""
from __future__ import annotations

import argparse
import json
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
from ser_core.models.bundle import ModelBundle  # noqa: E402

# ours, torchattacks class, its keyword arguments in standardised units (scaled to [0, 1] below)
SETTINGS = {
    "fgsm": ({"eps": 0.25}, "FGSM", {"eps": 0.25}),
    "bim": ({"eps": 0.25, "eps_step": 0.1, "max_iter": 100, "early_stop": False}, "BIM",
            {"eps": 0.25, "alpha": 0.1, "steps": 100}),
    "deepfool": ({"max_iter": 50, "overshoot": 0.02, "nb_grads": 1000, "overshoot_each_step": True},
                 "DeepFool", {"steps": 50, "overshoot": 0.02}),
}
SCALED = ("eps", "alpha")  # lengths in input units: divided by the clip range width for torchattacks


class _UnitInput(torch.nn.Module):
    """The model on u in [0, 1]: x = clip_min + width * u."""

    def __init__(self, model, clip_min: float, width: float):
        super().__init__()
        self.model, self.clip_min, self.width = model, clip_min, width

    def forward(self, u):
        return self.model(self.clip_min + self.width * u)


def torchattacks_attack(bundle, name: str):
    import torchattacks
    lo, hi = map(float, bundle.clip_range)
    _, cls_name, kwargs = SETTINGS[name]
    kwargs = {k: v / (hi - lo) if k in SCALED else v for k, v in kwargs.items()}
    return getattr(torchattacks, cls_name)(_UnitInput(bundle.torch_model(), lo, hi - lo).eval(), **kwargs)


def run_torchattacks(bundle, name: str, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    lo, hi = map(float, bundle.clip_range)
    u = torch.from_numpy((x - lo) / (hi - lo)).clamp(0, 1)
    out = torchattacks_attack(bundle, name)(u, torch.from_numpy(labels.astype(np.int64)))
    return (lo + (hi - lo) * out.detach().numpy()).astype(np.float32)


def compare(bundle, name: str, x: np.ndarray, passes: PassCounter) -> dict:
    x = np.clip(x, *bundle.clip_range).astype(np.float32)
    ours_params = SETTINGS[name][0]
    clean = bundle.predict_features(x).argmax(1)
    run_torchattacks(bundle, name, x[:1], clean[:1])  # warm-up, untimed
    get_attack(name, bundle, **ours_params)(x[:1])
    torch.manual_seed(0)
    passes.take()
    t0, c0 = time.perf_counter(), time.process_time()
    x_ta = run_torchattacks(bundle, name, x, clean)
    t_ta, c_ta = time.perf_counter() - t0, time.process_time() - c0
    fwd_ta, bwd_ta = passes.take()
    ta_flip = bundle.predict_features(x_ta).argmax(1) != clean
    t0, c0 = time.perf_counter(), time.process_time()
    res = get_attack(name, bundle, **ours_params)(x)
    t_ours, c_ours = time.perf_counter() - t0, time.process_time() - c0
    fwd_ours, bwd_ours = passes.take()
    return {"attack": name, "n": int(len(x)), "ours_params": ours_params,
            "success_ta": float(ta_flip.mean()), "success_ours": float(res.flipped.mean()),
            "perturbation_ta": float(np.abs(x_ta - x).reshape(len(x), -1).mean(1).mean()),
            "perturbation_ours": float(res.mean_abs.mean()),
            "l2_ta": float(np.sqrt(((x_ta - x) ** 2).reshape(len(x), -1).sum(1)).mean()),
            "l2_ours": float(res.l2.mean()),
            "max_abs_diff_outputs": float(np.abs(x_ta - res.x_adv).max()),
            "seconds_ta": t_ta, "seconds_ours": t_ours, "cpu_seconds_ta": c_ta, "cpu_seconds_ours": c_ours,
            "cpu_ratio": c_ours / c_ta, "forward_rows_ta": fwd_ta, "backward_rows_ta": bwd_ta,
            "forward_rows_ours": fwd_ours, "backward_rows_ours": bwd_ours,
            "steps_ours": float(res.extra["steps"].mean()) if "steps" in res.extra else None}


def table(rows: list[dict]) -> str:
    out = ["| attack | n | success torchattacks / ours | mean perturbation torchattacks / ours | mean L2 "
           "torchattacks / ours | CPU s torchattacks / ours | ours/torchattacks CPU | forward rows | "
           "backward rows | largest output difference |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['attack']} | {r['n']} | {r['success_ta']:.3f} / {r['success_ours']:.3f} | "
                   f"{r['perturbation_ta']:.4g} / {r['perturbation_ours']:.4g} | {r['l2_ta']:.4g} / "
                   f"{r['l2_ours']:.4g} | {r['cpu_seconds_ta']:.2f} / {r['cpu_seconds_ours']:.2f} | "
                   f"{r['cpu_ratio']:.3f} | {r['forward_rows_ta']} / {r['forward_rows_ours']} | "
                   f"{r['backward_rows_ta']} / {r['backward_rows_ours']} | {r['max_abs_diff_outputs']:.3g} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="emodb")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--attacks", default=",".join(SETTINGS))
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    import torchattacks
    torch.set_num_threads(args.threads)
    bundle = ModelBundle.load(args.model)
    bundle.configure_onnx(threads=args.threads)  # a fixed pool that does not spin
    x_all = held_out_examples(bundle, args.data, args.n)
    passes = PassCounter(bundle.torch_model())
    passes.watch(bundle.gradient_model())
    rows = []
    for name in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
        rows.append(compare(bundle, name, x_all, passes))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    print(f"\nModel `{bundle.name}`; {args.n} examples; {args.threads} torch and ONNX Runtime thread(s); "
          f"torchattacks {torchattacks.__version__}.\n")
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": bundle.name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
