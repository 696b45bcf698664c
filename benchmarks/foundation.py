"""Foundation benchmarks, printed as JSON lines (one run; compare ratios within it).

1. Feature extraction speed: clips per second, with and without augmentation, on the first N
   clips of a corpus (fresh cache folder, all cores).
2. Inference: ONNX Runtime vs torch, seconds per call and per clip at batch 1 and batch 64.

    python benchmarks/foundation.py --data-dir ../shared/data/emodb --model emodb
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def extraction(data_dir, corpus, n):
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    c = read_corpus(corpus, data_dir)
    c.utterances = c.utterances[:n]
    out = {}
    for aug in (False, True):
        with tempfile.TemporaryDirectory() as d:
            os.environ["SER_CACHE_DIR"] = d
            t = time.perf_counter()
            table = build_table(c, augmentation=aug, progress=False)
            s = time.perf_counter() - t
        out["with" if aug else "without"] = {"clips": n, "chunks": len(table), "seconds": round(s, 2),
                                             "clips_per_second": round(n / s, 2)}
    return out


def inference(model_name, repeats=20):
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load(model_name)
    model, sess = b.torch_model(), b.onnx_session()
    out = {}
    for batch in (1, 64):
        x = np.random.default_rng(0).standard_normal((batch,) + b.feature_config.input_shape).astype(np.float32)
        times = {}
        for name, fn in (("torch", lambda: model(torch.from_numpy(x))),
                         ("onnxruntime", lambda: sess.run(["probabilities"], {"features": x}))):
            with torch.no_grad():
                fn()
                t = time.perf_counter()
                for _ in range(repeats if batch == 1 else max(2, repeats // 10)):
                    fn()
                times[name] = (time.perf_counter() - t) / (repeats if batch == 1 else max(2, repeats // 10))
        out[f"batch_{batch}"] = {k: {"seconds_per_call": round(v, 5), "seconds_per_clip": round(v / batch, 5)}
                                 for k, v in times.items()}
        out[f"batch_{batch}"]["torch_over_onnxruntime"] = round(times["torch"] / times["onnxruntime"], 2)
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--corpus", default="emodb")
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--model", default="emodb")
    a = ap.parse_args()
    print(json.dumps({"threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                      "extraction": extraction(a.data_dir, a.corpus, a.clips)}))
    print(json.dumps({"inference": inference(a.model)}))
