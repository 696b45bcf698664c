"""Verified success of waveform attacks against SNR, per corpus and gender.

A thin command line over ser_core.evaluation.waveform (the same code the evaluation's
waveform part runs): on a small gender-balanced set of clips of each bundle's held-out test
speakers, PGD at each requested SNR, the Carlini-Wagner L2 minimisation (the SNR it needed)
and the black-box random search; a clip counts as fooled only when the serving path's decision
on the written 16-bit WAV differs from the clean one. Writes one JSON line per attacked clip
(resuming a file already there) and prints a table.

    nice -n 15 .venv/bin/python benchmarks/waveform_snr.py --models emodb --clips 4 \
        --out /tmp/waveform_snr.jsonl"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ser_core.models.bundle import ModelBundle  # noqa: E402
from ser_core.evaluation.waveform import WaveformPlan, run_waveform, summarise  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["emodb"], help="speaker-protocol bundle names or folders")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--clips", type=int, default=4, help="clips per model (half male, half female)")
    ap.add_argument("--snr", type=float, nargs="*", default=[20, 30, 40, 50], help="PGD budgets, dB (none: no PGD)")
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--cw-steps", type=int, default=20, help="C&W Adam steps (0: leave C&W out)")
    ap.add_argument("--cw-binary-steps", type=int, default=3)
    ap.add_argument("--square-snr", type=float, nargs="*", default=[20.0, 30.0],
                    help="black-box budgets, dB (none: leave it out)")
    ap.add_argument("--square-queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("waveform_snr.jsonl"))
    args = ap.parse_args(argv)
    plan = WaveformPlan(max(1, args.clips // 2), tuple(args.snr), args.pgd_steps, args.cw_steps,
                        args.cw_binary_steps, tuple(args.square_snr), args.square_queries, args.seed)
    rows = run_waveform([ModelBundle.load(n) for n in args.models], args.out, plan, args.data, log=sys.stdout)
    print_table(rows)


def print_table(rows):
    """Verified success rate per setting, corpus and gender; for C&W also the median SNR needed."""
    print(f"\n{'corpus':8} {'setting':44} {'gender':7} {'clips':>5} {'verified':>8} {'rate':>5} {'95 % CI':>11} "
          f"{'unverified':>10} {'med SNR':>8} {'med q':>6} {'med s':>6}")
    for s in summarise(rows):
        snr = float("nan") if s["median_snr_db"] is None else s["median_snr_db"]
        print(f"{s['corpus']:8} {s['setting']:44} {s['subset']:7} {s['clips']:5d} {s['verified']:8d} {s['rate']:5.2f} "
              f"{s['rate_ci'][0]:5.2f}-{s['rate_ci'][1]:4.2f} {s['lost_to_rounding']:10d} {snr:8.1f} "
              f"{s['median_queries']:6.0f} {s['median_seconds']:6.1f}")


if __name__ == "__main__":
    main()
