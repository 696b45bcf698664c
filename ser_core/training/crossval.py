"""Speaker-fold cross-validation: the honest number for a model that must recognise new voices.

One model per fold (ser_core/data/folds.py: every speaker tested exactly once, folds balanced by
gender), trained with a recipe (ser_core/training/recipes.py) whose validation comes from the training side.
Each clip of a test fold is decided as the serving path decides it (the mean of its 3 s chunks'
probabilities); the pooled figures are computed over every clip of every fold:
accuracy, unweighted average recall (UAR), macro-F1, per-class recall, confusion matrix, male and
female accuracy. Intervals (95 %): Wilson for accuracy, and a bootstrap over speakers (clips of
one speaker are not independent) for accuracy, UAR and macro-F1.

Beside the model on the same folds: chance (a uniform guess), the majority class of the training
side, and eGeMAPSv02 + SVM (ser_core/training/baseline.py).

Resumable: each finished fold is a JSON file in the run folder, each unfinished fold resumes from
its per-epoch checkpoint."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ser_core.config import PAPER_FEATURES, stable_hash
from ser_core.data.corpora import read_corpus
from ser_core.data.dataset import build_table, table_key
from ser_core.stats import wilson
from ser_core.data.folds import fold_split, folds_for
from ser_core.training.recipes import clip_probabilities, get_recipe, predict_tensor, table_for, train_recipe
from ser_core.training.study import load_rows

BOOTSTRAP = 2000


# --- metrics ---------------------------------------------------------------------------------
def _metrics_core(labels, pred, n_classes):
    cm = np.zeros((n_classes, n_classes), int)
    np.add.at(cm, (labels, pred), 1)
    support = cm.sum(1)
    recall = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    predicted = cm.sum(0)
    precision = np.where(predicted > 0, np.diag(cm) / np.maximum(predicted, 1), 0.0)
    f1 = np.where(precision + np.nan_to_num(recall) > 0,
                  2 * precision * np.nan_to_num(recall) / np.maximum(precision + np.nan_to_num(recall), 1e-12), 0.0)
    present = support > 0
    return {"accuracy": float(np.trace(cm) / max(1, cm.sum())),
            "uar": float(np.nanmean(recall[present])) if present.any() else float("nan"),
            "macro_f1": float(np.mean(f1[present])) if present.any() else float("nan"),
            "recall": recall, "cm": cm}


def clip_metrics(labels: np.ndarray, pred: np.ndarray, genders: np.ndarray, speakers: np.ndarray,
                 class_names, seed: int = 0) -> dict:
    """Pooled clip-level figures with 95 % intervals (see the module docstring)."""
    labels, pred = np.asarray(labels), np.asarray(pred)
    k = len(class_names)
    core = _metrics_core(labels, pred, k)
    n = len(labels)
    correct = int(np.sum(labels == pred))
    out = {"n_clips": int(n), "n_speakers": int(len(set(speakers))),
           "accuracy": core["accuracy"], "accuracy_wilson95": list(wilson(correct, n)),
           "uar": core["uar"], "macro_f1": core["macro_f1"],
           "per_class_recall": {c: (None if np.isnan(r) else float(r))
                                for c, r in zip(class_names, core["recall"])},
           "min_class_recall": float(np.nanmin(core["recall"])),
           "confusion": {"labels": list(class_names), "matrix": core["cm"].tolist()}}
    for g in ("male", "female"):
        m = genders == g
        c = int(np.sum(labels[m] == pred[m]))
        out[g] = {"n_clips": int(m.sum()), "accuracy": c / max(1, int(m.sum())),
                  "accuracy_wilson95": list(wilson(c, int(m.sum()))),
                  "uar": _metrics_core(labels[m], pred[m], k)["uar"] if m.any() else None}
    # bootstrap over speakers
    spk = sorted(set(speakers))
    by = {s: np.flatnonzero(speakers == s) for s in spk}
    rng = np.random.default_rng(seed)
    boots = {"accuracy": [], "uar": [], "macro_f1": []}
    for _ in range(BOOTSTRAP):
        idx = np.concatenate([by[spk[i]] for i in rng.integers(0, len(spk), len(spk))])
        c = _metrics_core(labels[idx], pred[idx], k)
        for key in boots:
            boots[key].append(c[key])
    for key, vals in boots.items():
        out[f"{key}_speaker_bootstrap95"] = [float(np.nanpercentile(vals, 2.5)),
                                             float(np.nanpercentile(vals, 97.5))]
    return out


# --- running ---------------------------------------------------------------------------------
def result_name(corpus_name: str, recipe) -> str:
    """<corpus>-<recipe>, with -e<N> when the epoch cap is not the recipe's own."""
    default = get_recipe(recipe.name).max_epochs
    return f"{corpus_name}-{recipe.name}" + ("" if recipe.max_epochs == default else f"-e{recipe.max_epochs}")


