"""Multi-corpus pre-training: the CNN-LSTM first learns emotion from the other two corpora, then
each fold (or a shipped model) starts from those weights.

A corpus here holds 6 to 24 speakers; a model trained on a few of them learns their voices as
much as their emotions. Before training on corpus C, the same layer stack is trained on every
clip of the two other corpora, with every emotion they have (EmoDB 7, EMOVO 7, RAVDESS 8 classes,
one output per emotion of `EMOTIONS`), by the recipe's own augmentation and optimiser for
`pretrain_epochs` epochs and no model selection (nothing of C is seen, so C's test speakers stay
unseen). C's model then starts from those weights: every layer copied, and the output row of
each of C's classes copied from the same emotion's row (a class the other corpora lack, EmoDB's
boredom, keeps its fresh initialisation).

The pre-trained weights depend on the target corpus only through which corpora are "the other
two", so one file serves every fold of C and the model shipped for C; it is cached beside the
folds (`runs/crossval/pretrain-<C>-<key>.pt`) and resumes per epoch."""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ser_core.config import PAPER_FEATURES, TrainConfig, stable_hash
from ser_core.data.corpora import CORPORA, read_corpus
from ser_core.data.dataset import build_table, table_key
from ser_core.errors import ParameterError
from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.training.loop import cpu_fast, fit_standardizer, plain, recalibrate_batchnorm, train_epoch
from ser_core.training.study import load_rows, resolve_precision

# every emotion of the corpora (ser_core.data.corpora.CORPORA): the pre-trained model's outputs,
# in this order (the order the weights were trained in: a corpus added later appends its own)
EMOTIONS = ("neutral", "calm", "happiness", "sadness", "anger", "fear", "disgust", "surprise",
            "boredom")


def other_corpora(target: str) -> list[str]:
    if target not in CORPORA:
        raise ParameterError(f"no pre-training for corpus {target!r} (accepted: {', '.join(CORPORA)})")
    return [c for c in CORPORA if c != target]


def pretrain_tables(target: str, data_root) -> list:
    """The chunk tables (every class, as recorded) of the corpora other than `target`, read from
    `data_root/<corpus>`."""
    tables = []
    for name in other_corpora(target):
        folder = Path(data_root) / name
        if not folder.is_dir():
            raise ParameterError(f"pre-training for {target} reads {name} from {folder}, which is not "
                                 f"a folder (pass --pretrain-data-root with {', '.join(other_corpora(target))})")
        tables.append(build_table(read_corpus(name, folder, classes="all"), PAPER_FEATURES,
                                  augmentation=False, progress=False))
    return tables


# recipe fields that shape only the training on the target corpus, not the pre-training
FINE_TUNING_ONLY = ("name", "describe", "max_epochs", "patience", "select_on", "swa_start",
                    "offline_augmentation", "hold_out_validation", "finetune_lr", "cotrain")


def pretrain_path(target: str, recipe: TrainConfig, tables, run_root) -> Path:
    """Keyed by the other corpora's tables and the recipe's fields that pre-training uses, so
    recipes that differ only in how they fine-tune share one file."""
    fields = {k: v for k, v in recipe.key().items() if k not in FINE_TUNING_ONLY}
    key = stable_hash([[table_key(t.corpus, t.cfg, False) for t in tables], fields])
    return Path(run_root) / f"pretrain-{target}-{key}.pt"


