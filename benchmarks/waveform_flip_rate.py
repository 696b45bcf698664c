"""Verified flip rate of waveform attacks against SNR on clips of speakers a model never trained on.

For each bundle: n clips of the speakers not in config["split"]["speakers"]["train"], balanced by
gender and class and seeded (ser_core.data.held_out.held_out_clips). Each budgeted attack
(pgd, apgd, ...) runs once per clip and SNR; C&W (a minimisation attack) runs once per clip and
counts as a flip at every SNR at or below the SNR of its verified adversarial WAV. A flip counts
only when the serving path's decision on the written 16-bit WAV differs from the clean one.
Torch and ONNX Runtime run on --threads threads; seconds are CPU seconds of the attack
(process time: on one thread, the time it takes on an idle core), given per clip and per 3 s
chunk. One JSON line per attacked clip (a file already there is resumed); prints a markdown
table: verified flips k/n with the Wilson 95 % interval, median CPU seconds per clip (per chunk),
per corpus x attack x SNR. A run the attack refuses (a budget under one 16-bit step for a quiet
clip: Linf at 40 dB) is written with its error and counts as no flip.

    OMP_NUM_THREADS=1 nice -n 15 .venv/bin/python benchmarks/waveform_flip_rate.py \\
        --models emodb emovo ravdess --clips 30 --snr 20 30 40 --attacks pgd apgd cw \\
        --threads 1 --out reports/waveform_flip_rate.jsonl

Attack specs: a registered waveform attack name with optional `:key=value` parameters, e.g.
`apgd:budget=linf` or `pgd:steps=100`; --steps sets the steps of pgd and apgd (40, the app's),
--cw-steps and --cw-binary-steps C&W's."""
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

from ser_core.models.bundle import ModelBundle  # noqa: E402
from ser_core.errors import ParameterError  # noqa: E402
from ser_core.stats import wilson  # noqa: E402
from ser_core.data.held_out import held_out_clips  # noqa: E402
from ser_core.attacks import registry  # noqa: E402
from ser_core.attacks.clip import attack_clip  # noqa: E402
from ser_core.audio.chunkmap import chunk_index_map  # noqa: E402


def parse_spec(spec: str) -> tuple[str, dict]:
    """'apgd:budget=linf:steps=20' -> ('apgd', {'budget': 'linf', 'steps': '20'})."""
    name, *pairs = spec.split(":")
    if name not in registry("waveform"):
        raise SystemExit(f"unknown attack {name!r} (accepted: {', '.join(registry('waveform'))})")
    params = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        params[key] = value
    return name, params