def run_dir_for(table, recipe, run_root) -> Path:
    key = stable_hash([table_key(table.corpus, table.cfg, False), recipe.key()])
    return Path(run_root) / f"{table.corpus.name}-{recipe.name}-{key}"


def train_fold(table, fold: int, recipe, run_dir: Path, precision="auto", device=None,
               log=None, init: dict | None = None, extra=None) -> dict:
    """Train and test one fold (from the pre-trained weights `init` when the recipe has them,
    with the other corpora's rows `extra` when it co-trains); its result JSON is written once
    and read back on resume."""
    log = log or sys.stderr
    out = run_dir / f"fold-{fold}.json"
    if out.is_file():
        return json.loads(out.read_text())
    split = fold_split(table, fold)
    fold_dir = run_dir / f"fold-{fold}"
    fold_dir.mkdir(parents=True, exist_ok=True)

    def progress(epoch, total, row):
        print(f"[{table.corpus.name} {recipe.name} fold {fold + 1}/{len(folds_for(table.corpus.name))}] "
              f"epoch {epoch}/{total} val UAR "
              f"{'-' if row['val_uar'] is None else format(row['val_uar'], '.3f')} ({row['seconds']} s)",
              file=log, flush=True)

    if not recipe.hold_out_validation:
        split = split.validation_trains(table)
    res = train_recipe(table, split.train, split.val, recipe, fold_dir, precision, device,
                       log=open(fold_dir / "history.jsonl", "a"), progress=progress, init=init,
                       extra=extra)
    x = load_rows(table, split.test, res.standardizer)
    chunk_probs = predict_tensor(res.model, x)
    ids, probs = clip_probabilities(chunk_probs, table.utt[split.test])
    utts = [table.corpus.utterances[i] for i in ids]
    record = {
        "fold": fold, "split": split.describe(), "recipe": recipe.to_dict(),
        "epochs": len(res.history), "best_epoch": res.best_epoch,
        "seconds": round(res.seconds, 1), "cpu_seconds": round(res.cpu_seconds, 1),
        "device": res.device, "precision": res.precision,
        "clips": [{"file": u.name, "speaker": u.speaker, "gender": u.gender,
                   "label": table.corpus.label_index(u), "probs": [round(float(p), 5) for p in pr]}
                  for u, pr in zip(utts, probs)],
    }
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(out)
    return record


def fold_task(corpus_name: str, data_dir: str, fold: int, recipe_dict: dict, precision="auto",
              device=None, init: dict | None = None, extra=None) -> dict:
    """One fold trained from scratch where it runs (a Ray worker: its checkpoints in a scratch
    folder there), its record handed back for the driver to write."""
    import tempfile
    from ser_core.training.recipes import Recipe
    recipe = Recipe(**recipe_dict)
    table = table_for(read_corpus(corpus_name, data_dir), recipe)
    with tempfile.TemporaryDirectory(prefix="ser-fold-") as tmp:
        return train_fold(table, fold, recipe, Path(tmp), precision, device,
                          log=open(Path(tmp) / "log", "w"), init=init, extra=extra)


