"""The study's BIM on the gradient model against the model it replaced, on the examples that decide
its accuracy under attack: the clean-misclassified ones among the first N of each paper bundle's
balanced test order (the examples `evaluate --examples bim=N` attacks).

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/bim_subset_check.py [--n 96] [--eps 0.25,1.25]

BIM's accuracy under attack counts the examples whose decision after the attack is their true
label. Every clean-right example flips in the standard rows (success 1.000 in every BIM cell), so
the accuracy is the number of clean-wrong examples the attack moves onto their true label, over
N. This runs those examples through BIM (the study's setting: eps_step 0.1, 100 steps, no early
stop) once on `bundle.torch_model()` (old) and once on `bundle.gradient_model()` (new), and prints
how many each restores and whether their decisions agree example by example."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ser_core.attacks import get_attack  # noqa: E402
from ser_core.data.held_out import balanced_order, bundle_test_set  # noqa: E402
from ser_core.models.bundle import ModelBundle  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="emodb-paper,emovo-paper,ravdess-paper")
    p.add_argument("--n", type=int, default=96)
    p.add_argument("--eps", default="0.25,1.25")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for name in args.models.split(","):
        b = ModelBundle.load(name)
        b.configure_onnx(threads=1)
        ts = bundle_test_set(b)
        idx = balanced_order(ts)[:args.n]
        x, y = ts.x[idx].astype(np.float32), ts.labels[idx]
        clean = b.predict_features(x).argmax(1)
        wrong = np.flatnonzero(clean != y)
        for eps in map(float, args.eps.split(",")):
            params = {"eps": eps, "eps_step": 0.1, "max_iter": 100, "early_stop": False}
            new = get_attack("bim", b, **params)(x[wrong])
            b.gradient_model = b.torch_model  # the model every white-box attack used before
            try:
                old = get_attack("bim", b, **params)(x[wrong])
            finally:
                del b.gradient_model
            r = {"model": name, "eps": eps, "n": int(args.n), "clean_wrong": int(len(wrong)),
                 "restored_old": int((old.adv_pred == y[wrong]).sum()),
                 "restored_new": int((new.adv_pred == y[wrong]).sum()),
                 "same_decisions": int((old.adv_pred == new.adv_pred).sum()),
                 "mean_abs_old": float(old.mean_abs.mean()), "mean_abs_new": float(new.mean_abs.mean())}
            rows.append(r)
            print(json.dumps(r), flush=True)
    if args.out:
        args.out.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
