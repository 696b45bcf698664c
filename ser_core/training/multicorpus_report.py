"""reports/multicorpus/README.md from the multi-corpus protocols' results (multicorpus_run.py):
leave-one-corpus-out and pooled speaker folds, the model beside eGeMAPS + SVM on the same folds,
UAR with speaker-bootstrap intervals, per-class recall, the training cost and the commands.
Generated: rebuild it (`python -m export multicorpus report --data-root DIR`) rather than edit."""
from __future__ import annotations

import json
from pathlib import Path

COMMANDS = """    python -m export multicorpus baseline --protocol loco   --data-root ../shared/data
    python -m export multicorpus baseline --protocol pooled --data-root ../shared/data
    python -m export multicorpus loco   --data-root ../shared/data [--recipe R] [--epochs N] [--folds loco-emodb]
    python -m export multicorpus pooled --data-root ../shared/data [--recipe R] [--epochs N] [--folds pooled-0]
    python -m export multicorpus tta    --protocol loco --shifts 4 --data-root ../shared/data
    # the second round's rows (each row's section names its recipe; 10 epochs throughout):
    python -m export multicorpus loco   --recipe swa-all-cmn       --data-root ../shared/data
    python -m export multicorpus loco   --recipe swa-all-rooms     --data-root ../shared/data
    python -m export multicorpus pooled --recipe swa-all-bored-neg --data-root ../shared/data
    python -m export multicorpus loco   --recipe swa-all-bored-neg --data-root ../shared/data
    python -m export multicorpus ship   --recipe swa-all-bored-neg --data-root ../shared/data --out models/any
    python -m export multicorpus report --data-root ../shared/data"""


def _ci(v) -> str:
    return f"{v[0]:.3f}-{v[1]:.3f}" if v else "n/a"


def _recall(s: dict) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in s["per_class_recall"].items() if v is not None)


def _row(label: str, s: dict, base: dict | None) -> str:
    low = min(((k, v) for k, v in s["per_class_recall"].items() if v is not None), key=lambda kv: kv[1])
    b = f"{base['uar']:.3f} ({_ci(base['uar_speaker_bootstrap95'])})" if base else "not run"
    return (f"| {label} | {s['n_clips']} | {s['n_speakers']} | **{s['uar']:.3f}** "
            f"({_ci(s['uar_speaker_bootstrap95'])}) | {s['accuracy']:.3f} | {low[1]:.2f} ({low[0]}) | {b} |")


HEAD = ("| test set | clips | speakers | UAR (95 % speaker bootstrap) | accuracy | lowest class recall | "
        "eGeMAPS + SVM UAR (95 %) |\n|---|---|---|---|---|---|---|")


def _ablation(runs: list[dict], base: dict | None) -> list[str]:
    """One row per run of a protocol (the levers side by side): UAR per test set, their mean,
    the lowest class recall anywhere, the training cost; the eGeMAPS + SVM row last."""
    runs = [s for s in runs if not s["name"].endswith("-partial")]
    if len(runs) < 2:
        return []
    pooled = "overall" in runs[0]  # pooled: the UAR over every clip first, no mean of the parts
    parts = list(runs[0]["parts"])
    lines = ["Every run side by side (the levers as rows; each changes the recipe named in its "
             "section, the same epochs, the same folds):", "",
             "| run | " + ("all | " if pooled else "") + " | ".join(parts)
             + (" |" if pooled else " | mean UAR |") + " lowest class recall | CPU min |",
             "|---" * (len(parts) + 4) + "|"]
    for s in runs + ([base] if base else []):
        uars = [s["parts"][p]["uar"] for p in parts]
        low = min((v, f"{k}, {p}") for p in parts
                  for k, v in s["parts"][p]["per_class_recall"].items() if v is not None)
        cost = s.get("cpu_seconds_per_fold")
        lines.append(f"| `{s['name']}` | " + (f"{s['overall']['uar']:.3f} | " if pooled else "")
                     + " | ".join(f"{u:.3f}" for u in uars)
                     + ("" if pooled else f" | {sum(uars) / len(uars):.3f}") + f" | {low[0]:.2f} ({low[1]}) | "
                     + (f"{sum(cost.values()) / 60:.1f}" if cost else "-") + " |")
    return lines + [""]


def _load(folder: Path, pattern: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob(pattern))]