def single_threaded(bundle, threads: int):
    """Give the bundle an ONNX Runtime session limited to `threads` threads."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    bundle._session = ort.InferenceSession(str(bundle.onnx_path()), opts, providers=["CPUExecutionProvider"])


def runs(specs, snrs, args) -> list[tuple[str, str, dict, float | None]]:
    """(spec, attack, params, snr) in run order; a minimisation attack once per clip without an
    SNR (it counts at every SNR its verified WAV reaches)."""
    out = []
    for spec in specs:
        name, extra = parse_spec(spec)
        cls = registry("waveform")[name]
        if cls.goal == "minimisation":
            params = {"steps": args.cw_steps, "binary_steps": args.cw_binary_steps} if name == "cw" else {}
            out.append((spec, name, {**params, **extra}, None))
        else:
            base = {"steps": args.steps} if "steps" in cls.params else {}
            if name == "pgd":
                base["step_fraction"] = 0.1  # the app's PGD settings (service.WAVEFORM_APP_SETTINGS)
            out += [(spec, name, {**base, **extra, "snr_db": float(s)}, float(s)) for s in snrs]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["emodb", "emovo", "ravdess"])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--clips", type=int, default=30, help="held-out clips per model (balanced by gender and class)")
    ap.add_argument("--snr", type=float, nargs="+", default=[20.0, 30.0, 40.0])
    ap.add_argument("--attacks", nargs="+", default=["pgd", "apgd", "cw"])
    ap.add_argument("--steps", type=int, default=40, help="gradient steps of pgd and apgd")
    ap.add_argument("--cw-steps", type=int, default=20)
    ap.add_argument("--cw-binary-steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("waveform_flip_rate.jsonl"))
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)

    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()] \
        if args.out.is_file() else []
    # a row counts for the weights it was measured on: a retrained model starts afresh
    done = {(r["model"], r.get("weights"), r["clip"], r["spec"], r["snr_requested"]) for r in rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plan = runs(args.attacks, args.snr, args)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ser-flip-rate-") as tmp:
        for name in args.models:
            bundle = ModelBundle.load(name)
            single_threaded(bundle, args.threads)
            bundle.torch_model()  # loaded before the clock starts: the app holds it loaded too
            for utt in held_out_clips(bundle, args.clips, args.seed, args.data):
                for spec, attack, params, snr in plan:
                    if (bundle.name, bundle.config["weights_sha"], utt.path.name, spec, snr) in done:
                        continue
                    cpu, wall = time.process_time(), time.perf_counter()
                    head = {"model": bundle.name, "weights": bundle.config["weights_sha"],
                            "corpus": bundle.config["corpus"], "clip": utt.path.name,
                            "speaker": utt.speaker, "gender": utt.gender, "emotion": utt.emotion, "spec": spec,
                            "snr_requested": snr}
                    try:
                        r = attack_clip(bundle, utt.path, attack, params, out_dir=tmp, domain="waveform")
                    except ParameterError as exc:  # e.g. a budget under one 16-bit step: no attack, no flip
                        row = {**head, "error": str(exc), "verified_flipped": False, "snr_db": None,
                               "cpu_seconds": 0.0, "chunks": 1, "perceptual": {}}
                        with args.out.open("a") as fh:
                            fh.write(json.dumps(row) + "\n")
                        rows.append(row)
                        print(f"{bundle.name} {utt.path.name} {spec} {snr}: not run ({exc})", flush=True)
                        continue
                    cpu = time.process_time() - cpu
                    row = {**head, "cpu_seconds": round(cpu, 3),
                           "wall_seconds": round(time.perf_counter() - wall, 3),
                           "clip_seconds": round(len(r.adversarial_audio) / r.sample_rate, 3),
                           "chunks": int(chunk_index_map(r.adversarial_audio, bundle.feature_config).shape[0]),
                           **r.to_dict()}
                    row.pop("wav_path")
                    with args.out.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    rows.append(row)
                    print(f"{bundle.name} {utt.path.name} {spec} {snr}: {r.label_before} -> {r.label_after} "
                          f"verified={r.flipped} SNR {row['snr_db']} dB, {cpu:.2f} CPU s; "
                          f"{(time.perf_counter() - t_start) / 60:.1f} min", flush=True)
    print()
    current = {b.name: b.config["weights_sha"] for b in map(ModelBundle.load, args.models)}
    models = list(current)
    rows = [r for r in rows if current.get(r["model"]) == r.get("weights")]
    print(table(rows, args.snr, args.attacks, models))
    print()
    print(masking_table(rows, args.snr, args.attacks, models))
    print()
    print(misses_table(rows, args.snr, args.attacks, models))


def flipped_at(row: dict, snr: float) -> bool:
    """A verified flip within an SNR budget: budgeted rows at their own SNR, C&W rows whenever
    their verified WAV is at least that SNR."""
    if not row["verified_flipped"]:
        return False
    if row["snr_requested"] is not None:
        return True
    return row["snr_db"] is not None and row["snr_db"] >= snr - 1e-9


def table(rows, snrs, specs, models) -> str:
    """Markdown: per corpus and attack, verified flips at each SNR with Wilson 95 % intervals and
    median CPU seconds per clip and per 3 s chunk."""
    head = "| corpus | attack | " + " | ".join(f"{s:g} dB" for s in snrs) + \
           " | median CPU s / clip (/ 3 s chunk) |"
    lines = [head, "|" + "---|" * (3 + len(snrs))]
    for model in models:
        for spec in specs:
            sel = [r for r in rows if r["model"] == model and r["spec"] == spec]
            if not sel:
                continue
            cells = []
            for s in snrs:
                at = [r for r in sel if r["snr_requested"] in (None, s)]
                k, n = sum(flipped_at(r, s) for r in at), len(at)
                lo, hi = wilson(k, n)
                cells.append(f"{k}/{n} ({k / n:.0%}, {lo:.0%}-{hi:.0%})" if n else "-")
            ran = [r for r in sel if "error" not in r]
            cpu = np.median([r["cpu_seconds"] for r in ran])
            per_chunk = np.median([r["cpu_seconds"] / r["chunks"] for r in ran])
            refused = len(sel) - len(ran)
            lines.append(f"| {sel[0]['corpus']} | {spec} | " + " | ".join(cells) + f" | {cpu:.2f} ({per_chunk:.2f})"
                         + (f"; {refused} run(s) refused: budget under one 16-bit step |" if refused else " |"))
    return "\n".join(lines)


def masking_table(rows, snrs, specs, models) -> str:
    """Markdown: per corpus, attack and SNR, over the verified flips, the median fraction of STFT
    cells where the written perturbation is above the clip's masking threshold and the median
    95th-percentile perturbation-to-mask ratio (masking.py)."""
    lines = ["| corpus | attack | " + " | ".join(f"{s:g} dB: cells over mask, PMR p95" for s in snrs) + " |",
             "|" + "---|" * (2 + len(snrs))]
    for model in models:
        for spec in specs:
            sel = [r for r in rows if r["model"] == model and r["spec"] == spec and r.get("perceptual")]
            if not sel:
                continue
            cells = []
            for s in snrs:
                ok = [r["perceptual"] for r in sel if r["snr_requested"] in (None, s) and flipped_at(r, s)]
                cells.append(f"{np.median([p['mask_exceeded_fraction'] for p in ok]):.1%}, "
                             f"{np.median([p['pmr_p95_db'] for p in ok]):+.1f} dB" if ok else "-")
            lines.append(f"| {sel[0]['corpus']} | {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def misses_table(rows, snrs, specs, models) -> str:
    """Markdown: per corpus, attack and SNR, the white-box model's clip margin where the attack
    ended without a flip (median and range). Margins that stay put when steps, loss or restarts
    change say the budget, not the optimiser, stopped the attack."""
    lines = ["| corpus | attack | " + " | ".join(f"{s:g} dB: misses, final margin median (range)" for s in snrs)
             + " |", "|" + "---|" * (2 + len(snrs))]
    for model in models:
        for spec in specs:
            sel = [r for r in rows if r["model"] == model and r["spec"] == spec
                   and r["snr_requested"] is not None and "error" not in r]
            if not any("final_margin" in (r.get("extra") or {}) for r in sel):
                continue  # an attack that does not report its margin (pgd)
            cells = []
            for s in snrs:
                m = [r["extra"]["final_margin"] for r in sel if r["snr_requested"] == s
                     and not r["verified_flipped"] and "final_margin" in (r.get("extra") or {})]
                cells.append(f"{len(m)}: {np.median(m):.2f} ({min(m):.2f}-{max(m):.2f})" if m else "-")
            lines.append(f"| {sel[0]['corpus']} | {spec} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
