"""Crafting time of a universal perturbation: CPU seconds a step (time.process_time, one torch
thread) of `craft_universal` on each model's training speakers' clips, digitally and with EOT
over the 64 training rooms, and the CPU minutes that projects for a whole crafting run (--project
steps). Steps are independent in cost (one mini-batch each), so a few steps measure it; the rooms'
first use (impulse response, noise, the clean recording's chunking and decision, cached per clip
and room) is counted, which makes the EOT figure an upper bound for short runs. One JSON line a
(model, mode) to --out, then a Markdown table.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/universal_crafting.py --models emodb emovo ravdess \\
        --steps 10 --eot-steps 4 --out reports/over-the-air/universal-crafting.jsonl"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=["emodb", "emovo", "ravdess"])
    p.add_argument("--steps", type=int, default=10, help="digital steps measured")
    p.add_argument("--eot-steps", type=int, default=4, help="EOT steps measured (0: skip)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--project", type=int, default=150, help="steps of a whole run, for the projection")
    p.add_argument("--out", type=Path, default=Path("reports/over-the-air/universal-crafting.jsonl"))
    args = p.parse_args(argv)
    import torch
    from ser_core.attacks.over_the_air import training_clips
    from ser_core.attacks.universal import craft_universal
    from ser_core.audio.room import training_rooms
    from ser_core.models.bundle import ModelBundle
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models:
        bundle = ModelBundle.load(name)
        bundle.configure_onnx(threads=1)
        clips, _ = training_clips(bundle)
        for mode, steps, rooms in (("digital", args.steps, None), ("eot-64-rooms", args.eot_steps, training_rooms(64))):
            if not steps:
                continue
            cpu0 = time.process_time()
            pert = craft_universal(bundle, clips, 25.0, steps=steps, batch=args.batch, lr=0.1, rooms=rooms)
            cpu_all = time.process_time() - cpu0  # with the clean decisions of every training clip
            per_step = pert.meta["cpu_seconds"] / pert.meta["steps"]
            row = {"model": name, "mode": mode, "clips": len(clips), "batch": args.batch, "steps": pert.meta["steps"],
                   "loop_cpu_seconds": pert.meta["cpu_seconds"], "cpu_seconds_per_step": round(per_step, 3),
                   "setup_cpu_seconds": round(cpu_all - pert.meta["cpu_seconds"], 1),
                   "projected_cpu_minutes": round((per_step * args.project + cpu_all - pert.meta["cpu_seconds"]) / 60, 2),
                   "project_steps": args.project}
            rows.append(row)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), file=sys.stderr, flush=True)
    print("| model | mode | training clips | CPU s a step (batch) | setup CPU s | projected CPU min, "
          f"{args.project} steps |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mode']} | {r['clips']} | {r['cpu_seconds_per_step']:.2f} ({r['batch']}) | "
              f"{r['setup_cpu_seconds']:.0f} | {r['projected_cpu_minutes']:.1f} |")


if __name__ == "__main__":
    main()
