"""Waveform attacks in the evaluation: verified success against SNR, per corpus and gender.

The study attacks features; ser_core.attacks.waveform attacks the decoded samples of a whole clip and
counts a clip as fooled only when the serving path's decision on the written 16-bit WAV differs
from its clean decision (`ser_core.attacks.clip.attack_clip`, domain "waveform"; verify.py).
Here those attacks run over a gender-balanced, seeded set of clips of each speaker-protocol
bundle's held-out test speakers (`bundle.held_out_speakers`; the paper-protocol bundles have
no held-out speakers):
Linf PGD (Kurakin et al. 2017 / Madry et al. 2018) at a few SNR budgets, Carlini-Wagner L2
(Carlini & Wagner 2017), which reports the SNR it needed, and optionally the black-box random
search (Square Attack, Andriushchenko et al. 2020). One JSON line per attacked clip, resumable;
`summarise` turns them into rates with Wilson intervals and C&W's median needed SNR.
benchmarks/waveform_snr.py is a thin command line over `run_waveform`."""
from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_core.errors import ParameterError
from ser_core.data.held_out import GENDERS, data_root
from ser_core.stats import wilson


@dataclass(frozen=True)
class WaveformPlan:
    """clips_per_gender: clips of each gender per bundle; snrs: PGD budgets (dB, lowest SNR
    allowed); cw_steps 0 leaves C&W out; square_snrs: budgets of the black-box attack (empty:
    left out), each with at most square_queries serving-path queries."""

    clips_per_gender: int = 1
    snrs: tuple = (20.0, 30.0, 40.0)
    pgd_steps: int = 20
    cw_steps: int = 20
    cw_binary_steps: int = 3
    square_snrs: tuple = ()
    square_queries: int = 300
    seed: int = 0

    def runs(self) -> list[tuple[str, dict]]:
        """(waveform attack name, parameters) in run order."""
        out = [("pgd", {"snr_db": float(s), "steps": self.pgd_steps, "step_fraction": 0.1}) for s in self.snrs]
        if self.cw_steps:
            out.append(("cw", {"steps": self.cw_steps, "binary_steps": self.cw_binary_steps}))
        out += [("square", {"snr_db": float(s), "max_queries": self.square_queries}) for s in self.square_snrs]
        return out


WAVEFORM_PROFILES = {"quick": WaveformPlan(3, square_snrs=(20.0, 30.0)),
                     "full": WaveformPlan(10, snrs=(20.0, 30.0, 40.0, 50.0), square_snrs=(20.0, 30.0))}

# Projected seconds per clip, from CPU seconds measured on this 2-core machine (models/emodb,
# one thread, 2 clips, under load): PGD 20 steps 0.2-0.9 s (it stops at the first verified
# flip, so a budget that flips is cheaper), C&W 20 steps x 3 values of c 0.8-3.1 s; rounded up
# about twofold for longer clips (more chunks) and other corpora. Square: 300 serving-path
# queries, 5-10 s per clip when it does not flip (20-30 ms a query).
CLIP_SECONDS = {"pgd": 2.0, "cw": 6.0, "square": 8.0}


def speaker_bundles(bundles) -> list:
    return [b for b in bundles if b.config.get("protocol", b.config["split"]["protocol"]) == "speaker"
            and b.held_out_speakers]


def bundle_test_clips(bundle, per_gender: int, seed: int = 0, data_dir=None) -> list:
    """Up to per_gender utterances of each gender from the bundle's held-out test speakers,
    seeded (each clip whole, as a listener would hear it)."""
    from ser_core.data.corpora import read_corpus
    if per_gender < 1:
        raise ParameterError(f"clips per gender {per_gender} (accepted: an integer >= 1)")
    corpus_name = bundle.config["corpus"]
    corpus = read_corpus(corpus_name, Path(data_dir or data_root()) / corpus_name, tuple(bundle.labels))
    speakers = set(bundle.held_out_speakers)
    rng = np.random.default_rng(seed)
    picked = []
    for gender in GENDERS:
        utts = [u for u in corpus.utterances if u.speaker in speakers and u.gender == gender]
        picked += [utts[i] for i in sorted(rng.permutation(len(utts))[:per_gender])]
    return picked


def held_out_clips(bundle, n: int, seed: int = 0, data_dir=None) -> list:
    """Up to n utterances of the speakers the bundle never trained on (every speaker of its
    corpus not in config["split"]["speakers"]["train"]), balanced by gender and class, seeded.

    Each (gender, class) cell is shuffled; clips are then taken round by round, one per cell, the
    classes in a fresh seeded order each round and male before female within a class, so any
    prefix is as balanced as the cells allow (n = 2 x classes x k: k clips per cell)."""
    from ser_core.data.corpora import read_corpus
    if n < 1:
        raise ParameterError(f"held-out clips n={n} (accepted: an integer >= 1)")
    corpus_name = bundle.config["corpus"]
    corpus = read_corpus(corpus_name, Path(data_dir or data_root()) / corpus_name, tuple(bundle.labels))
    trained = set(bundle.config["split"].get("speakers", {}).get("train") or ())
    if not trained:
        raise ParameterError(f"model {bundle.name} names no training speakers (config split.speakers.train); "
                             "held-out clips need a speaker-protocol bundle")
    rng = np.random.default_rng(seed)
    cells = {}
    for u in corpus.utterances:
        if u.speaker not in trained:
            cells.setdefault((u.emotion, u.gender), []).append(u)
    for key in sorted(cells):
        order = rng.permutation(len(cells[key]))
        cells[key] = [cells[key][i] for i in order]
    picked, depth = [], 0
    while len(picked) < n and any(len(v) > depth for v in cells.values()):
        for emotion in [bundle.labels[i] for i in rng.permutation(len(bundle.labels))]:
            for gender in GENDERS:
                cell = cells.get((emotion, gender), [])
                if len(cell) > depth and len(picked) < n:
                    picked.append(cell[depth])
        depth += 1
    return picked


