"""Verified success of waveform attacks against SNR, per corpus and gender.

On a small gender-balanced set of clips of each bundle's held-out test speakers
(config["split"]["speakers"]["test"]), runs PGD at each requested SNR, the Carlini-Wagner L2
minimisation (the SNR it needed) and the black-box random search, and counts a clip as fooled
only when the serving path's decision on the written 16-bit WAV differs from the clean one.
Writes one JSON line per attacked clip and prints a table.

    nice -n 15 .venv/bin/python benchmarks/waveform_snr.py --models emodb --clips 4 \
        --out /tmp/waveform_snr.jsonl"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ser_core.bundle import ModelBundle  # noqa: E402
from ser_core.corpora import read_corpus  # noqa: E402
from ser_core.waveform import attack_waveform_clip  # noqa: E402


def test_clips(bundle, data_dir: Path, per_gender: int, seed: int):
    """Up to per_gender clips of each gender from the bundle's test speakers, seeded."""
    corpus = read_corpus(bundle.config["corpus"], data_dir / bundle.config["corpus"])
    speakers = set(bundle.config["split"]["speakers"]["test"])
    rng = np.random.default_rng(seed)
    picked = []
    for gender in ("male", "female"):
        utts = [u for u in corpus.utterances if u.speaker in speakers and u.gender == gender]
        picked += [utts[i] for i in sorted(rng.permutation(len(utts))[:per_gender])]
    return picked


def runs(args):
    yield from (("pgd", {"snr_db": s, "steps": args.pgd_steps, "step_fraction": 0.1}) for s in args.snr)
    yield "cw", {"steps": args.cw_steps, "binary_steps": args.cw_binary_steps}
    yield "square", {"snr_db": args.square_snr, "max_queries": args.square_queries}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["emodb"], help="bundle names or folders")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--clips", type=int, default=4, help="clips per model (half male, half female)")
    ap.add_argument("--snr", type=float, nargs="+", default=[20, 30, 40, 50], help="PGD budgets, dB")
    ap.add_argument("--pgd-steps", type=int, default=20)
    ap.add_argument("--cw-steps", type=int, default=20)
    ap.add_argument("--cw-binary-steps", type=int, default=3)
    ap.add_argument("--square-snr", type=float, default=30.0)
    ap.add_argument("--square-queries", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("waveform_snr.jsonl"))
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(args.out, "w") as f, tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            bundle = ModelBundle.load(name)
            for utt in test_clips(bundle, args.data, args.clips // 2, args.seed):
                for attack, params in runs(args):
                    r = attack_waveform_clip(bundle, utt.path, attack, params, out_dir=tmp)
                    row = {"corpus": bundle.config["corpus"], "gender": utt.gender, "speaker": utt.speaker,
                           "clip": utt.path.name, "emotion": utt.emotion, **r.to_dict()}
                    row.pop("wav_path")
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    rows.append(row)
                    print(f"{name} {utt.path.name} {attack} {params}: {r.label_before} -> {r.label_after} "
                          f"verified={r.verified_flipped} snr={r.snr_db:.1f} dB {r.seconds:.1f} s", flush=True)
    print_table(rows)


def setting(row) -> str:
    p = row["params"]
    if row["attack"] == "pgd":
        return f"pgd snr>={p['snr_db']:g}"
    if row["attack"] == "square":
        return f"square snr>={p['snr_db']:g} q<={p['max_queries']}"
    return "cw (min-norm)"


def print_table(rows):
    """Verified success rate per setting, corpus and gender; for C&W also the median SNR needed."""
    print(f"\n{'corpus':8} {'setting':28} {'gender':7} {'clips':>5} {'verified':>8} {'rate':>5} "
          f"{'unverified':>10} {'med SNR':>8} {'med q':>6} {'med s':>6}")
    keys = sorted({(r["corpus"], setting(r)) for r in rows})
    for corpus, s in keys:
        for g in ("male", "female", "all"):
            sel = [r for r in rows if r["corpus"] == corpus and setting(r) == s and g in ("all", r["gender"])]
            if not sel:
                continue
            ok = [r for r in sel if r["verified_flipped"]]
            # flipped by the attack's own view but not on the written WAV
            lost = sum(r["flipped_before_quantisation"] and not r["verified_flipped"] for r in sel)
            snr = np.median([r["snr_db"] for r in ok]) if ok else float("nan")
            print(f"{corpus:8} {s:28} {g:7} {len(sel):5d} {len(ok):8d} {len(ok) / len(sel):5.2f} "
                  f"{lost:10d} {snr:8.1f} {np.median([r['queries'] for r in sel]):6.0f} "
                  f"{np.median([r['seconds'] for r in sel]):6.1f}")


if __name__ == "__main__":
    main()
