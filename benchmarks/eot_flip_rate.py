"""Auto-PGD on the waveform with and without expectation over rooms (EOT): verified flip rate
digitally and after held-out rooms, and CPU seconds a clip. Resumable (one JSON line per clip,
SNR and mode; rows already in --out are skipped).

A clip counts as flipped after a room when its adversarial recording is decided differently from
its clean recording in the same held-out room (ser_core.attacks.over_the_air.after_rooms); each
clip is played in --rooms held-out rooms (clip i in rooms i, i+1, ...), so the after-room figure
is over clip x room pairs (pairs of one clip are not independent: read its interval as a guide).

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/eot_flip_rate.py --model emodb --clips 10 \\
        --snr 20 30 --eot 0 4 --rooms 4 --out reports/over-the-air/eot-flip-rate.jsonl
    (the same with --eot 4 --eot-space room+digital for the rows that keep the digital clip in every step,
    and with --eot 0 --shrink 0 for plain flips kept at the full budget)"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="emodb")
    p.add_argument("--clips", type=int, default=10)
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 30.0])
    p.add_argument("--eot", type=int, nargs="+", default=[0, 4], help="transforms a step (0: plain Auto-PGD)")
    p.add_argument("--eot-space", default="room", help="room, or room+digital (the digital clip one row a step)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--shrink", type=int, default=None, help="Auto-PGD's shrink steps (default: its own, 4; "
                   "0 keeps a plain flip at the full budget, as EOT does)")
    p.add_argument("--rooms", type=int, default=4, help="held-out rooms each clip is scored in")
    p.add_argument("--out", type=Path, default=Path("reports/over-the-air/eot-flip-rate.jsonl"))
    p.add_argument("--summary", action="store_true", help="print the table of --out and exit")
    args = p.parse_args(argv)
    if not args.summary:
        run(args)
    print(table(args.out))


def run(args):
    import torch
    from ser_core.attacks import get_attack
    from ser_core.attacks.over_the_air import after_rooms
    from ser_core.audio.decode import load_audio
    from ser_core.audio.room import held_out_rooms
    from ser_core.data.held_out import held_out_clips
    from ser_core.models.bundle import ModelBundle
    torch.set_num_threads(1)
    bundle = ModelBundle.load(args.model)
    bundle.configure_onnx(threads=1)
    utts = held_out_clips(bundle, args.clips, seed=0)
    rooms = held_out_rooms()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["snr_db"], r["eot"], r.get("eot_space", "room"), r.get("shrink"), r["clip"]) for r in _rows(args.out)}
    for snr in args.snr:
        for eot in args.eot:
            for u in utts:
                space = args.eot_space if eot else "room"
                if (snr, eot, space, args.shrink, u.name) in done:
                    continue
                y = load_audio(u.path, bundle.feature_config.sample_rate)
                params = {"snr_db": snr, "steps": args.steps, **({"eot": eot, "eot_space": space} if eot else {}),
                          **({"shrink": args.shrink} if args.shrink is not None else {})}
                t0 = time.process_time()
                r = get_attack("apgd", bundle, **params)([y])
                cpu = time.process_time() - t0
                scored = [after_rooms(bundle, r.x, r.x_adv, rooms, offset=j)["rows"][0] for j in range(args.rooms)]
                row = {"model": bundle.name, "weights_sha": bundle.config.get("weights_sha"), "clip": u.name,
                       "snr_db": snr, "eot": eot, "eot_space": space, "shrink": args.shrink,
                       "steps": args.steps, "digital_flipped": bool(r.flipped[0]),
                       "measured_snr_db": round(float(r.extra["snr_db"][0]), 3), "cpu_seconds": round(cpu, 3),
                       "iterations": r.extra["run"][0].get("iterations"), "rooms": scored,
                       "room_flipped": sum(s["flipped"] for s in scored)}
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps({k: row[k] for k in ("clip", "snr_db", "eot", "digital_flipped", "room_flipped",
                                                      "cpu_seconds")}), flush=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.is_file() else []


def table(path: Path) -> str:
    """Markdown: per model, SNR and mode, flips digitally and after held-out rooms (95 % Wilson)."""
    import numpy as np
    from ser_core.stats import wilson
    rows = _rows(path)
    out = ["| model | SNR dB | attack | n clips | verified digital flips | flips after held-out rooms (clip x room pairs) "
           "| median CPU s / clip |", "|---|---|---|---|---|---|---|"]
    fmt = (lambda k, n: f"{k}/{n} ({k / n:.0%}, {wilson(k, n)[0]:.0%}-{wilson(k, n)[1]:.0%})" if n else "-")
    group = (lambda r: (r["model"], r["snr_db"], r["eot"], r.get("eot_space", "room"),
                        -1 if r.get("shrink") is None else r["shrink"]))
    for key in sorted({group(r) for r in rows}):
        rs = [r for r in rows if group(r) == key]
        n, pairs = len(rs), sum(len(r["rooms"]) for r in rs)
        name = ("apgd" if key[2] == 0 else f"apgd eot={key[2]} ({key[3]})") + (" shrink=0" if key[4] == 0 else "")
        out.append(f"| {key[0]} | {key[1]:g} | {name} | {n} | {fmt(sum(r['digital_flipped'] for r in rs), n)} | "
                   f"{fmt(sum(r['room_flipped'] for r in rs), pairs)} | "
                   f"{np.median([r['cpu_seconds'] for r in rs]):.2f} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