def _protocol_section(folder: Path, protocol: str, title: str, intro: str) -> list[str]:
    base_path = folder / f"{protocol}-egemaps-svm.json"
    base = json.loads(base_path.read_text()) if base_path.is_file() else None
    runs = sorted((s for s in _load(folder, f"{protocol}-*.json") if "egemaps" not in s["name"]),
                  key=lambda s: (s.get("tta_shifts") or 0, s["name"]))  # the plain model first
    lines = [f"## {title}", "", intro, ""] + _ablation(runs, base)
    if not runs:
        lines += ["The model: not run yet (command below)."]
        if base:
            lines += ["", "eGeMAPS + SVM alone:", "", HEAD.replace(" eGeMAPS + SVM UAR (95 %) |", " |")
                      .replace("|---|---|---|---|---|---|---|", "|---|---|---|---|---|---|")]
            lines += [_row(k, v, None).rsplit(" not run |", 1)[0]
                      for k, v in ([("all 40 speakers", base["overall"])] if "overall" in base else [])
                      + list(base["parts"].items())]
        lines.append("")
    partial_path = folder / f"{protocol}-egemaps-svm-partial.json"
    full_base = base
    for s in runs:
        base = full_base
        if s["name"].endswith("-partial"):  # the baseline on the same folds, when it was run on them
            pb = json.loads(partial_path.read_text()) if partial_path.is_file() else None
            base = pb if pb and pb.get("folds_done") == s.get("folds_done") else None
        r = s["recipe"]
        what = (f"recipe `{r['name']}`, {r['max_epochs']} epochs (the weights of epochs "
                f"{int(r['swa_start'] * r['max_epochs']) + 1}-{r['max_epochs']} averaged)")
        done, total = s.get("folds_done") or [], s.get("folds_total")
        if total and len(done) < total:
            what += (f"; **only {len(done)} of {total} folds** were trained in time ({', '.join(done)}), "
                     "so the speakers of the others are not tested")
        if s.get("tta_shifts"):
            what += f", test-time averaging over {s['tta_shifts']} circular time shifts of each chunk"
        lines += [f"### `{s['name']}`: {what}", "", HEAD]
        if "overall" in s:
            lines.append(_row(f"all {s['overall']['n_speakers']} tested speakers", s["overall"],
                              (base or {}).get("overall")))
        for k, v in s["parts"].items():
            lines.append(_row(k, v, (base or {}).get("parts", {}).get(k)))
        lines += ["", "Per-class recall (model): " + "; ".join(
            f"{k}: {_recall(v)}" for k, v in ([("all", s["overall"])] if "overall" in s else [])
            + list(s["parts"].items())) + "."]
        if base and not s.get("tta_shifts"):
            lines += ["", "Per-class recall (eGeMAPS + SVM): " + "; ".join(
                f"{k}: {_recall(v)}" for k, v in ([("all", base["overall"])] if "overall" in base else [])
                + list(base["parts"].items())) + "."]
        if s.get("cpu_seconds_per_fold"):
            cost = s["cpu_seconds_per_fold"]
            lines += ["", "Training cost per fold (CPU minutes, one thread, bfloat16 autocast; the wall "
                          "time was 2-6 times longer on 2 cores shared with other jobs): "
                      + ", ".join(f"{k} {v / 60:.1f} ({s['train_chunks_per_fold'][k]} chunks)"
                                  for k, v in cost.items())
                      + f"; {sum(cost.values()) / 60:.1f} in all."]
        if "overall" in s:
            cm = s["overall"]["confusion"]
            lines += ["", "Confusion matrix, all clips (rows true, columns predicted):", "",
                      "| true \\ predicted | " + " | ".join(cm["labels"]) + " |",
                      "|---" * (len(cm["labels"]) + 1) + "|"]
            lines += [f"| {lab} | " + " | ".join(map(str, row)) + " |"
                      for lab, row in zip(cm["labels"], cm["matrix"])]
        lines.append("")
    return lines


def write_report(out_dir="reports/multicorpus", notes: str = "") -> Path:
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if not notes and (folder / "notes.md").is_file():  # what was run, what was not, and why
        notes = (folder / "notes.md").read_text()
    lines = ["# The multi-corpus model: one CNN-LSTM of every emotion over EmoDB, EMOVO and RAVDESS", "",
             "Generated by `python -m export multicorpus report` from the JSON files beside it; "
             "ser_core/training/multicorpus.py says what is trained. Outputs: neutral (RAVDESS's calm "
             "merged in), happiness, sadness, anger, fear, disgust, surprise, boredom; the loss of a "
             "clip is masked to its corpus's classes. A clip is decided by the mean of its 3 s "
             "chunks' probabilities; UAR is the mean recall over the classes present; intervals are "
             "95 % percentile intervals of 2000 bootstrap resamples of the speakers "
             "(ser_core/stats.py). Nothing is selected on test speakers: the model is a weight "
             "average of a fixed number of epochs, and the baseline's settings are fixed in advance.",
             ""]
    lines += _protocol_section(
        folder, "loco", "Leave one corpus out",
        "Trained on every speaker of two corpora, tested on every speaker of the third, decided over "
        "the classes the third shares with the two (EmoDB: 6, its boredom has no training clip; "
        "EMOVO and RAVDESS: 7). The closest figure to a visitor: a new language, new voices, a new "
        "recording chain.")
    lines += _protocol_section(
        folder, "pooled", "Pooled speaker folds",
        "Four fixed folds over the 40 speakers (multicorpus.POOLED_FOLDS: 6 RAVDESS actors, 2-3 EmoDB "
        "and 1-2 EMOVO speakers each), every speaker tested once, trained on the other 30; the "
        "model answers over all 8 outputs (as served). By corpus and by gender below.")
    per_corpus = folder / "percorpus-loco.json"
    if per_corpus.is_file():
        lines += ["## The per-corpus models across corpora", "",
                  "The shipped per-corpus bundles (models/emodb, emovo, ravdess: five classes each) on "
                  "every clip of each other corpus whose emotion they know, decided over those shared "
                  "classes. **Not held-out figures**: each of these bundles was pre-trained on every "
                  "clip of the two other corpora (recipe `transfer`), and `emovo` was also co-trained on "
                  "their clips of its classes, so these clips were in their training; the rows say how "
                  "much of that survives fine-tuning on one corpus (EMOVO's, which kept training on "
                  "them, scores highest), not how they fare on an unheard corpus.",
                  "", HEAD.replace(" eGeMAPS + SVM UAR (95 %) |", " |")
                  .replace("|---|---|---|---|---|---|---|", "|---|---|---|---|---|---|")]
        lines += [_row(k, v, None).rsplit(" not run |", 1)[0]
                  for k, v in json.loads(per_corpus.read_text())["parts"].items()]
        lines.append("")
    if notes:
        lines += ["## Notes", "", notes.strip(), ""]
    lines += ["## Commands", "", COMMANDS, ""]
    path = folder / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
