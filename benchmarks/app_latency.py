"""Latency of the Space's API on this machine, through gradio_client like any client.

    nice -n 15 .venv/bin/python benchmarks/app_latency.py [--runs 7] [--model emodb]

Starts `python app.py` on loopback (as tests/test_app_api.py does), warms it up, then times
/predict on a 3 s clip, /attack with its defaults (the page's: Auto-PGD on the waveform at 30 dB
SNR, 40 steps, verified on the written WAV; the row says whether it flipped: when it does not,
every step runs),
/attack with FGSM (eps 0.25) and BIM (eps 0.25, step 0.1, 100 iterations: the study's settings)
on the same clip, and /predict while a BIM attack runs (the two have separate queues). Prints
the median and range of the wall time per request, and for attacks the attack's own seconds
(without decoding, verification, listening copy and images). `--only waveform` times /predict
and the default waveform attack alone."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLIP = REPO / "examples" / "ravdess-fear-actor01m.wav"  # 1.9 s: one 3 s chunk (looped)
TARGETS = {"predict": 0.3, "waveform": 5.0, "fgsm": 1.5, "bim": 5.0}


def timed(fn, runs: int) -> tuple[list[float], list]:
    walls, outs = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        outs.append(fn())
        walls.append(time.perf_counter() - t0)
    return walls, outs


def row(name: str, walls: list[float], inner: list[float] | None = None) -> dict:
    r = {"request": name, "runs": len(walls), "median_s": round(statistics.median(walls), 3),
         "min_s": round(min(walls), 3), "max_s": round(max(walls), 3)}
    if inner:
        r["attack_median_s"] = round(statistics.median(inner), 3)
    key = name.split()[0]
    if key in TARGETS and "during" not in name:
        r["target_s"] = TARGETS[key]
        r["meets_target"] = r["median_s"] < TARGETS[key]
    print(json.dumps(r), flush=True)  # as measured: a slow run still leaves its first rows
    return r


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--model", default=os.environ.get("SER_TEST_MODEL", "emodb"))
    ap.add_argument("--only", choices=["waveform"], help="time /predict and the default waveform attack only")
    args = ap.parse_args(argv)
    from gradio_client import Client, handle_file
    from tests.test_app_api import running_app

    fgsm = json.dumps({"eps": 0.25})
    bim = json.dumps({"eps": 0.25, "eps_step": 0.1, "max_iter": 100})
    with running_app(args.model) as url:
        client = Client(url, verbose=False)
        clip = handle_file(str(CLIP))
        predict = lambda: client.predict(clip, args.model, api_name="/predict")  # noqa: E731
        attack = lambda p, a: client.predict(clip, args.model, a, p, "features", api_name="/attack")  # noqa: E731
        default_attack = lambda: client.predict(clip, args.model, api_name="/attack")  # noqa: E731
        for _ in range(2):  # warm: ONNX session, torch model, librosa's first calls
            predict()
            default_attack()
            if not args.only:
                attack(fgsm, "fgsm")
        rows = []
        walls, _ = timed(predict, args.runs)
        rows.append(row(f"predict ({CLIP.name})", walls))
        walls, outs = timed(default_attack, args.runs)
        r0 = outs[0][0]
        rows.append(row(f"waveform default: {r0['attack']} {r0['params'].get('snr_db')} dB x{r0['params'].get('steps')}, "
                        f"flipped {sum(o[0]['flipped'] for o in outs)}/{len(outs)}", walls,
                        [o[0]["seconds"] for o in outs]))
        if args.only:
            return report(rows)
        walls, outs = timed(lambda: attack(fgsm, "fgsm"), args.runs)
        rows.append(row("fgsm eps 0.25", walls, [o[0]["seconds"] for o in outs]))
        walls, outs = timed(lambda: attack(bim, "bim"), args.runs)
        rows.append(row("bim eps 0.25 step 0.1 x100", walls, [o[0]["seconds"] for o in outs]))
        # prediction while an attack holds the attack queue
        job = client.submit(clip, args.model, "bim", json.dumps({"eps": 0.25, "eps_step": 0.1,
                                                                 "max_iter": 100, "early_stop": False}),
                            "features", api_name="/attack")
        time.sleep(0.5)
        during = []
        while not job.done() and len(during) < args.runs:
            t0 = time.perf_counter()
            predict()
            during.append(time.perf_counter() - t0)
        job.result()
        if during:
            rows.append(row("predict during a bim attack", during))
    return report(rows)


def report(rows: list[dict]) -> int:
    print(f"\n{'request':34} {'median':>8} {'min':>7} {'max':>7} {'attack':>7}  target")
    for r in rows:
        print(f"{r['request']:34} {r['median_s']:8.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} "
              f"{r.get('attack_median_s', float('nan')):7.3f}  "
              f"{('< %.1f s: ' % r['target_s'] + ('met' if r['meets_target'] else 'MISSED')) if 'target_s' in r else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
