"""reports/crossval/README.md: one table per corpus of the cross-validation results there
(ser_core/training/crossval.py), the reference points first (ser_core/training/baseline.py),
then one row per recipe in the order of the ablation ladder (ser_core/training/recipes.py), each
recipe's per-fold figures and the confusion matrix of the best."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ser_core.data.corpora import CORPORA
from ser_core.training.recipes import recipe_order


def _ci(x):
    return f"{x[0]:.3f}-{x[1]:.3f}" if x else ""


def _row(label, s, cpu=None):
    if s.get("macro_f1") is None:
        return (f"| {label} | {s['accuracy']:.3f} | | {s['uar']:.3f} | | | | | | "
                f"{s['n_clips']} / {s['n_speakers']} | |")
    return (f"| {label} | {s['accuracy']:.3f} | {_ci(s['accuracy_speaker_bootstrap95'])} "
            f"(Wilson {_ci(s['accuracy_wilson95'])}) | {s['uar']:.3f} | "
            f"{_ci(s['uar_speaker_bootstrap95'])} | {s['macro_f1']:.3f} | "
            f"{s['male']['accuracy']:.3f} / {s['female']['accuracy']:.3f} | "
            f"{s['min_class_recall']:.3f} | "
            + ", ".join(f"{c[:4]} {r:.2f}" for c, r in s["per_class_recall"].items() if r is not None)
            + f" | {s['n_clips']} / {s['n_speakers']} | {cpu or ''} |")


HEADER = ("| model | accuracy | 95 % (speaker bootstrap) | UAR | UAR 95 % | macro-F1 | "
          "male / female acc. | lowest class recall | per-class recall | clips / speakers | "
          "CPU min per fold |\n|---|---|---|---|---|---|---|---|---|---|---|")


def write_report(out_dir="reports/crossval") -> Path:
    """reports/crossval/README.md from every <corpus>-*.json there."""
    out = Path(out_dir)
    lines = ["# Speaker-fold cross-validation", "",
             "Every speaker is tested exactly once (fixed folds in `ser_core/data/folds.py`: EmoDB 5 "
             "folds of 1 m + 1 f, EMOVO 3 folds of 1 m + 1 f, RAVDESS 6 folds of 2 m + 2 f). "
             "Clip-level decisions (the mean of a clip's 3 s chunks, as the app decides), pooled "
             "over all folds; the study's five classes. 95 % intervals: bootstrap over speakers "
             "(and Wilson for accuracy). Validation speakers come from the training side of each "
             "fold, never its test speakers. Re-run one row: `python -m export crossval --corpus C "
             "--data-dir ../shared/data/C --recipe R` (resumes per fold).", ""]
    for corpus in CORPORA:
        base = out / f"{corpus}-baselines.json"
        models = sorted(p for p in out.glob(f"{corpus}-*.json") if p != base)
        if not base.is_file() and not models:
            continue
        lines += [f"## {corpus}", "", HEADER]
        if base.is_file():
            b = json.loads(base.read_text())
            lines += [_row("chance (uniform guess)", b["chance"]),
                      _row("majority class", b["majority"]),
                      _row(b["egemaps-svm"]["name"], b["egemaps-svm"])]
        loaded = sorted((json.loads(p.read_text()) for p in models),
                        key=lambda s: (recipe_order(s["recipe"]["name"]), s["recipe"]["max_epochs"]))
        for s in loaded:
            r = s["recipe"]
            cpu = f"{np.mean(s['cpu_seconds_per_fold']) / 60:.1f}"
            if s.get("pretrain"):
                cpu += f" (+ {s['pretrain']['cpu_seconds'] / 60:.1f} once, pre-training)"
            lines.append(_row(f"CNN-LSTM, recipe `{r['name']}` ({r['max_epochs']} epochs max): "
                              f"{r.get('describe', '')}", s, cpu))
        for s in loaded:
            lines += ["", f"Recipe `{s['recipe']['name']}`, {s['recipe']['max_epochs']} epochs, per fold (accuracy / UAR, best epoch "
                          f"of epochs run, {s['device']}): "
                      + "; ".join(f"{p['name']}: {p['accuracy']:.2f} / {p['uar']:.2f} "
                                  f"({b}/{e})" for p, b, e in zip(s["per_fold"], s["best_epoch_per_fold"],
                                                                 s["epochs_per_fold"]))]
        if loaded:
            best = max(loaded, key=lambda s: s["uar"])
            cm = best["confusion"]
            lines += ["", f"Confusion matrix of recipe `{best['recipe']['name']}`, {best['recipe']['max_epochs']} "
                          "epochs (the highest UAR above; rows true, columns "
                          "predicted):", "", "| true \\ predicted | " + " | ".join(cm["labels"]) + " |",
                      "|---" * (len(cm["labels"]) + 1) + "|"]
            lines += [f"| {lab} | " + " | ".join(map(str, row)) + " |"
                      for lab, row in zip(cm["labels"], cm["matrix"])]
        lines.append("")
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path
