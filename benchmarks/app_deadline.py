"""The Space's deadline on its longest requests: attacks at the Space's parameter caps on a 29 s
clip, through service.run_attack as the app calls it (60 s deadline).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/app_deadline.py [--model emodb] [--deadline 60]

Before the caps and the deadline, parameters within the attacks' ranges projected to hours on a
30 s clip (square with 100k queries 2 h, waveform cw 11.6 h). Prints, per attack, whether it
stopped early and why, the attack's seconds, the request's seconds, CPU seconds and queries."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CASES = [("cw", {"steps": 100, "binary_steps": 6}, "waveform"),
         ("square", {"max_queries": 1000, "snr_db": 40}, "waveform"),
         ("boundary", {"max_iter": 200}, "features")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emodb")
    ap.add_argument("--deadline", type=float, default=60.0)
    args = ap.parse_args()
    import torch
    torch.set_num_threads(1)
    from ser_core.serving import service
    from ser_core.audio.decode import load_audio
    tmp = Path(tempfile.mkdtemp(prefix="app-deadline-"))
    clip = tmp / "long.wav"
    sf.write(str(clip), np.resize(load_audio(sorted((REPO / "examples").glob("*.wav"))[0]), 29 * 16000),
             16000, subtype="PCM_16")
    for attack, params, domain in CASES:
        t0, c0 = time.perf_counter(), time.process_time()
        r = service.run_attack(str(clip), args.model, attack, params, domain, deadline_s=args.deadline,
                               out_dir=tmp / attack).result
        print(json.dumps({"attack": attack, "domain": domain, "params": params, "stopped_early": r["stopped_early"],
                          "stop_reason": r["stop_reason"], "attack_s": r["seconds"], "request_s": r["total_seconds"],
                          "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
                          "queries": r["queries"]}), flush=True)


if __name__ == "__main__":
    main()
