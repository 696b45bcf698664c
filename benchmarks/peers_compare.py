"""Our feature attacks against both peers in one run: IBM ART 1.20 (art_compare.py) and
torchattacks 3.5 (torchattacks_compare.py), on the same model, examples and process, so that
every ratio to the fastest peer comes from one run.

    nice -n 10 .venv/bin/python benchmarks/peers_compare.py [--model emodb] [--n 16]
        [--attacks fgsm,bim,deepfool,jsma,cw_l2,cw_linf] [--cap jsma=2 ...] [--cold] [--out FILE]

For each attack: art_compare.compare (ART's run, then ours, the study's setting) and, where
torchattacks has the attack, torchattacks_compare.compare (its run, then ours; DeepFool there is
the published variant, overshoot at every step). Each of those times its peer and ours in turn,
warmed up; see their docstrings for models, units and counting.

The clean decision: both peers are handed it or compute it themselves, and the benchmark scores
the clean examples once before timing (its own success reference). Ours reuses that scoring
(`features.base.clean_scores`, the way the grid scores one example set for five budgets and the
app one clip for every attack), so it is not in our timed call; `--cold` empties that memory
before each of our calls, which then scores the clean examples itself (one ONNX Runtime run)."""
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

import art_compare  # noqa: E402
import torchattacks_compare  # noqa: E402
from ser_core.attacks.features import base as feature_base  # noqa: E402
from ser_core.models.bundle import ModelBundle  # noqa: E402

DEFAULT_CAPS = {"jsma": 4, "cw_l2": 4, "cw_linf": 4}


def _remember_clean(bundle, x: np.ndarray) -> None:
    """Score x (and its clipped copy, torchattacks_compare's input) once; with --cold nothing is
    remembered (features.base._CLEAN_KEPT = 0), so our call scores them itself."""
    counter = feature_base.QueryCounter(bundle)
    for xs in (x, np.clip(x, *bundle.clip_range).astype(np.float32)):
        feature_base.clean_scores(bundle, np.ascontiguousarray(xs, np.float32), counter)


def rows_for(bundle, name: str, x: np.ndarray, passes) -> list[dict]:
    out = []
    _remember_clean(bundle, x)
    for r in art_compare.compare(bundle, name, x, None, passes):
        out.append({"attack": name, "peer": "ART", "setting": r["ours_params"], "n": r["n"],
                    "success_peer": r["success_art"], "success_ours": r["success_ours"],
                    "perturbation_peer": r["perturbation_art"], "perturbation_ours": r["perturbation_ours"],
                    "cpu_peer": r["cpu_seconds_art"], "cpu_ours": r["cpu_seconds_ours"]})
    if name in torchattacks_compare.SETTINGS:
        _remember_clean(bundle, x)
        r = torchattacks_compare.compare(bundle, name, x, passes)
        out.append({"attack": name, "peer": "torchattacks", "setting": r["ours_params"], "n": r["n"],
                    "success_peer": r["success_ta"], "success_ours": r["success_ours"],
                    "perturbation_peer": r["perturbation_ta"], "perturbation_ours": r["perturbation_ours"],
                    "cpu_peer": r["cpu_seconds_ta"], "cpu_ours": r["cpu_seconds_ours"]})
    for r in out:
        r["cpu_ratio"] = r["cpu_ours"] / r["cpu_peer"]
    return out


def table(rows: list[dict]) -> str:
    lines = ["| attack | setting | peer | n | success peer / ours | mean perturbation peer / ours | "
             "CPU s peer / ours | ours / peer CPU |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = ", ".join(f"{k} {v}" for k, v in r["setting"].items())
        lines.append(f"| {r['attack']} | {s} | {r['peer']} | {r['n']} | {r['success_peer']:.3f} / "
                     f"{r['success_ours']:.3f} | {r['perturbation_peer']:.4g} / {r['perturbation_ours']:.4g} | "
                     f"{r['cpu_peer']:.2f} / {r['cpu_ours']:.2f} | {r['cpu_ratio']:.3f} |")
    return "\n".join(lines)


def fastest(rows: list[dict]) -> str:
    """Per attack and setting: the fastest peer's CPU seconds and ours against it."""
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["attack"], json.dumps(r["setting"], sort_keys=True)), []).append(r)
    lines = ["| attack | setting | fastest peer (CPU s) | ours / fastest peer | at most 0.5 |", "|---|---|---|---|---|"]
    for (name, s), rs in groups.items():
        best = min(rs, key=lambda r: r["cpu_peer"])
        # ours against the fastest peer: our CPU seconds from that peer's own comparison
        ratio = best["cpu_ratio"]
        setting = ", ".join(f"{k} {v}" for k, v in json.loads(s).items())
        lines.append(f"| {name} | {setting} | {best['peer']} ({best['cpu_peer']:.2f}) | {ratio:.3f} | "
                     f"{'yes' if ratio <= 0.5 else 'no'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="emodb")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--attacks", default="fgsm,bim,deepfool,jsma,cw_l2,cw_linf")
    p.add_argument("--cap", action="append", default=[], metavar="ATTACK=N",
                   help=f"examples for a slow attack (defaults {DEFAULT_CAPS})")
    p.add_argument("--cold", action="store_true", help="ours scores the clean examples inside each call")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    bundle = ModelBundle.load(args.model)
    bundle.configure_onnx(threads=1)
    caps = dict(DEFAULT_CAPS)
    for c in args.cap:
        k, _, v = c.partition("=")
        caps[k] = int(v)
    if args.cold:
        feature_base._CLEAN_KEPT = 0
    x_all = art_compare.held_out_examples(bundle, args.data, args.n)
    passes = art_compare.PassCounter(bundle.torch_model())
    passes.watch(bundle.gradient_model())
    rows = []
    for name in [a.strip() for a in args.attacks.split(",") if a.strip()]:
        n = min(args.n, caps.get(name, args.n))
        print(f"[{time.strftime('%H:%M:%S')}] {name} on {n} examples ...", file=sys.stderr, flush=True)
        new = rows_for(bundle, name, x_all[:n], passes)
        rows += new
        print("\n".join(table(new).splitlines()[2:]), file=sys.stderr, flush=True)
    import art
    import torchattacks
    print(f"\nModel `{bundle.name}`; one torch and ONNX Runtime thread; ART {art.__version__}, torchattacks "
          f"{torchattacks.__version__}; clean scoring {'inside each of our calls (--cold)' if args.cold else 'shared'}.\n")
    print(table(rows))
    print()
    print(fastest(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": bundle.name, "cold": args.cold, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
