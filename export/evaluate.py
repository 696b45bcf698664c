"""`evaluate`, `report` and `defend`: the systematic evaluation of the study over the shipped
bundles (ser_core/evaluation), its Markdown report, and adversarial training."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from .cli import emit


def register(sub):
    p = sub.add_parser("evaluate", help="every attack at every study setting, on every bundle, by gender "
                                        "(resumable; results as JSON lines, report and plots)")
    p.add_argument("--profile", default="quick", choices=["quick", "full"],
                   help="quick: a balanced subset (per-group examples per class and gender); full: whole test sets")
    p.add_argument("--models", help="comma-separated bundle names or folders (default: every shipped bundle)")
    p.add_argument("--attacks", help="comma-separated attack names (default: every registered attack)")
    p.add_argument("--out", default="reports", help="folder for results-<profile>.jsonl, README.md, plots/")
    p.add_argument("--per-group", type=int, help="examples per (class, gender) pair (overrides the profile)")
    p.add_argument("--batch", type=int, help="examples per attack call (overrides the profile)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--data-dir", help="folder holding emodb/, emovo/, ravdess/ (default ../shared/data)")
    p.add_argument("--no-report", action="store_true", help="only write the results rows")
    p.set_defaults(func=run_evaluate)

    r = sub.add_parser("report", help="render README.md and plots from a results file")
    r.add_argument("--results", default="reports/results-quick.jsonl")
    r.add_argument("--out", default="reports")
    r.set_defaults(func=run_report)

    d = sub.add_parser("defend", help="adversarial training from a bundle (the study's FGSM recipe, or PGD)")
    d.add_argument("--model", required=True, help="bundle name or folder to start from")
    d.add_argument("--method", default="fgsm", choices=["fgsm", "pgd"])
    d.add_argument("--out", required=True, help="bundle folder to write")
    d.add_argument("--eps", type=float, default=1.25)
    d.add_argument("--fraction", type=float, default=0.6, help="adversarial share of each batch")
    d.add_argument("--epochs", type=int, default=30)
    d.add_argument("--lr", type=float, default=1e-4)
    d.add_argument("--batch-size", type=int, default=128)
    d.add_argument("--pgd-steps", type=int, default=7)
    d.add_argument("--max-steps", type=int, help="stop after this many optimiser steps (smoke runs)")
    d.add_argument("--data-dir")
    d.set_defaults(func=run_defend)


def shipped_models() -> list[str]:
    """Finished shipped bundles: a config.json and a model card (written last by training)."""
    from ser_core.bundle import MODELS_DIR
    return sorted(p.name for p in MODELS_DIR.glob("*") if (p / "config.json").is_file() and (p / "README.md").is_file())


def run_evaluate(args):
    import dataclasses
    from ser_core.bundle import ModelBundle
    from ser_core.errors import ParameterError
    from ser_core.evaluation import grid, report
    names = args.models.split(",") if args.models else shipped_models()
    if not names:
        raise ParameterError("no bundles to evaluate: none shipped under models/ yet (pass --models)")
    bundles = [ModelBundle.load(n) for n in names]
    attacks = grid.select_attacks(args.attacks.split(",") if args.attacks else None)
    profile = grid.PROFILES[args.profile]
    if args.per_group is not None:
        profile = dataclasses.replace(profile, per_group=args.per_group)
    if args.batch is not None:
        profile = dataclasses.replace(profile, batch=args.batch)
    out = Path(args.out)
    results = out / f"results-{profile.name}.jsonl"
    print(f"evaluate: {len(bundles)} models x {len(attacks)} attacks "
          f"({sum(len(grid.settings_of(c)) for c in attacks.values())} settings) -> {results}", file=sys.stderr)
    t0 = time.perf_counter()
    rows = grid.run_grid(bundles, attacks, results, profile, args.device, args.data_dir)
    wall = time.perf_counter() - t0
    if not args.no_report:
        report.write_report(rows, out, profile.name, wall_seconds=wall)
    proj = grid.project_full(rows)
    emit({"results": str(results), "rows": len(rows), "wall_seconds_this_run": round(wall, 1),
          "attack_seconds_all_rows": round(sum(r["seconds"] for r in rows if r["subset"] == "all"), 1),
          "full_profile_projected_hours": round(proj["total_seconds"] / 3600, 2),
          "study_gpu_hours": report.STUDY_GPU_HOURS})


def run_report(args):
    from ser_core.errors import ParameterError
    from ser_core.evaluation import grid, report
    rows = grid.read_rows(args.results)
    if not rows:
        raise ParameterError(f"{args.results}: no result rows (run `python -m export evaluate` first)")
    profile = rows[0].get("profile", "quick")
    report.write_report(rows, args.out, profile)
    emit({"report": str(Path(args.out) / "README.md"), "rows": len(rows)})


def run_defend(args):
    from ser_core.bundle import ModelBundle
    from ser_core.evaluation.defence import DefenceConfig, adversarial_train
    cfg = DefenceConfig(args.method, args.eps, args.fraction, args.epochs, args.lr, args.batch_size,
                        args.pgd_steps, args.max_steps)
    b = adversarial_train(ModelBundle.load(args.model), args.out, cfg, args.data_dir)
    emit({"bundle": str(b.folder), "defence": b.config["defence"]["method"],
          "metrics": {k: v for k, v in b.config["metrics"]["test"].items() if k != "confusion"},
          "training_seconds": b.config["training"]["seconds"], "steps": b.config["training"]["steps"]})
