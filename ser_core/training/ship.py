"""Corpus folder -> a shipped speaker-protocol bundle trained with one of our recipes
(ser_core/training/recipes.py): trained on every speaker but the two validation speakers of
ser_core/data/folds.SHIP_VALIDATION, early-stopped on them, quantised, ONNX-exported with the
parity check, its card quoting the recipe's speaker-fold cross-validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ser_core.config import TrainConfig
from ser_core.training.recipes import DEFAULT_RECIPE, resolve
from ser_core.training.study import classification_metrics, clip_range, predict_rows, save_exported_bundle


def train_shipped_bundle(corpus_name: str, data_dir, out, recipe: str | TrainConfig = DEFAULT_RECIPE,
                        weights_dtype: str = "float32", max_epochs: int | None = None,
                        precision: str = "auto", run_dir=None, name: str | None = None,
                        crossval_dir="reports/crossval", command: str = "", pretrain_data_root=None,
                        pretrain_root="runs/crossval"):
    """A shipped speaker-protocol bundle trained with one of our recipes (a name from
    ser_core/training/recipes.py, resolved here once, or a configuration; `max_epochs` overrides
    its epoch cap) on every speaker but one male and one female validation speaker
    (ser_core/data/folds.ship_split),
    early-stopped on them (a weight-averaging recipe keeps them out too, as a held-out check,
    whatever its `hold_out_validation` says for the folds). Its published accuracy is the
    recipe's speaker-fold cross-validation at the same epoch count (reports/crossval/, named by
    `crossval.result_name`, copied into config["crossval"]); the validation speakers' figures
    are recorded as `metrics.test` with `subset` saying what they are."""
    import platform
    from ser_core.models.weights import quantize_roundtrip
    from ser_core.config import PAPER_FEATURES
    from ser_core.data.corpora import DATA_LICENCES, read_corpus
    from ser_core.data.folds import ship_split
    from ser_core.models.cnn_lstm import keras_parameter_count
    from ser_core.stats import summarise_clips
    from ser_core.training.crossval import result_name
    from ser_core.training.loop import clip_probabilities, table_for, train_recipe
    from ser_core.training.pretrain import cotrain_for, pretrain

    corpus = read_corpus(corpus_name, data_dir)
    recipe = resolve(recipe, max_epochs)
    table = table_for(corpus, recipe)
    split = ship_split(table)
    out = Path(out)
    run_dir = Path(run_dir) if run_dir else Path("runs") / f"ship-{out.name}-{recipe.stored_name}"
    run_dir.mkdir(parents=True, exist_ok=True)
    init = None
    if recipe.pretrain:  # the same pre-trained weights as the cross-validation's folds
        init = pretrain(corpus_name, pretrain_data_root or Path(data_dir).resolve().parent, recipe,
                        pretrain_root, precision)
    # the other corpora's clips of this corpus's classes, when co-training
    extra, cotrain = cotrain_for(recipe, corpus, data_dir, pretrain_data_root)
    result = train_recipe(table, split.train, split.val, recipe, run_dir, precision, init=init,
                          extra=extra)
    model = quantize_roundtrip(result.model, weights_dtype)
    rows = split.val
    chunk_probs = predict_rows(model, table, rows, result.standardizer)
    metrics = {"test": classification_metrics(chunk_probs, table.labels[rows], table.genders[rows],
                                              corpus.classes)}
    metrics["test"]["subset"] = (f"3 s chunks of the validation speakers {split.speakers['val']} "
                                 + ("(never trained on; the model is a weight average, so they chose "
                                    "nothing)" if recipe.swa_start else
                                    "(never trained on; they chose the epoch, so this is optimistic)"))
    ids, clip = clip_probabilities(chunk_probs, table.utt[rows])
    utts = [corpus.utterances[i] for i in ids]
    metrics["held_out_clips"] = summarise_clips(
        "validation speakers, clip level",
        [{"label": corpus.label_index(u), "probs": p.tolist(), "gender": u.gender,
          "speaker": u.speaker} for u, p in zip(utts, clip)], corpus.classes)
    cv_path = Path(crossval_dir) / f"{result_name(corpus_name, recipe)}.json"
    crossval = None
    if cv_path.is_file():
        cv = json.loads(cv_path.read_text())
        base_path = Path(crossval_dir) / f"{corpus_name}-baselines.json"
        base = json.loads(base_path.read_text())["egemaps-svm"] if base_path.is_file() else None
        crossval = {"protocol": "speaker folds", "folds": cv["folds"], "n_speakers": cv["n_speakers"],
                    "n_clips": cv["n_clips"], "recipe": recipe.stored_name,
                    "max_epochs": cv["recipe"]["max_epochs"],
                    "accuracy": cv["accuracy"], "accuracy_ci95": cv["accuracy_speaker_bootstrap95"],
                    "accuracy_wilson95": cv["accuracy_wilson95"],
                    "uar": cv["uar"], "uar_ci95": cv["uar_speaker_bootstrap95"],
                    "macro_f1": cv["macro_f1"], "min_class_recall": cv["min_class_recall"],
                    "male_accuracy": cv["male"]["accuracy"], "female_accuracy": cv["female"]["accuracy"],
                    "per_class_recall": cv["per_class_recall"],
                    "baseline": None if base is None else {"name": base["name"], "accuracy": base["accuracy"],
                                                           "uar": base["uar"]},
                    "report": "reports/crossval/README.md"}
    held_out = split.speakers["val"]
    config = {
        "name": name or out.name, "corpus": corpus_name, "language": corpus.spec.language,
        "labels": list(corpus.classes), "feature_config": PAPER_FEATURES.to_dict(),
        "hyperparameters": recipe.hyperparameters(), "augmentation": recipe.offline_augmentation,
        "split": {**split.describe(), "protocol": "speaker",
                  "speakers": {**split.speakers, "held_out": held_out},
                  "rows": {**split.describe()["rows"], "held_out": int(len(rows))}},
        "protocol": "speaker",
        "clip_range": list(clip_range(table, split.train, result.standardizer)),
        "data": {"corpus": corpus_name, "data_dir": str(corpus.root), "clips": len(corpus.utterances),
                 "chunks": len(table), **DATA_LICENCES[corpus_name]},
        "metrics": metrics, "crossval": crossval, "parameter_count": keras_parameter_count(model),
        "training": {"recipe": recipe.to_dict(), "epochs": len(result.history),
                     "pretrained_on": None if init is None else {
                         "corpora": init["corpora"], "emotions": init["classes"],
                         "chunks": init["chunks"], "epochs": init["epochs"],
                         "cpu_seconds": init["cpu_seconds"]},
                     "cotrained_on": cotrain,
                     "best_epoch": result.best_epoch, "seconds": round(result.seconds, 1),
                     "cpu_seconds": round(result.cpu_seconds, 1), "precision": result.precision,
                     "hardware": f"{platform.processor() or platform.machine()}, "
                                 f"{torch.get_num_threads()} threads"
                                 + (", CUDA" if result.device.startswith("cuda") else ""),
                     "history": result.history},
        "retrain_command": command or (f"python -m export train --corpus {corpus_name} --data-dir "
                                       f"{data_dir} --recipe {recipe.name} --out {out}"),
    }
    return save_exported_bundle(out, model, result.standardizer, config, weights_dtype,
                                table.features[np.sort(rows[:64])])
