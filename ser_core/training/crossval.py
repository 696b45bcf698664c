"""Speaker-fold cross-validation: the honest number for a model that must recognise new voices.

One model per fold (ser_core/data/folds.py: every speaker tested exactly once, folds balanced by
gender), trained with a recipe (ser_core/training/recipes.py) whose validation comes from the
training side. Each clip of a test fold is decided as the serving path decides it (the mean of
its 3 s chunks' probabilities); the pooled figures are computed over every clip of every fold
(ser_core/stats.py clip_metrics): accuracy, unweighted average recall (UAR), macro-F1, per-class
recall, confusion matrix, male and female accuracy. Intervals (95 %): Wilson for accuracy, and a
bootstrap over speakers (clips of one speaker are not independent) for accuracy, UAR and
macro-F1.

Beside the model on the same folds: chance (a uniform guess), the majority class of the training
side, and eGeMAPSv02 + SVM (ser_core/training/baseline.py); the report of them all is
ser_core/training/crossval_report.py.

A recipe name is resolved once (`run_crossval`), and the configuration itself travels to the
folds, the pre-training and the result's name. Resumable: each finished fold is a JSON file in
the run folder, each unfinished fold resumes from its per-epoch checkpoint."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from ser_core.config import TrainConfig, stable_hash
from ser_core.data.corpora import read_corpus
from ser_core.data.dataset import table_key
from ser_core.data.folds import fold_split, folds_for
from ser_core.stats import summarise_clips
from ser_core.training.baseline import write_baselines
from ser_core.training.crossval_report import write_report
from ser_core.training.loop import clip_probabilities, predict_tensor, table_for, train_recipe
from ser_core.training.pretrain import cotrain_for, pretrain
from ser_core.training.recipes import resolve
from ser_core.training.study import load_rows


def result_name(corpus_name: str, recipe: TrainConfig) -> str:
    """<corpus>-<recipe's stored name>, with -e<N> when the epoch cap is not the one the recipe
    was declared with."""
    declared = recipe.declared_epochs or recipe.max_epochs
    return f"{corpus_name}-{recipe.stored_name}" + ("" if recipe.max_epochs == declared else f"-e{recipe.max_epochs}")


def run_dir_for(table, recipe: TrainConfig, run_root) -> Path:
    key = stable_hash([table_key(table.corpus, table.cfg, False), recipe.key()])
    return Path(run_root) / f"{table.corpus.name}-{recipe.stored_name}-{key}"


def train_fold(table, fold: int, recipe: TrainConfig, run_dir: Path, precision="auto", device=None,
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


def fold_task(corpus_name: str, data_dir: str, fold: int, recipe: TrainConfig, precision="auto",
              device=None, init: dict | None = None, extra=None) -> dict:
    """One fold trained from scratch where it runs (a Ray worker: its checkpoints in a scratch
    folder there), its record handed back for the driver to write."""
    import tempfile
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
        args = [(table.corpus.name, str(data_dir), f, recipe, precision,
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


def run_crossval(corpus_name: str, data_dir, recipe: str | TrainConfig = "augment", folds=None,
                 max_epochs: int | None = None, out_dir="reports/crossval", run_root="runs/crossval",
                 precision="auto", device=None, log=None, executor=None,
                 pretrain_data_root=None) -> dict:
    """Train the folds (resuming), then write reports/crossval/<corpus>-<recipe>.json with the
    model's pooled figures and the reference points. Returns that summary. `recipe`: a name
    (ser_core/training/recipes.py, resolved here once) or a configuration; `max_epochs`
    overrides its epoch cap. A recipe with pre-training first trains (or loads) it on the other
    corpora, read from `pretrain_data_root` (default: the folder holding data_dir)."""
    log = log or sys.stderr
    corpus = read_corpus(corpus_name, data_dir)
    recipe = resolve(recipe, max_epochs)
    table = table_for(corpus, recipe)
    run_dir = run_dir_for(table, recipe, run_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    all_folds = list(range(len(folds_for(corpus_name))))
    todo = all_folds if folds is None else list(folds)
    t0 = time.time()
    init = None
    if recipe.pretrain:  # trained once, then loaded from its file
        init = pretrain(corpus_name, pretrain_data_root or Path(data_dir).resolve().parent, recipe,
                        run_root, precision, device, log)
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
             "per_fold": [summarise_clips(f"fold {r['fold']}", r["clips"], corpus.classes)
                          for r in records]}
    for p in extra["per_fold"]:
        for key in ("accuracy_speaker_bootstrap95", "uar_speaker_bootstrap95",
                    "macro_f1_speaker_bootstrap95"):
            p.pop(key, None)
    model = summarise_clips(recipe.stored_name, clips, corpus.classes, extra)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{result_name(corpus_name, recipe)}.json").write_text(json.dumps(model, indent=1))
    write_baselines(corpus_name, data_dir, out_dir)
    write_report(out_dir)
    print(f"{corpus_name} {recipe.name}: accuracy {model['accuracy']:.3f}, UAR {model['uar']:.3f} "
          f"({time.time() - t0:.0f} s)", file=log, flush=True)
    return model
