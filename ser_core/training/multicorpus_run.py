"""The multi-corpus model's protocols run and summarised (ser_core/training/multicorpus.py): one
model per fold, each fold's clip decisions written once (`runs/multicorpus/<run>/<fold>.json`,
with its weights beside it for re-scoring), resumable per epoch and per fold; then the pooled
figures over every clip of every fold, by corpus and by gender, with speaker-bootstrap intervals
(ser_core/stats.py), and eGeMAPS + SVM on the same folds (ser_core/training/baseline.py)."""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ser_core.config import TrainConfig, record_key, stable_hash
from ser_core.data.corpora import read_corpus
from ser_core.stats import summarise_clips
from ser_core.training.baseline import BASELINE_NAME, egemaps, svm_predict
from ser_core.training.multicorpus import (EPOCHS, LABELS, Pooled, chunk_probabilities, clip_records,
                                           folds, label_of, parse_negatives, recipe_for, train_rows)

PROTOCOLS = ("loco", "pooled")


def run_name(protocol: str, recipe: TrainConfig, tag: str = "") -> str:
    return f"{protocol}-{recipe.stored_name}-e{recipe.max_epochs}" + (f"-{tag}" if tag else "")


def same_training(pooled: Pooled, fold, recipe: TrainConfig) -> TrainConfig:
    """The recipe that trains this fold exactly as `recipe` does: without its absent_negatives
    when none of them has its class among the fold's training rows (leave EmoDB out: no
    boredom to push down), else `recipe` itself."""
    trained = {LABELS[k] for k in np.unique(pooled.label[fold.train])}
    if recipe.absent_negatives and not any(a in trained for _, a in parse_negatives(recipe.absent_negatives)):
        return dataclasses.replace(recipe, absent_negatives="")
    return recipe


def run_fold(pooled: Pooled, fold, recipe: TrainConfig, run_dir: Path, log=None, run_root=None) -> dict:
    """Train and score one fold; its record (clip decisions, cost) is written once and read back.
    A fold that trains exactly as another recipe's already on disk (`same_training`) is that
    record, copied."""
    log = log or sys.stderr
    out = run_dir / f"{fold.name}.json"
    if out.is_file():
        return json.loads(out.read_text())
    twin = same_training(pooled, fold, recipe)
    if twin is not recipe and run_root is not None:
        want = {k: v for k, v in twin.key().items() if k != "name"}
        for src in sorted(Path(run_root).glob(f"*/{fold.name}.json")):
            record = json.loads(src.read_text())
            if {k: v for k, v in record_key(record["recipe"]).items() if k != "name"} != want:
                continue
            record.update(recipe=recipe.to_dict(), same_training_as=str(src))
            out.write_text(json.dumps(record))
            print(f"[{fold.name}] trains as {twin.stored_name}: its record copied from {src}", file=log, flush=True)
            return record
    fold_dir = run_dir / fold.name
    fold_dir.mkdir(parents=True, exist_ok=True)
    print(f"[{fold.name}] training on {len(fold.train)} chunks "
          f"({', '.join(sorted(set(pooled.corpus[fold.train])))}), testing {len(fold.test)}",
          file=log, flush=True)
    res = train_rows(pooled, fold.train, recipe, fold_dir, log=log)
    torch.save({"model": res.model.state_dict(), "mean": res.standardizer.mean,
                "scale": res.standardizer.scale}, fold_dir / "model.pt")
    x = torch.from_numpy(res.standardizer.transform(pooled.features(fold.test)))
    record = {"fold": fold.name, "classes": list(fold.classes), "recipe": recipe.to_dict(),
              "train_speakers": sorted(set(pooled.speaker[fold.train])),
              "test_speakers": sorted(set(pooled.speaker[fold.test])),
              "train_chunks": int(len(fold.train)), "epochs": len(res.history),
              "seconds": round(res.seconds, 1), "cpu_seconds": round(res.cpu_seconds, 1),
              "threads": torch.get_num_threads(),
              "clips": clip_records(pooled, fold.test, chunk_probabilities(res.model, x, fold.classes),
                                    fold.classes)}
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(out)
    print(f"[{fold.name}] done: {res.cpu_seconds / 60:.1f} CPU min", file=log, flush=True)
    return record