def ray_folds(address=None, cpus_per_task: float = 1, gpus_per_task: float | None = None):
    """An executor for `run_crossval`: one Ray task per fold not yet on disk (retried on
    failure), each fold's record written by the driver alone as it arrives, so a killed run
    resumes losing only the folds in flight. Every node needs the code and the corpus at the
    same data_dir."""
    import ray
    from ser_core.tasks import map_tasks

    def run(table, todo, recipe, run_dir, data_dir, precision, device, log=None, init=None,
            extra=None):
        log = log or sys.stderr
        started = not ray.is_initialized()
        if started:
            ray.init(address=address, include_dashboard=False)
        gpus = gpus_per_task
        if gpus is None:
            gpus = 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        records = {f: json.loads((run_dir / f"fold-{f}.json").read_text())
                   for f in todo if (run_dir / f"fold-{f}.json").is_file()}
        args = [(table.corpus.name, str(data_dir), f, recipe.to_dict(), precision,
                 None if gpus else "cpu", init, extra) for f in todo if f not in records]
        try:
            for a, record in map_tasks(fold_task, args, cpus_per_task, gpus):
                out = run_dir / f"fold-{a[2]}.json"
                if not out.is_file():  # a duplicate result never overwrites the first
                    tmp = out.with_suffix(".tmp")
                    tmp.write_text(json.dumps(record))
                    tmp.replace(out)
                records[a[2]] = json.loads(out.read_text())
                print(f"[{table.corpus.name} {recipe.name}] fold {a[2] + 1} done on ray "
                      f"({record['cpu_seconds']} CPU s)", file=log, flush=True)
        finally:
            if started:
                ray.shutdown()
        return [records[f] for f in todo]
    return run


def baseline_folds(table, egemaps_x: np.ndarray) -> dict[str, list[dict]]:
    """Chance, majority class and eGeMAPS + SVM on the same folds, as per-clip records."""
    from ser_core.training.baseline import svm_predict
    corpus = table.corpus
    k = len(corpus.classes)
    labels = np.array([corpus.label_index(u) for u in corpus.utterances])
    speakers = np.array([u.speaker for u in corpus.utterances])
    out = {"majority": [], "egemaps-svm": []}
    for fold, test_spk in enumerate(folds_for(corpus.name)):
        test = np.isin(speakers, test_spk)
        train = ~test  # the whole training side: the SVM has nothing to select on validation
        majority = np.bincount(labels[train], minlength=k).argmax()
        svm = svm_predict(egemaps_x[train], labels[train], egemaps_x[test], k)
        for name, probs in (("majority", np.eye(k)[np.full(test.sum(), majority)]),
                            ("egemaps-svm", svm)):
            out[name] += [{"file": u.name, "speaker": u.speaker, "gender": u.gender,
                           "label": int(labels[i]), "probs": p.tolist(), "fold": fold}
                          for i, u, p in zip(np.flatnonzero(test), np.array(corpus.utterances, object)[test], probs)]
    return out


def summarise(name: str, clips: list[dict], class_names, extra: dict | None = None) -> dict:
    labels = np.array([c["label"] for c in clips])
    pred = np.array([int(np.argmax(c["probs"])) for c in clips])
    genders = np.array([c["gender"] for c in clips])
    speakers = np.array([c["speaker"] for c in clips])
    return {"name": name, **clip_metrics(labels, pred, genders, speakers, class_names),
            **(extra or {})}


def chance_summary(class_names, n_clips, n_speakers) -> dict:
    k = len(class_names)
    return {"name": "chance", "n_clips": n_clips, "n_speakers": n_speakers,
            "accuracy": 1 / k, "uar": 1 / k, "macro_f1": None,
            "note": "expected figures of a uniform random guess"}


