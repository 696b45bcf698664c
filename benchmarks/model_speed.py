"""CPU time of one forward and input-gradient pass of a shipped model, per model variant, in one run.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/model_speed.py [--model emodb-paper] [--batch 1 8 32]

What every white-box attack step costs. Variants: the training model (nn.LSTM, default memory
order), the unrolled LSTM, the unrolled LSTM with the channels-last CNN (what
`ModelBundle.torch_model()` hands out), and the gradient model the attacks differentiate
(`ModelBundle.gradient_model()`, ser_core/models/fast.py). Prints, per batch size, the median CPU
seconds of `--runs` passes and each variant's time divided by the training model's, plus the
largest logit difference and the gradients' cosine similarity against the training model."""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ser_core.models.bundle import ModelBundle  # noqa: E402


def variants(bundle):
    base = copy.deepcopy(bundle.torch_model())
    base.cnn.to(memory_format=torch.contiguous_format)
    base.channels_last = False
    plain = copy.deepcopy(base)
    plain.unroll_lstm = False
    return {"nn.LSTM": plain, "unrolled": base, "unrolled+channels_last": bundle.torch_model(),
            "gradient model": bundle.gradient_model()}


def one_pass(model, x):
    xa = x.clone().requires_grad_(True)
    logits = model(xa)
    (grad,) = torch.autograd.grad(logits[:, 0].sum() - logits[:, 1].sum(), xa)
    return logits.detach(), grad


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="emodb-paper")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    bundle = ModelBundle.load(args.model)
    models = variants(bundle)
    shape = bundle.feature_config.input_shape
    print(f"model {args.model}, {torch.get_num_threads()} torch thread(s), median of {args.runs} runs")
    for n in args.batch:
        x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(n))
        ref, rows = None, []
        for name, m in models.items():
            out = one_pass(m, x)  # warm-up
            times = []
            for _ in range(args.runs):
                t0 = time.process_time()
                one_pass(m, x)
                times.append(time.process_time() - t0)
            ref = ref or (out, statistics.median(times))
            rows.append({"batch": n, "variant": name, "cpu_s": round(statistics.median(times), 4),
                         "ratio": round(statistics.median(times) / ref[1], 3),
                         "max_logit_diff": float((out[0] - ref[0][0]).abs().max()),
                         "grad_cosine": round(float(torch.nn.functional.cosine_similarity(
                             out[1].flatten(), ref[0][1].flatten(), dim=0)), 6)})
        for r in rows:
            print(json.dumps(r))


if __name__ == "__main__":
    main()
