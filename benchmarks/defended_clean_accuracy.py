"""Clean clip-level accuracy of a model and its defended versions on every held-out clip of the
base model's held-out speakers (the suite's clips, `ser_core.evaluation.robustness.run.suite_clips`):
what a defence costs in accuracy, beside its robust accuracy (reports/robustness/README.md).
Writes one JSON object with each model's correct / n, 95 % Wilson interval, male and female, the
first 40 clips of the balanced order (the suite's rows), and each defended model's difference
from the first model with its 95 % Newcombe interval (unpaired, so conservative).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defended_clean_accuracy.py --models emodb emodb-pgd-wave \\
        emodb-resample --out reports/robustness/clean.json"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ser_core.evaluation.robustness.run import suite_clips
from ser_core.models.bundle import ModelBundle
from ser_core.stats import newcombe_difference, wilson


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="the base model first, then its defended versions")
    p.add_argument("--data-dir", default="../shared/data")
    p.add_argument("--out", help="JSON file to write")
    args = p.parse_args(argv)
    clips = suite_clips(ModelBundle.load(args.models[0]), None, data_dir=args.data_dir)
    res = {"command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defended_clean_accuracy.py --models "
                      + " ".join(args.models) + (f" --out {args.out}" if args.out else ""),
           "clips": len(clips), "speakers": sorted({u.speaker for u in clips}), "models": {}}
    for m in args.models:
        b = ModelBundle.load(m)
        b.configure_onnx(threads=1)
        t = time.process_time()
        ok = [b.predict_clip(u.path).label == u.emotion for u in clips]
        k, n = sum(ok), len(ok)
        r = {"correct": k, "n": n, "accuracy": round(k / n, 4), "wilson95": [round(v, 3) for v in wilson(k, n)],
             "first40": [sum(ok[:40]), min(n, 40)], "cpu_seconds": round(time.process_time() - t, 1)}
        for g in ("male", "female"):
            r[g] = [sum(o for o, u in zip(ok, clips) if u.gender == g), sum(u.gender == g for u in clips)]
        res["models"][m] = r
    base = res["models"][args.models[0]]
    for m in args.models[1:]:
        r = res["models"][m]
        d = newcombe_difference(r["correct"], r["n"], base["correct"], base["n"])
        r["minus_base_newcombe95"] = [round(v, 3) for v in d]
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