def run_crossval(corpus_name: str, data_dir, recipe_name: str = "ours", folds=None,
                 max_epochs: int | None = None, out_dir="reports/crossval", run_root="runs/crossval",
                 precision="auto", device=None, log=None, executor=None,
                 pretrain_data_root=None) -> dict:
    """Train the folds (resuming), then write reports/crossval/<corpus>-<recipe>.json with the
    model's pooled figures and the reference points. Returns that summary. A recipe with
    pre-training first trains (or loads) it on the other corpora, read from
    `pretrain_data_root` (default: the folder holding data_dir)."""
    log = log or sys.stderr
    corpus = read_corpus(corpus_name, data_dir)
    recipe = get_recipe(recipe_name, **({"max_epochs": max_epochs} if max_epochs else {}))
    table = table_for(corpus, recipe)
    run_dir = run_dir_for(table, recipe, run_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    all_folds = list(range(len(folds_for(corpus_name))))
    todo = all_folds if folds is None else list(folds)
    t0 = time.time()
    init = None
    if recipe.pretrain:  # trained once, then loaded from its file
        from ser_core.training.pretrain import pretrain
        init = pretrain(corpus_name, pretrain_data_root or Path(data_dir).resolve().parent, recipe,
                        run_root, precision, device, log)
    from ser_core.training.pretrain import cotrain_for
    extra, cotrain = cotrain_for(recipe, corpus, data_dir, pretrain_data_root)
    if executor is not None:
        records = executor(table, todo, recipe, run_dir, data_dir, precision, device, log, init=init,
                           extra=extra)
    else:
        records = [train_fold(table, f, recipe, run_dir, precision, device, log, init=init,
                              extra=extra) for f in todo]
    if sorted(todo) != all_folds:
        return {"run_dir": str(run_dir), "folds_done": [r["fold"] for r in records]}
    clips = [dict(c, fold=r["fold"]) for r in records for c in r["clips"]]
    extra = {"recipe": recipe.to_dict(), "folds": len(all_folds),
             "cpu_seconds_per_fold": [r["cpu_seconds"] for r in records],
             "seconds_per_fold": [r["seconds"] for r in records],
             "epochs_per_fold": [r["epochs"] for r in records],
             "best_epoch_per_fold": [r["best_epoch"] for r in records],
             "device": records[0]["device"], "run_dir": str(run_dir),
             "pretrain": None if init is None else {k: init[k] for k in (
                 "corpora", "classes", "chunks", "epochs", "cpu_seconds")},
             "cotrain": cotrain,
             "per_fold": [summarise(f"fold {r['fold']}", r["clips"], corpus.classes)
                          for r in records]}
    for p in extra["per_fold"]:
        for key in ("accuracy_speaker_bootstrap95", "uar_speaker_bootstrap95",
                    "macro_f1_speaker_bootstrap95"):
            p.pop(key, None)
    model = summarise(recipe.name, clips, corpus.classes, extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result_name(corpus_name, recipe)}.json").write_text(json.dumps(model, indent=1))
    write_baselines(corpus_name, data_dir, out_dir)
    write_report(out_dir)
    print(f"{corpus_name} {recipe.name}: accuracy {model['accuracy']:.3f}, UAR {model['uar']:.3f} "
          f"({time.time() - t0:.0f} s)", file=log, flush=True)
    return model


def write_baselines(corpus_name: str, data_dir, out_dir="reports/crossval") -> dict:
    from ser_core.training.baseline import BASELINE_NAME, egemaps
    corpus = read_corpus(corpus_name, data_dir)
    table = build_table(corpus, PAPER_FEATURES, augmentation=False, progress=False)
    recs = baseline_folds(table, egemaps(corpus))
    n_spk = len({u.speaker for u in corpus.utterances})
    out = {"corpus": corpus_name, "chance": chance_summary(corpus.classes, len(corpus.utterances), n_spk),
           "majority": summarise("majority class of the training side", recs["majority"], corpus.classes),
           "egemaps-svm": summarise(BASELINE_NAME, recs["egemaps-svm"], corpus.classes)}
    path = Path(out_dir) / f"{corpus_name}-baselines.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    return out


# --- report ----------------------------------------------------------------------------------
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
    from ser_core.training.recipes import RECIPES
    out = Path(out_dir)
    lines = ["# Speaker-fold cross-validation", "",
             "Every speaker is tested exactly once (fixed folds in `ser_core/data/folds.py`: EmoDB 5 "
             "folds of 1 m + 1 f, EMOVO 3 folds of 1 m + 1 f, RAVDESS 6 folds of 2 m + 2 f). "
             "Clip-level decisions (the mean of a clip's 3 s chunks, as the app decides), pooled "
             "over all folds; the study's five classes. 95 % intervals: bootstrap over speakers "
             "(and Wilson for accuracy). Validation speakers come from the training side of each "
             "fold, never its test speakers. Re-run one row: `python -m export crossval --corpus C "
             "--data-dir ../shared/data/C --recipe R` (resumes per fold).", ""]
    for corpus in ("emodb", "emovo", "ravdess"):
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
        order = {name: i for i, name in enumerate(RECIPES)}
        loaded = sorted((json.loads(p.read_text()) for p in models),
                        key=lambda s: (order.get(s["recipe"]["name"], 99), s["recipe"]["max_epochs"]))
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
