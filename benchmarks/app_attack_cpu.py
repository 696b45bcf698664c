"""CPU seconds of the app's default attack request on the example clip, in this process: the
same `ser_core.serving.attack.run_attack` the app's /attack calls (Auto-PGD on the waveform at
the first preset, 30 dB SNR, 40 steps; decode, attack, verified WAV, masking report, images).
Threads as the app runs (torch's and ONNX Runtime's defaults) unless --threads N sets torch's
and ONNX Runtime's (without spinning); warmed up; process CPU time (time.process_time, all
threads) per request, so a busy machine inflates wall time but hardly these figures.

    nice -n 10 .venv/bin/python benchmarks/app_attack_cpu.py [--runs 9] [--model emodb] [--threads 1]
        [--profile] [--clip examples/ravdess-fear-actor01m.wav]

--profile prints cProfile's top functions by cumulative time over the runs (and the number of
`MaskingThreshold.of` and librosa feature calls per request)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLIP = REPO / "examples" / "ravdess-fear-actor01m.wav"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=9)
    ap.add_argument("--model", default="emodb")
    ap.add_argument("--clip", default=str(CLIP))
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--threads", type=int, help="torch and ONNX Runtime threads (default: as the app, their defaults)")
    args = ap.parse_args(argv)
    from ser_core.serving.attack import run_attack
    from ser_core.serving.catalogue import default_preset, get_bundle
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)
        get_bundle(args.model).configure_onnx(threads=args.threads)
    attack, label, params = default_preset()

    def request():
        with tempfile.TemporaryDirectory() as d:
            return run_attack(args.clip, args.model, attack, params, out_dir=d).result

    for _ in range(2):  # warm: sessions, torch model, librosa's first calls, matplotlib
        request()
    prof = None
    if args.profile:
        import cProfile
        prof = cProfile.Profile()
        prof.enable()
    cpu, wall, outs = [], [], []
    for _ in range(args.runs):
        t, w = time.process_time(), time.perf_counter()
        outs.append(request())
        cpu.append(time.process_time() - t)
        wall.append(time.perf_counter() - w)
    if prof is not None:
        prof.disable()
        import pstats
        st = pstats.Stats(prof)
        calls = {f"{Path(k[0]).name}:{k[2]}": v[1] for k, v in st.stats.items()
                 if k[2] in ("of", "log_mel", "clip_features", "melspectrogram", "_frame_threshold")}
        print(json.dumps({"calls_per_request": {k: v / args.runs for k, v in calls.items()}}))
        st.sort_stats("cumulative").print_stats(30)
    r = outs[0]
    print(json.dumps({"attack": attack, "preset": label, "clip": Path(args.clip).name, "runs": args.runs, "threads": args.threads or "app defaults",
                      "cpu_s_median": round(statistics.median(cpu), 3), "cpu_s_min": round(min(cpu), 3),
                      "cpu_s_max": round(max(cpu), 3), "wall_s_median": round(statistics.median(wall), 3),
                      "flipped": [o["flipped"] for o in outs].count(True), "queries": r["queries"],
                      "snr_db": r.get("snr_db"), "perceptual": r.get("perceptual")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
