"""The multi-corpus model shipped as a bundle (`models/any/`): trained by the protocols' recipe on
every speaker of EmoDB, EMOVO and RAVDESS but one male and one female validation speaker per
corpus (multicorpus.SHIP_VALIDATION; nothing is selected on them, the model is a weight
average), int8 weights, ONNX with the parity check, the card naming every corpus and licence.

Its published figures are the protocols' (reports/multicorpus/): the pooled speaker folds and
leave-one-corpus-out, copied into config["crossval"] and config["loco"] when they are on disk
(run it again once they are: the trained weights are reloaded from the run folder). The config
also records the range of clip lengths and loudness the model trained on (`input_range`), which
the app compares a visitor's clip with."""
from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch

from ser_core.audio.decode import load_audio
from ser_core.audio.level import clip_level, level_range
from ser_core.config import PAPER_FEATURES, TrainConfig
from ser_core.data.corpora import DATA_LICENCES, CORPORA
from ser_core.models.cnn_lstm import keras_parameter_count
from ser_core.stats import summarise_clips
from ser_core.training.multicorpus import (LABELS, MERGE, SHIP_VALIDATION, Pooled, chunk_probabilities,
                                           clip_records, folds, train_rows)
from ser_core.training.multicorpus_run import run_name
from ser_core.training.study import classification_metrics, clip_range, save_exported_bundle


def _published(reports: Path, recipe: TrainConfig) -> tuple[dict | None, dict | None]:
    """(pooled-fold figures, leave-one-corpus-out figures) of `recipe` when their reports exist."""
    out = []
    for protocol in ("pooled", "loco"):
        path = reports / f"{run_name(protocol, recipe)}.json"
        base = reports / f"{protocol}-egemaps-svm.json"
        if not path.is_file():  # the folds finished so far, named as such, and the baseline on them
            path = reports / f"{run_name(protocol, recipe)}-partial.json"
            base = reports / f"{protocol}-egemaps-svm-partial.json"
        if not path.is_file():
            out.append(None)
            continue
        s = json.loads(path.read_text())
        b = json.loads(base.read_text()) if base.is_file() else None
        parts = {k: {"n_clips": v["n_clips"], "n_speakers": v["n_speakers"], "uar": v["uar"],
                     "uar_ci95": v["uar_speaker_bootstrap95"], "accuracy": v["accuracy"],
                     "min_class_recall": v["min_class_recall"],
                     "classes": list(v["per_class_recall"]),
                     "baseline_uar": (b or {}).get("parts", {}).get(k, {}).get("uar")}
                 for k, v in s["parts"].items()}
        entry = {"protocol": {"pooled": "pooled speaker folds", "loco": "leave one corpus out"}[protocol],
                 "folds": len(s["cpu_seconds_per_fold"]), "parts": parts,
                 "folds_total": s.get("folds_total", len(s["cpu_seconds_per_fold"])),
                 "report": "reports/multicorpus/README.md"}
        if "overall" in s:
            o = s["overall"]
            entry.update(n_speakers=o["n_speakers"], n_clips=o["n_clips"], accuracy=o["accuracy"],
                         accuracy_ci95=o["accuracy_speaker_bootstrap95"], uar=o["uar"],
                         uar_ci95=o["uar_speaker_bootstrap95"], macro_f1=o["macro_f1"],
                         min_class_recall=o["min_class_recall"], per_class_recall=o["per_class_recall"],
                         male_accuracy=o["male"]["accuracy"], female_accuracy=o["female"]["accuracy"],
                         baseline=None if b is None else {"name": "eGeMAPSv02 + SVM",
                                                          "accuracy": b["overall"]["accuracy"],
                                                          "uar": b["overall"]["uar"]})
        out.append(entry)
    return out[0], out[1]


def training_levels(pooled: Pooled, rows: np.ndarray, data_root) -> dict:
    """The length and loudness range of the clips behind `rows`, decoded as the app decodes."""
    levels = []
    for clip in sorted(set(pooled.clip[rows])):
        corpus, name = clip.split(":", 1)
        t = pooled.tables[corpus]
        path = next(u.path for u in t.corpus.utterances if u.name == name)
        levels.append(clip_level(load_audio(path, PAPER_FEATURES.sample_rate), PAPER_FEATURES.sample_rate))
    return level_range(levels)


