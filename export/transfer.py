"""`transfer`: the source x target matrix of flips over the same held-out clips
(`ser_core.evaluation.transfer`): each clip attacked on a source (Auto-PGD on the waveform at
a fixed SNR, no shrink), written as a 16-bit WAV, decided by every target. Resumable: rows
already in --out are skipped, or re-attacked to score a target they lack (EmoDB's defended
bundles: --sources emodb-pgd-wave emodb-trades-wave, --targets ... emodb-resample).

    python -m export transfer run --clips 32 --snr 20 30 [--confidence 0] [--sources ...] [--targets ...] \\
        [--out reports/over-the-air/transfer.jsonl]
    python -m export transfer table [--out reports/over-the-air/transfer.jsonl]   # Markdown tables"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import emit

DEFAULT_OUT = Path("reports/over-the-air/transfer.jsonl")


def register(sub):
    from ser_core.evaluation.transfer import ALL_SOURCES, ALL_TARGETS, DEFAULT_MODELS, SOURCES, TARGETS
    p = sub.add_parser("transfer", help="source x target matrix of waveform flips over held-out clips")
    s = p.add_subparsers(dest="transfer_command", required=True)
    r = s.add_parser("run", help="attack the clips on every source and score them on every target")
    r.add_argument("--sources", nargs="+", default=list(SOURCES), choices=ALL_SOURCES,
                   help="default: every undefended model, the ensemble and the noise control")
    r.add_argument("--targets", nargs="+", default=list(TARGETS), choices=ALL_TARGETS,
                   help="default: every undefended model and the SVM; a row already in --out that lacks "
                        "one is re-attacked (same seed) and scored for it")
    r.add_argument("--corpora", nargs="+", default=list(DEFAULT_MODELS), choices=DEFAULT_MODELS,
                   help="clips of these corpora's held-out speakers")
    r.add_argument("--clips", type=int, default=24, help="clips per corpus (seeded draw; default 24)")
    r.add_argument("--snr", type=float, nargs="+", default=[20.0, 30.0], help="SNR budgets, dB (default 20 30)")
    r.add_argument("--confidence", type=float, default=0.0,
                   help="Auto-PGD stops once the source's clip margin is below -confidence (default 0: the "
                        "first verified flip)")
    r.add_argument("--steps", type=int, default=40)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--data-dir", type=Path, default=None)
    r.add_argument("--bundle", nargs="+", default=[], metavar="NAME=FOLDER",
                   help="read model NAME from FOLDER instead of models/NAME (e.g. the bundle older rows were "
                        "made with, so that re-attacking them reproduces their decisions)")
    r.add_argument("--out", type=Path, default=DEFAULT_OUT)
    r.set_defaults(func=run)
    t = s.add_parser("table", help="the matrices of --out as Markdown")
    t.add_argument("--out", type=Path, default=DEFAULT_OUT)
    t.set_defaults(func=table)


def run(args):
    import torch
    from ser_core.evaluation.transfer import run_transfer
    torch.set_num_threads(1)

    def log(row):
        print(json.dumps({k: row[k] for k in ("clip", "source", "snr_db", "source_flipped", "written_snr_db",
                                              "iterations", "cpu_seconds")}), file=sys.stderr, flush=True)
    n = run_transfer(args.out, args.sources, args.targets, args.corpora, args.snr, args.clips, args.seed, args.steps,
                     args.confidence, args.data_dir, log=log, folders=dict(b.split("=", 1) for b in args.bundle))
    emit({"rows_written": n, "out": str(args.out)})


def table(args):
    from ser_core.evaluation.transfer import read_rows
    from ser_core.evaluation.transfer import DEFENDED
    from ser_core.evaluation.transfer_report import (conditioned_table, cost_line, defended_table, matrix_table,
                                                     own_default_table, settings)
    rows = read_rows(args.out)
    for snr, conf in settings(rows):
        print(f"### {snr:g} dB, confidence {conf:g}\n\n{matrix_table(rows, snr, conf)}\n\n"
              f"Among the clips whose source decision flipped:\n\n{conditioned_table(rows, snr, conf)}\n\n"
              f"The clip's own corpus's default model:\n\n{own_default_table(rows, snr, conf)}\n\n"
              f"Median CPU s a clip (written SNR): {cost_line(rows, snr, conf)}\n")
        if any(t in r["adversarial"] for r in rows for t in DEFENDED):
            print(f"EmoDB clips, the defended bundles beside emodb:\n\n{defended_table(rows, snr, conf)}\n\n"
                  f"The same among the clips whose source decision flipped:\n\n"
                  f"{defended_table(rows, snr, conf, key='changed_given_source_flip')}\n")
