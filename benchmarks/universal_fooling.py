"""Fooling rates of universal waveform perturbations on speakers the model never heard, with
95 % Wilson intervals: each perturbation of a model's folder (models/<name>/universal-*.npz, or
--files) applied at each --snr to every unseen-speaker clip of the model's own corpus, digitally
and after one held-out room per clip (clip i in held-out room i mod 16), and to --other-clips
clips of each other corpus (digitally). Resumable: rows already in --out are skipped.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/universal_fooling.py --models emodb emovo ravdess \\
        --snr 20 25 30 --other-clips 60 --out reports/over-the-air/universal-fooling.jsonl"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
CORPORA = ("emodb", "emovo", "ravdess")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(CORPORA))
    p.add_argument("--files", nargs="*", type=Path, default=None, help="perturbation files (default: the models' own)")
    p.add_argument("--snr", type=float, nargs="+", default=[20.0, 25.0, 30.0])
    p.add_argument("--other-clips", type=int, default=60)
    p.add_argument("--no-rooms", action="store_true")
    p.add_argument("--out", type=Path, default=Path("reports/over-the-air/universal-fooling.jsonl"))
    p.add_argument("--summary", action="store_true", help="print the table of --out and exit")
    args = p.parse_args(argv)
    if not args.summary:
        run(args)
    print(table(args.out))


def run(args):
    import torch
    from ser_core.attacks.over_the_air import fooling_rate, unseen_clips
    from ser_core.attacks.universal import UniversalPerturbation
    from ser_core.models.bundle import ModelBundle
    torch.set_num_threads(1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = {(r["model"], r["file"], r["snr_db"], r["corpus"]) for r in _rows(args.out)}
    for name in args.models:
        bundle = ModelBundle.load(name)
        bundle.configure_onnx(threads=1)
        files = [f for f in (args.files or sorted(Path(bundle.folder).glob("universal-*.npz")))
                 if UniversalPerturbation.load(f).meta.get("model") == bundle.name]
        own = bundle.config["corpus"]
        for corpus in (own,) + tuple(c for c in CORPORA if c != own):
            clips, before = None, None
            for f in files:
                pert = UniversalPerturbation.load(f)
                for snr in args.snr if corpus == own else [pert.snr_db]:
                    key = (bundle.name, f.name, snr, corpus)
                    if key in done:
                        continue
                    if clips is None:
                        clips, _ = unseen_clips(bundle, None if corpus == own else args.other_clips, 0, corpus=corpus)
                        before = [bundle.predict_clip(y, 16000).label for y in clips]
                    r = fooling_rate(bundle, pert, clips, snr, rooms=corpus == own and not args.no_rooms, before=before)
                    row = {"model": bundle.name, "file": f.name, "crafted_snr_db": pert.snr_db, "corpus": corpus,
                           "speakers": "unseen" if corpus == own else "all", "meta": pert.meta, **r}
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    print(json.dumps({k: row[k] for k in ("model", "file", "snr_db", "corpus", "fooled")}), flush=True)


def _rows(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()] if path.is_file() else []


def _fmt(d: dict | None) -> str:
    if not d:
        return "-"
    lo, hi = d["wilson95"]
    return f"{d['k']}/{d['n']} ({d['rate']:.0%}, {lo:.0%}-{hi:.0%})"


def table(path: Path) -> str:
    rows = _rows(path)
    out = ["| model | perturbation (crafted at) | applied at, dB | clips of | fooled (decision changed) | "
           "target reached | fooled after a held-out room |", "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["model"], r["file"], r["corpus"] != r["model"], r["corpus"], r["snr_db"])):
        who = f"{r['corpus']} unseen speakers" if r["speakers"] == "unseen" else f"{r['corpus']} (other corpus)"
        out.append(f"| {r['model']} | {r['file']} | {r['snr_db']:g} | {who} | {_fmt(r['fooled'])} | "
                   f"{_fmt(r.get('target_reached'))} | {_fmt(r.get('after_room'))} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