def rescore(pooled: Pooled, fold, run_dir: Path, shifts: int) -> list[dict]:
    """A trained fold's clip records again, with test-time averaging over `shifts` time shifts."""
    from ser_core.audio.standardize import Standardizer
    from ser_core.models.cnn_lstm import CNNLSTM
    saved = torch.load(run_dir / fold.name / "model.pt", weights_only=False)
    rec = json.loads((run_dir / f"{fold.name}.json").read_text())["recipe"]
    model = CNNLSTM(len(LABELS), rec["dropout"], rec["lstm_input_dropout"],
                    input_norm=rec["input_norm"])
    model.load_state_dict(saved["model"])
    model.eval()
    x = torch.from_numpy(Standardizer(saved["mean"], saved["scale"]).transform(pooled.features(fold.test)))
    return clip_records(pooled, fold.test, chunk_probabilities(model, x, fold.classes, shifts),
                        fold.classes)


def summarise(name: str, protocol: str, records: list[dict], extra: dict | None = None) -> dict:
    """Pooled figures of a protocol's fold records: overall (pooled protocol), per corpus and per
    gender, each with speaker-bootstrap intervals."""
    out = {"name": name, "protocol": protocol, **(extra or {}), "parts": {}}
    if protocol == "pooled":
        clips = [c for r in records for c in r["clips"]]
        out["overall"] = summarise_clips("all 40 speakers", clips, records[0]["classes"])
        for g in ("male", "female"):
            out["parts"][g] = summarise_clips(g, [c for c in clips if c["gender"] == g],
                                              records[0]["classes"])
    for r in records:
        for corpus in sorted({c["corpus"] for c in r["clips"]}):
            part = [c for c in r["clips"] if c["corpus"] == corpus]
            if protocol == "pooled":
                part = [c for rr in records for c in rr["clips"] if c["corpus"] == corpus]
            out["parts"][corpus] = summarise_clips(corpus, part, r["classes"])
    return out


def run_protocol(pooled: Pooled, protocol: str, recipe: TrainConfig | None = None, only=None,
                 run_root="runs/multicorpus", out_dir="reports/multicorpus", tag: str = "",
                 log=None, partial: bool = False) -> dict:
    """Train the protocol's folds not yet on disk (`only`: these fold names), then, once all are
    there, write <out_dir>/<run>.json with the pooled figures. `partial`: train nothing, and
    summarise the folds already on disk as <run>-partial.json (named so in every table)."""
    log = log or sys.stderr
    recipe = recipe or recipe_for(EPOCHS)
    name = run_name(protocol, recipe, tag)
    run_dir = Path(run_root) / f"{name}-{stable_hash([pooled.key(), recipe.key()])}"
    run_dir.mkdir(parents=True, exist_ok=True)
    all_folds = folds(pooled, protocol)
    t0 = time.time()
    if partial:
        records = [json.loads((run_dir / f"{f.name}.json").read_text()) for f in all_folds
                   if (run_dir / f"{f.name}.json").is_file()]
        if not records:
            return {"run_dir": str(run_dir), "folds_done": []}
        name += "-partial"
    else:
        records = [run_fold(pooled, f, recipe, run_dir, log, run_root) for f in all_folds
                   if only is None or f.name in only]
    if len(records) < len(all_folds) and not partial:
        return {"run_dir": str(run_dir), "folds_done": [r["fold"] for r in records]}
    summary = summarise(name, protocol, records, {
        "recipe": recipe.to_dict(), "run_dir": str(run_dir),
        "cpu_seconds_per_fold": {r["fold"]: r["cpu_seconds"] for r in records},
        "train_chunks_per_fold": {r["fold"]: r["train_chunks"] for r in records},
        "classes_per_fold": {r["fold"]: r["classes"] for r in records},
        "folds_done": [r["fold"] for r in records], "folds_total": len(all_folds)})
    write_json(Path(out_dir) / f"{name}.json", summary)
    print(f"{name}: written ({time.time() - t0:.0f} s)", file=log, flush=True)
    return summary


