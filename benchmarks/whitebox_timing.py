"""Seconds, success and mean perturbation of the six white-box attacks at the study's setting.

    nice -n 15 .venv/bin/python benchmarks/whitebox_timing.py [--model emodb] [--n 32]
        [--attacks fgsm,bim,deepfool,jsma,cw_l2,cw_linf] [--out results.json]

Each attack runs once, with its first `paper_settings` entry (PAPER.md), on the bundle's
held-out test-speaker chunks as tests/conftest.py's `test_examples` picks them (seed 0, at most
16 per gender, in corpus order), attacking the true labels. Reported per attack: accuracy clean
and under attack (ONNX decisions, as the study measures them), success = share of the correctly
classified examples that the attack misclassifies, mean absolute perturbation over all cells
(the study's figure) and mean L2 over those successes' examples, queries, wall seconds and the
process's CPU seconds. On a shared machine compare CPU seconds: wall time includes waiting for
whatever else runs."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ser_core.attacks import get_attack, registry  # noqa: E402
from ser_core.models.bundle import ModelBundle  # noqa: E402

WHITE_BOX = ("fgsm", "bim", "deepfool", "jsma", "cw_l2", "cw_linf")


def held_out_examples(bundle, data_dir: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(x, labels) exactly as tests/conftest.py's fixture builds them, first n of them."""
    from ser_core.data.held_out import held_out_chunks
    x, labels, _ = held_out_chunks(bundle, data_dir)
    return x[:n], labels[:n]


def measure(bundle, name: str, x: np.ndarray, labels: np.ndarray) -> dict:
    params = dict(registry()[name].paper_settings[0])
    cpu0, t0 = time.process_time(), time.perf_counter()
    r = get_attack(name, bundle, **params)(x, labels)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    correct = r.clean_pred == labels
    won = correct & (r.adv_pred != labels)
    return {"attack": name, "params": params, "n": int(len(x)),
            "clean_accuracy": float(correct.mean()), "accuracy_under_attack": float((r.adv_pred == labels).mean()),
            "success": float(won.sum() / max(correct.sum(), 1)),
            "mean_perturbation": float(r.mean_abs.mean()),
            "mean_l2_of_successes": float(r.l2[won].mean()) if won.any() else None,
            "queries": int(r.queries.sum()), "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2)}


def table(rows: list[dict]) -> str:
    out = ["| attack | n | accuracy clean / attacked | success | mean perturbation | mean L2 (successes) | queries | seconds | CPU seconds |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        l2 = "-" if r["mean_l2_of_successes"] is None else f"{r['mean_l2_of_successes']:.3g}"
        out.append(f"| {r['attack']} | {r['n']} | {r['clean_accuracy']:.3f} / {r['accuracy_under_attack']:.3f} | "
                   f"{r['success']:.3f} | {r['mean_perturbation']:.4g} | {l2} | {r['queries']} | "
                   f"{r['seconds']:.1f} | {r['cpu_seconds']:.1f} |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="emodb")
    p.add_argument("--n", type=int, default=32, help="examples (at most 32, as the tests pick them)")
    p.add_argument("--attacks", default=",".join(WHITE_BOX), help="comma-separated subset")
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = p.parse_args(argv)
    names = [a.strip() for a in args.attacks.split(",") if a.strip()]
    bad = [a for a in names if a not in WHITE_BOX]
    if bad:
        p.error(f"unknown white-box attacks {bad} (accepted: {', '.join(WHITE_BOX)})")
    bundle = ModelBundle.load(args.model)
    x, labels = held_out_examples(bundle, args.data, args.n)
    rows = []
    for name in names:
        print(f"[{time.strftime('%H:%M:%S')}] {name} on {len(x)} examples ...", file=sys.stderr, flush=True)
        rows.append(measure(bundle, name, x, labels))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(f"\nModel `{bundle.name}`, {len(x)} test examples, the study's settings.\n")
    print(table(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"model": bundle.name, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