def _key(model, clip, attack, params) -> tuple:
    return (model, clip, attack, json.dumps(params, sort_keys=True))


def project_waveform(bundles, plan: WaveformPlan) -> dict:
    """Projected seconds: clips x runs x CLIP_SECONDS, per speaker-protocol bundle."""
    bs = speaker_bundles(bundles)
    per_clip = sum(CLIP_SECONDS[a] for a, _ in plan.runs())
    clips = 2 * plan.clips_per_gender
    return {"models": [b.name for b in bs], "clips_per_model": clips, "runs": [a for a, _ in plan.runs()],
            "total_seconds": len(bs) * clips * per_clip}


def run_waveform(bundles, results, plan: WaveformPlan = WAVEFORM_PROFILES["quick"], data_dir=None,
                 log=sys.stderr) -> list[dict]:
    """Attack every (speaker bundle, clip, run) not yet in `results` (JSON lines, one per
    attacked clip) and return every row of the file."""
    from ser_core.attacks.clip import attack_clip
    from ser_core.evaluation.cells import read_rows
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    rows = read_rows(results)
    done = {_key(r["model"], r["clip"], r["attack"], r["params_requested"]) for r in rows}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ser-waveform-eval-") as tmp:
        for bundle in speaker_bundles(bundles):
            for utt in bundle_test_clips(bundle, plan.clips_per_gender, plan.seed, data_dir):
                for attack, params in plan.runs():
                    if _key(bundle.name, utt.path.name, attack, params) in done:
                        continue
                    cpu = time.process_time()
                    r = attack_clip(bundle, utt.path, attack, params, out_dir=tmp, domain="waveform")
                    row = {"model": bundle.name, "corpus": bundle.config["corpus"], "gender": utt.gender,
                           "speaker": utt.speaker, "clip": utt.path.name, "emotion": utt.emotion,
                           "params_requested": params, "cpu_seconds": round(time.process_time() - cpu, 2),
                           **r.to_dict()}
                    row.pop("wav_path")
                    with results.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                    rows.append(row)
                    snr = "-" if row["snr_db"] is None else f"{row['snr_db']:.1f} dB"
                    print(f"waveform {bundle.name} {utt.path.name} {attack} {params}: {r.label_before} -> "
                          f"{r.label_after} verified={r.flipped} SNR {snr}, {r.seconds:.1f} s; "
                          f"elapsed {(time.perf_counter() - t_start) / 60:.1f} min", file=log, flush=True)
    return rows


def setting(row: dict) -> str:
    p = row["params"]
    if row["attack"] == "pgd":
        return f"PGD, SNR >= {p['snr_db']:g} dB"
    if row["attack"] == "square":
        return f"Square (black-box), SNR >= {p['snr_db']:g} dB, <= {p['max_queries']} queries"
    return "C&W L2 (minimum SNR)"


def summarise(rows: list[dict]) -> list[dict]:
    """Per (corpus, setting, subset): clips, verified flips, rate with its 95 % Wilson interval,
    flips lost to 16-bit rounding, clips whose written WAV chunks differently from the clean clip,
    median SNR of the verified flips, median queries and seconds."""
    out = []
    keys = list(dict.fromkeys((r["corpus"], setting(r)) for r in rows))
    for corpus, s in keys:
        for g in ("all",) + GENDERS:
            sel = [r for r in rows if r["corpus"] == corpus and setting(r) == s and g in ("all", r["gender"])]
            if not sel:
                continue
            ok = [r for r in sel if r["verified_flipped"]]
            snrs = [r["snr_db"] for r in ok if r["snr_db"] is not None]
            out.append({"corpus": corpus, "setting": s, "subset": g, "clips": len(sel), "verified": len(ok),
                        "rate": len(ok) / len(sel), "rate_ci": list(wilson(len(ok), len(sel))),
                        "lost_to_rounding": sum(r["flipped_before_quantisation"] and not r["verified_flipped"]
                                                for r in sel),
                        "chunking_changed": sum(not r.get("chunking_unchanged", True) for r in sel),
                        "median_snr_db": float(np.median(snrs)) if snrs else None,
                        "median_queries": float(np.median([r["queries"] for r in sel])),
                        "median_seconds": float(np.median([r["seconds"] for r in sel]))})
    return out
