"""Pixel with the model's graph whole against in two parts (only a candidate's changed time blocks
through the CNN: ser_core/attacks/features/blockwise.py), in one process, alternated, on the first
examples of a paper bundle's class- and gender-balanced test order; one torch and one ONNX Runtime
thread without spinning (as `evaluate --threads 1`). Prints per setting the CPU seconds of each,
their ratio, the queries and whether the adversarial inputs, probabilities and query counts are
identical. With `--baseline head`, the baseline is the changed-blocks scoring with the head after
the CNN run whole (before the LSTM was resumed at the changed blocks), against the LSTM resumed.

    nice -n 10 .venv/bin/python benchmarks/pixel_blockwise.py [--model emodb-paper] [--n 4] [--th 1 5 10]
        [--max-iter 20] [--baseline whole|head]"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="emodb-paper")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--th", type=int, nargs="+", default=[1, 5, 10])
    ap.add_argument("--max-iter", type=int, default=20)
    ap.add_argument("--baseline", choices=["whole", "head"], default="whole")
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from ser_core.attacks import get_attack
    from ser_core.data.held_out import balanced_order, bundle_test_set
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load(args.model)
    b.configure_onnx(threads=1)
    ts = bundle_test_set(b)
    x = ts.x[np.sort(balanced_order(ts)[:args.n])]

    from ser_core.attacks.features.blockwise import BlockScorer
    scorer = BlockScorer.for_bundle(b)
    lstm = scorer.lstm if scorer is not None else None

    def run(th, blockwise):
        attack = get_attack("pixel", b, th=th, max_iter=args.max_iter)
        attack.blockwise = blockwise or args.baseline == "head"
        if scorer is not None:
            scorer.lstm = lstm if blockwise else None  # the head whole, for --baseline head
        t = time.process_time()
        r = attack(x)
        return r, time.process_time() - t
    run(1, True), run(1, False)  # warm: both sessions built outside the timing
    for th in args.th:
        whole, cpu_whole = run(th, False)
        parts, cpu_parts = run(th, True)
        same = (np.array_equal(whole.x_adv, parts.x_adv) and np.array_equal(whole.adv_probs, parts.adv_probs)
                and np.array_equal(whole.queries, parts.queries))
        print(json.dumps({"model": args.model, "th": th, "examples": args.n, "queries": int(whole.queries.sum()),
                          "flipped": int(whole.flipped.sum()), "cpu_s_whole_graph": round(cpu_whole, 2),
                          "cpu_s_changed_blocks": round(cpu_parts, 2), "ratio": round(cpu_parts / cpu_whole, 3),
                          "identical": bool(same)}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