def ship(pooled: Pooled, out, recipe: TrainConfig, run_root="runs/multicorpus",
         reports="reports/multicorpus", data_root="../shared/data", weights_dtype: str = "int8"):
    """Train (or reload) and write the bundle; returns a summary of its held-out figures."""
    from ser_core.models.weights import quantize_roundtrip
    fold = folds(pooled, "ship")[0]
    out = Path(out)
    run_dir = Path(run_root) / f"ship-{out.name}-{recipe.stored_name}-e{recipe.max_epochs}"
    run_dir.mkdir(parents=True, exist_ok=True)
    res = train_rows(pooled, fold.train, recipe, run_dir, log=open(run_dir / "history.jsonl", "a"))
    model = quantize_roundtrip(res.model, weights_dtype)
    x = torch.from_numpy(res.standardizer.transform(pooled.features(fold.test)))
    chunk_probs = chunk_probabilities(model, x, LABELS)
    clips = clip_records(pooled, fold.test, chunk_probs, LABELS)
    metrics = {"test": classification_metrics(chunk_probs, pooled.label[fold.test],
                                              pooled.gender[fold.test], LABELS)}
    metrics["test"]["subset"] = (f"3 s chunks of the validation speakers {list(SHIP_VALIDATION)} (never "
                                 "trained on; the model is a weight average, so they chose nothing)")
    metrics["held_out_clips"] = summarise_clips("validation speakers, clip level", clips, LABELS)
    metrics["held_out_by_corpus"] = {c: summarise_clips(c, [r for r in clips if r["corpus"] == c], LABELS)
                                     for c in pooled.tables}
    crossval, loco = _published(Path(reports), recipe)
    corpora = list(pooled.tables)
    train_speakers = sorted(set(pooled.speaker[fold.train]))
    config = {
        "name": out.name, "corpus": "+".join(corpora), "corpora": corpora,
        "language": ", ".join(CORPORA[c].language for c in corpora),
        "labels": list(LABELS), "label_map": dict(MERGE),
        "corpus_labels": {c: sorted({MERGE.get(e, e) for e in CORPORA[c].all_classes}, key=LABELS.index)
                          for c in corpora},
        "feature_config": PAPER_FEATURES.to_dict(),
        "hyperparameters": recipe.hyperparameters(), "augmentation": False,
        "split": {"protocol": "speaker", "speakers": {"train": train_speakers, "val": list(SHIP_VALIDATION),
                                                      "test": [], "held_out": list(SHIP_VALIDATION)},
                  "rows": {"train": int(len(fold.train)), "val": int(len(fold.test)),
                           "held_out": int(len(fold.test))},
                  "standardizer_fitted_on": "train"},
        "protocol": "speaker",
        "clip_range": list(clip_range(_Rows(pooled), fold.train, res.standardizer)),
        "input_range": training_levels(pooled, fold.train, data_root),
        "data": {"corpora": {c: {"clips": len(pooled.tables[c].corpus.utterances),
                                 "chunks": int((pooled.corpus == c).sum()),
                                 "speakers": len({s for s in pooled.speaker if s.startswith(c + ":")}),
                                 **DATA_LICENCES[c]} for c in corpora}},
        "metrics": metrics, "crossval": crossval, "loco": loco,
        "parameter_count": keras_parameter_count(model),
        "training": {"recipe": recipe.to_dict(), "epochs": len(res.history), "best_epoch": len(res.history),
                     "loss_masked_per_corpus": True, "seconds": round(res.seconds, 1),
                     "cpu_seconds": round(res.cpu_seconds, 1), "precision": "fp32",
                     "hardware": f"{platform.processor() or platform.machine()}, 1 thread",
                     "history": res.history},
        "retrain_command": f"python -m export multicorpus ship --data-root {data_root} --recipe "
                           f"{recipe.name} --epochs {recipe.max_epochs} --out {out}",
    }
    bundle = save_exported_bundle(out, model, res.standardizer, config, weights_dtype,
                                  pooled.features(np.sort(fold.test)[::8][:64]))
    return {"name": bundle.name, "run_dir": str(run_dir),
            "parts": {c: {"uar": v["uar"], "n_clips": v["n_clips"]}
                      for c, v in metrics["held_out_by_corpus"].items()}}


class _Rows:
    """The one attribute study.clip_range reads (`features[rows]`), over the pooled rows."""
    def __init__(self, pooled: Pooled):
        self.features = _Gather(pooled)


class _Gather:
    def __init__(self, pooled: Pooled):
        self.pooled = pooled

    def __getitem__(self, rows):
        return self.pooled.features(np.asarray(rows))


def refresh_published(out, recipe: TrainConfig, reports="reports/multicorpus") -> dict:
    """Copy the protocols' figures now on disk into a written bundle's config and re-render its
    card; the weights (and so the ONNX model) stay as they are."""
    from ser_core.models.card import render
    out = Path(out)
    config = json.loads((out / "config.json").read_text())
    config["crossval"], config["loco"] = _published(Path(reports), recipe)
    (out / "config.json").write_text(json.dumps(config, indent=1))
    (out / "README.md").write_text(render(config))
    return {"name": config["name"], "parts": {}}
