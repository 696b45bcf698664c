"""Cost of the two visitor features at their caps, through the service as the app calls it:
/timeline on 10 s and 60 s (the cap) of an example's speech looped, /explain on 3 s and 15 s
(the cap). Prints windows or model evaluations and the median seconds of a few runs (the first,
warm-up run left out).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/timeline_explain.py [--model emodb] [--runs 3]"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ser_core.audio.decode import load_audio  # noqa: E402
from ser_core.serving import service  # noqa: E402

CLIP = REPO / "examples" / "ravdess-happiness-actor02f.wav"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="emodb")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args(argv)
    y = load_audio(CLIP)
    with tempfile.TemporaryDirectory() as tmp:
        cases = [("timeline", 10.0), ("timeline", service.MAX_TIMELINE_SECONDS),
                 ("explain", 3.0), ("explain", service.MAX_EXPLAIN_SECONDS)]
        for what, seconds in cases:
            path = Path(tmp) / f"{what}-{seconds:g}.wav"
            sf.write(str(path), np.resize(y, int(seconds * 16000)), 16000, subtype="PCM_16")
            fn = getattr(service, what)
            times, out = [], None
            for _ in range(a.runs + 1):
                t0 = time.perf_counter()
                out = fn(str(path), a.model, out_dir=tmp)
                times.append(time.perf_counter() - t0)
            size = (f"{len(out.result['windows'])} windows" if what == "timeline"
                    else f"{out.result['evaluations']} model evaluations")
            print(f"/{what:8s} {seconds:5.1f} s clip: {size:24s} median {statistics.median(times[1:]):.2f} s "
                  f"(runs {', '.join(f'{t:.2f}' for t in times[1:])})", flush=True)


if __name__ == "__main__":
    main()