def pretrain(target: str, data_root, recipe: TrainConfig, run_root="runs/crossval", precision="auto",
             device=None, log=None) -> dict:
    """Train (or load) the pre-trained weights for `target`: {"model": state_dict, "outputs":
    EMOTIONS (the output rows), "classes" (the emotions the other corpora had), "corpora",
    "epochs", "cpu_seconds", "seconds"}."""
    log = log or sys.stderr
    tables = pretrain_tables(target, data_root)
    path = pretrain_path(target, recipe, tables, run_root)
    saved = torch.load(path, weights_only=False) if path.is_file() else None
    if saved is not None and saved.get("done"):
        return saved
    path.parent.mkdir(parents=True, exist_ok=True)
    precision = resolve_precision(precision)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # each corpus by its own standardiser, as C's rows will be by theirs
    x = torch.cat([load_rows(t, np.arange(len(t)), fit_standardizer(t.features, recipe))
                   for t in tables])
    y = torch.from_numpy(np.concatenate([
        np.array([EMOTIONS.index(t.corpus.classes[k]) for k in t.labels]) for t in tables])).long()
    torch.manual_seed(recipe.seed)
    model = CNNLSTM(len(EMOTIONS), recipe.dropout, recipe.lstm_input_dropout,
                    tables[0].cfg.input_shape, input_norm=recipe.input_norm).to(device)
    cpu_fast(model, device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate,
                            weight_decay=recipe.weight_decay, eps=1e-7)
    g = torch.Generator().manual_seed(recipe.seed)
    amp = dict(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
               enabled=precision == "bf16")
    steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.pretrain_epochs
    state = {"epoch": 0, "seconds": 0.0, "cpu_seconds": 0.0}
    if saved is not None:  # an interrupted run: resume after its last epoch
        model.load_state_dict(saved["model"]); opt.load_state_dict(saved["opt"])
        state = saved["state"]; g.set_state(saved["gen"]); torch.set_rng_state(saved["torch_rng"])
    corpora = [t.corpus.name for t in tables]
    while state["epoch"] < recipe.pretrain_epochs:
        t0, c0 = time.time(), time.process_time()
        loss = train_epoch(model, opt, x, y, recipe, g, amp, device, len(EMOTIONS),
                           state["epoch"] * steps_per_epoch, total_steps)
        state["epoch"] += 1
        state["seconds"] += time.time() - t0
        state["cpu_seconds"] += time.process_time() - c0
        print(f"[pre-training for {target} on {'+'.join(corpora)}: {len(x)} chunks] epoch "
              f"{state['epoch']}/{recipe.pretrain_epochs} loss {loss:.3f} ({time.time() - t0:.1f} s)",
              file=log, flush=True)
        _save(path, {"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                     "gen": g.get_state(), "torch_rng": torch.get_rng_state(), "done": False})
    recalibrate_batchnorm(model, x, device, amp)
    plain(model)
    present = [e for i, e in enumerate(EMOTIONS) if bool((y == i).any())]
    out = {"model": model.state_dict(), "outputs": list(EMOTIONS), "classes": present, "corpora": corpora,
           "chunks": len(x), "epochs": state["epoch"], "seconds": round(state["seconds"], 1),
           "cpu_seconds": round(state["cpu_seconds"], 1), "done": True}
    _save(path, out)
    print(json.dumps({k: v for k, v in out.items() if k != "model"}), file=log, flush=True)
    return out


def cotrain_rows(target: str, classes, data_root, recipe: TrainConfig) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Every chunk of the corpora other than `target` whose emotion is one of `classes` (the
    target's), each corpus standardised by its own standardiser as in pre-training, labelled by
    its index in `classes`: the training rows a `cotrain` recipe adds to the target's. None of
    the target's speakers is among them."""
    xs, ys, counts = [], [], {}
    for t in pretrain_tables(target, data_root):
        keep = np.flatnonzero(np.isin(np.array(t.corpus.classes)[t.labels], list(classes)))
        if len(keep) == 0:
            continue
        xs.append(load_rows(t, keep, fit_standardizer(t.features, recipe)))
        ys.append(np.array([list(classes).index(t.corpus.classes[k]) for k in t.labels[keep]]))
        counts[t.corpus.name] = {"chunks": int(len(keep)),
                                 "speakers": int(len(set(t.speakers[keep])))}
    if not xs:
        raise ParameterError(f"co-training for {target}: the other corpora have none of its classes "
                             f"{', '.join(classes)}")
    return torch.cat(xs), torch.from_numpy(np.concatenate(ys)).long(), counts


def cotrain_for(recipe: TrainConfig, corpus, data_dir, data_root=None):
    """((x, y), counts) of `cotrain_rows` for `corpus` (read from `data_root`, default the folder
    holding data_dir) when the recipe co-trains, else (None, None)."""
    if not recipe.cotrain:
        return None, None
    x, y, counts = cotrain_rows(corpus.name, corpus.classes,
                                data_root or Path(data_dir).resolve().parent, recipe)
    return (x, y), counts


def _save(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
