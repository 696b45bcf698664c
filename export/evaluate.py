"""`evaluate`, `report` and `defend`: the systematic evaluation of the study over the shipped
bundles (ser_core/evaluation), its Markdown report, and adversarial training (ser_core/training/adversarial.py)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from .cli import emit


def register(sub):
    p = sub.add_parser("evaluate", help="every attack at every study setting, on every bundle, by gender "
                                        "(resumable; results as JSON lines, report and plots)")
    p.add_argument("--profile", default="quick", choices=["quick", "standard", "full"],
                   help="quick: per attack family, the first n of a class- and gender-balanced order of each test set "
                        "(counts in ser_core/evaluation/plan.py PROFILES, projected to fit 30 min here); standard: "
                        "enough examples that every 95 %% Wilson interval is within +/-5 points (+/-10 for C&W L2, "
                        "Pixel, Boundary), whole test sets for FGSM, DeepFool, C&W Linf; full: whole test sets")
    p.add_argument("--models", help="comma-separated bundle names or folders (default: every shipped bundle)")
    p.add_argument("--attacks", help="comma-separated attack names (default: every registered attack)")
    p.add_argument("--out", default="reports", help="folder for results-<profile>.jsonl, README.md, plots/")
    p.add_argument("--examples", help="examples per model: N for every attack, or attack=N,... for some "
                                       "(overrides the profile's counts; 'all' = whole test set)")
    p.add_argument("--batch", type=int, help="examples per attack call (overrides the profile)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--data-dir", help="folder holding emodb/, emovo/, ravdess/ (default ../shared/data)")
    p.add_argument("--no-report", action="store_true", help="only write the results rows")
    p.add_argument("--dry-run", action="store_true", help="print the plan (examples per cell, their Wilson "
                                                           "half-widths, projected CPU-hours) and run nothing")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="local: every batch in this process (default); ray: batches as Ray tasks on a local or "
                        "running cluster (pip install -r requirements-cluster.txt)")
    p.add_argument("--address", help="ray: the cluster to join ('auto', 'ray://HOST:10001'; default: start a local "
                                     "one with this machine's CPUs)")
    p.add_argument("--cpus-per-task", type=float, default=1.0,
                   help="ray: CPUs per batch task; torch and ONNX Runtime use that many threads (default 1)")
    p.add_argument("--gpus-per-task", type=float,
                   help="ray: GPUs per white-box task (default 1 when the cluster has GPUs, else 0; a fraction "
                        "shares a GPU); black-box tasks stay on CPU")
    p.add_argument("--waveform", action="store_true",
                   help="only the waveform attacks (cells like any other: held-out speakers' clips, flips verified "
                        "on the written WAV; same results file); the same as --attacks apgd,cw,pgd,square")
    p.add_argument("--clips", type=int, help="waveform attacks: clips per gender per model (overrides the profile)")
    p.add_argument("--threads", type=int, help="torch threads (1 when measuring CPU cost on a loaded machine)")
    p.add_argument("--save-costs", help="write the seconds per example measured in this run's rows "
                                        "(CPU seconds) to this cost table (ser_core/evaluation/costs.json)")
    p.set_defaults(func=run_evaluate)

    r = sub.add_parser("report", help="render README.md and plots from a results file")
    r.add_argument("--results", default="reports/results-quick.jsonl")
    r.add_argument("--out", default="reports")
    r.set_defaults(func=run_report)

    d = sub.add_parser("defend", help="adversarial training from a bundle (the study's FGSM recipe, or PGD); "
                                      "run again after an interruption to resume from the last epoch")
    d.add_argument("--model", required=True, help="bundle name or folder to start from")
    d.add_argument("--out", required=True, help="bundle folder to write")
    from ser_core.training.adversarial import add_arguments
    add_arguments(d)  # one option per field of the recipe, ser_core.training.adversarial.DefenceConfig
    d.add_argument("--data-dir")
    d.set_defaults(func=run_defend)


def shipped_models() -> list[str]:
    """Finished shipped bundles: a config.json and a model card (written last by training)."""
    from ser_core.models.bundle import MODELS_DIR
    return sorted(p.name for p in MODELS_DIR.glob("*") if (p / "config.json").is_file() and (p / "README.md").is_file())


def parse_examples(text: str | None, profile):
    """--examples: "10" (every attack), "all", or "pixel=2,bim=4" (those attacks only)."""
    import dataclasses
    from ser_core.errors import ParameterError
    if not text:
        return profile

    def count(v):
        if v == "all":
            return None
        if not v.isdigit() or int(v) < 1:
            raise ParameterError(f"--examples {text!r}: {v!r} is not a count (accepted: an integer >= 1 or 'all')")
        return int(v)
    if "=" not in text:
        return dataclasses.replace(profile, default=count(text), examples={})
    pairs = dict(kv.split("=", 1) for kv in text.split(","))
    return dataclasses.replace(profile, examples={**profile.examples, **{k: count(v) for k, v in pairs.items()}})


def run_evaluate(args):
    import dataclasses
    from ser_core.models.bundle import ModelBundle
    from ser_core.errors import ParameterError
    from ser_core.evaluation import plan, report
    from ser_core.evaluation.cells import read_rows
    from ser_core.evaluation.run import run_grid
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
    names = args.models.split(",") if args.models else shipped_models()
    if not names:
        raise ParameterError("no bundles to evaluate: none shipped under models/ yet (pass --models)")
    bundles = [ModelBundle.load(n) for n in names]
    if args.threads:
        for b in bundles:
            b.configure_onnx(threads=args.threads)
    out = Path(args.out)
    attacks = plan.select_attacks(args.attacks.split(",") if args.attacks else None,
                                  domain="waveform" if args.waveform else None)
    profile = parse_examples(args.examples, plan.PROFILES[args.profile])
    if args.clips is not None:  # clips per gender: the waveform attacks' examples
        if args.clips < 1:
            raise ParameterError(f"--clips {args.clips} (accepted: an integer >= 1)")
        profile = dataclasses.replace(profile, examples={
            **profile.examples, **{n: 2 * args.clips for n, c in attacks.items() if c.domain == "waveform"}})
    if args.batch is not None:
        profile = dataclasses.replace(profile, batch=args.batch)
    results = out / f"results-{profile.name}.jsonl"
    print(f"evaluate: {len(bundles)} models x {len(attacks)} attacks "
          f"({sum(len(plan.settings_of(c)) for c in attacks.values())} settings) -> {results}", file=sys.stderr)
    proj = plan.project(bundles, attacks, profile, read_rows(results))
    print(plan.format_projection(proj, profile), file=sys.stderr, flush=True)
    if args.dry_run:
        cells = plan.plan_cells(bundles, attacks, profile, rows=read_rows(results))
        print(plan.format_plan(cells, profile), file=sys.stderr, flush=True)
        by_attack: dict[str, float] = {}
        for c in cells:
            by_attack[c["attack"]] = by_attack.get(c["attack"], 0.0) + (c["cpu_seconds"] or 0.0)
        emit({"profile": profile.name, "projected_minutes": round(proj["total_seconds"] / 60, 1),
              "projected_cpu_hours_whole_profile": round(sum(c["cpu_seconds"] or 0 for c in cells) / 3600, 2),
              "projected_cpu_hours_by_attack": {a: round(v / 3600, 2) for a, v in
                                                sorted(by_attack.items(), key=lambda kv: -kv[1])},
              "unmeasured_cells": proj["unmeasured"],
              "cells": [{k: c[k] for k in ("model", "attack", "settings", "examples", "male", "female", "half_width")}
                        for c in cells]})
        return
    executor = None
    if args.executor == "ray":
        try:
            import ray  # noqa: F401  the optional install, imported only here
        except ImportError as exc:
            raise ParameterError(f"--executor ray needs Ray ({exc}): pip install -r requirements-cluster.txt, "
                                 f"or leave --executor out for the local loop") from None
        from ser_core.evaluation.executors import RayExecutor
        executor = RayExecutor(args.address, args.cpus_per_task,
                               0.0 if args.device == "cpu" else args.gpus_per_task)
        if args.device.startswith("cuda") and executor.gpus_per_task == 0:
            executor.close()
            raise ParameterError(f"--device {args.device} with --executor ray: the cluster has no GPU "
                                 f"(accepted: --device auto or cpu)")
    t0 = time.perf_counter()
    rows = run_grid(bundles, attacks, results, profile, args.device, args.data_dir, executor=executor)
    wall = time.perf_counter() - t0
    if args.save_costs:
        plan.save_costs(rows, args.save_costs, overhead_per_bundle=None)
    if not args.no_report:
        kept, superseded = _current_rows(rows, bundles)
        report.write_report(kept, out, profile.name, wall_seconds=wall, superseded=superseded)
    full = plan.project_full(rows)
    emit({"results": str(results), "rows": len(rows), "wall_seconds_this_run": round(wall, 1),
          "projected_seconds_before_run": round(proj["total_seconds"], 1),
          "attack_seconds_all_rows": round(sum(r["seconds"] for r in rows if r["subset"] == "all"), 1),
          "full_profile_projected_hours": round(full["total_seconds"] / 3600, 2),
          "study_gpu_hours": report.STUDY_GPU_HOURS})


def _current_rows(rows: list[dict], bundles=()) -> tuple[list[dict], dict[str, int]]:
    """The rows measured on the weights each bundle of that name has now (the bundles this run
    loaded, else the shipped ones under models/), and the count left out per model (a retrained
    bundle whose cells have not all been rerun)."""
    from ser_core.models.bundle import REPO_ROOT
    from ser_core.evaluation.cells import bundle_weights, current_rows
    weights = bundle_weights(bundles)
    for m in {r["model"] for r in rows} - set(weights):
        cfg = REPO_ROOT / "models" / m / "config.json"
        if cfg.is_file():
            weights[m] = json.loads(cfg.read_text()).get("weights_sha")
    return current_rows(rows, weights)


def run_report(args):
    from ser_core.errors import ParameterError
    from ser_core.evaluation import report
    from ser_core.evaluation.cells import read_rows
    rows = read_rows(args.results)
    if not rows:
        raise ParameterError(f"{args.results}: no result rows (run `python -m export evaluate` first)")
    profile = rows[0].get("profile", "quick")
    rows, superseded = _current_rows(rows)
    report.write_report(rows, args.out, profile, superseded=superseded)
    emit({"report": str(Path(args.out) / "README.md"), "rows": len(rows), "superseded": superseded})


def run_defend(args):
    from ser_core.models.bundle import ModelBundle
    from ser_core.training.adversarial import adversarial_train, config_from_arguments
    b = adversarial_train(ModelBundle.load(args.model), args.out, config_from_arguments(args), args.data_dir)
    emit({"bundle": str(b.folder), "defence": b.config["defence"]["method"],
          "metrics": {k: v for k, v in b.config["metrics"]["test"].items() if k != "confusion"},
          "training_seconds": b.config["training"]["seconds"], "steps": b.config["training"]["steps"]})