def tta_summary(pooled: Pooled, protocol: str, recipe: TrainConfig, shifts: int,
                run_root="runs/multicorpus", out_dir="reports/multicorpus") -> dict:
    """The trained protocol re-scored with test-time averaging over `shifts` time shifts."""
    name = run_name(protocol, recipe)
    run_dir = Path(run_root) / f"{name}-{stable_hash([pooled.key(), recipe.key()])}"
    records = [{"fold": f.name, "classes": list(f.classes), "clips": rescore(pooled, f, run_dir, shifts)}
               for f in folds(pooled, protocol)]
    summary = summarise(f"{name}-tta{shifts}", protocol, records,
                        {"recipe": recipe.to_dict(), "tta_shifts": shifts, "run_dir": str(run_dir)})
    write_json(Path(out_dir) / f"{name}-tta{shifts}.json", summary)
    return summary


def baseline(pooled: Pooled, protocol: str, data_root, out_dir="reports/multicorpus", only=None) -> dict:
    """eGeMAPS + SVM on the protocol's folds (each clip one row; trained on the training side's
    clips of the fold's classes, decided over them); `only`: these folds, written as
    <protocol>-egemaps-svm-partial.json beside a partial run of the model."""
    feats, meta = [], []
    for name, t in pooled.tables.items():
        c = read_corpus(name, Path(data_root) / name, classes="all")
        feats.append(egemaps(c, progress=False))
        meta += [(f"{name}:{u.name}", name, f"{name}:{u.speaker}", u.gender,
                  LABELS.index(label_of(u.emotion))) for u in c.utterances]
    x = np.concatenate(feats)
    clip, corpus, speaker, gender, label = (np.array(v) for v in zip(*meta))
    label = label.astype(int)
    records = []
    for f in folds(pooled, protocol):
        if only is not None and f.name not in only:
            continue
        cols = [LABELS.index(c) for c in f.classes]
        test = np.isin(speaker, sorted(set(pooled.speaker[f.test]))) & np.isin(label, cols)
        train = np.isin(speaker, sorted(set(pooled.speaker[f.train]))) & np.isin(label, cols)
        local = {c: i for i, c in enumerate(cols)}
        probs = svm_predict(x[train], np.array([local[v] for v in label[train]]), x[test], len(cols))
        records.append({"fold": f.name, "classes": list(f.classes), "clips": [
            {"file": clip[i], "corpus": corpus[i], "speaker": speaker[i], "gender": gender[i],
             "label": local[label[i]], "probs": p.tolist()} for i, p in zip(np.flatnonzero(test), probs)]})
    name = f"{protocol}-egemaps-svm" + ("-partial" if only is not None else "")
    summary = summarise(name, protocol, records, {"model": BASELINE_NAME,
                                                  "folds_done": [r["fold"] for r in records]})
    write_json(Path(out_dir) / f"{name}.json", summary)
    return summary


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def per_corpus_loco(pooled: Pooled, models=("emodb", "emovo", "ravdess"),
                    out_dir="reports/multicorpus") -> dict:
    """The shipped per-corpus bundles on the other corpora's clips of the classes they share,
    decided over those classes (their softmax renormalised over them)."""
    from ser_core.models.bundle import ModelBundle, torch_probabilities
    from ser_core.training.multicorpus import corpus_labels
    parts = {}
    for name in models:
        b = ModelBundle.load(name)
        for other in pooled.tables:
            if other == b.config["corpus"]:
                continue
            shared = [c for c in b.labels if c in corpus_labels(other)]
            rows = np.flatnonzero((pooled.corpus == other)
                                  & np.isin(pooled.label, [LABELS.index(c) for c in shared]))
            p = torch_probabilities(b, b.standardizer.transform(pooled.features(rows)))
            p = p[:, [b.labels.index(c) for c in shared]]
            p = p / p.sum(1, keepdims=True)
            recs = clip_records(pooled, rows, p, shared)
            parts[f"{name} model on {other}"] = summarise_clips(f"{name} on {other}", recs, shared)
    out = {"name": "percorpus-loco", "protocol": "loco", "parts": parts}
    write_json(Path(out_dir) / "percorpus-loco.json", out)
    return out
