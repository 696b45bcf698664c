"""Pixel (th 10, 20 generations) on the first 2 of emodb-paper's balanced order: ONNX Runtime's
default session (one intra-op thread per core, spinning) against one thread without spinning
(what --threads 1 and a 1-CPU Ray task now use). torch: one thread in both.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pixel_session.py"""
import json, sys, time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
torch.set_num_threads(1)
from ser_core.models.bundle import ModelBundle
from ser_core.attacks import get_attack
from ser_core.data.held_out import bundle_test_set, balanced_order
b = ModelBundle.load("emodb-paper")
ts = bundle_test_set(b)
x = ts.x[np.sort(balanced_order(ts)[:2])]
res = {}
for label, threads in (("default session", None), ("1 thread, no spinning", 1), ("default session (again)", None), ("1 thread, no spinning (again)", 1)):
    b.configure_onnx(threads=threads)
    b.predict_features(x)  # session built outside the timing
    t, w = time.process_time(), time.perf_counter()
    r = get_attack("pixel", b, th=10, max_iter=20)(x)
    res[label] = r
    print(json.dumps({"session": label, "cpu_s": round(time.process_time() - t, 2), "wall_s": round(time.perf_counter() - w, 2),
                      "queries": r.queries.tolist(), "flipped": r.flipped.tolist()}), flush=True)
a, c = res["default session"], res["1 thread, no spinning"]
print("identical x_adv:", bool(np.array_equal(a.x_adv, c.x_adv)), "identical adv probabilities:", bool(np.array_equal(a.adv_probs, c.adv_probs)))
