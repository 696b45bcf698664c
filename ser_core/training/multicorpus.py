"""One CNN-LSTM for every corpus: the emotions visitors try, learned from all 40 speakers of EmoDB,
EMOVO and RAVDESS together, and measured on voices and corpora it never heard.

The outputs are `LABELS`, the union of the corpora's emotions with RAVDESS's calm merged into
neutral (calm is a quieter neutral there, and no other corpus has it; merged without a
measurement of keeping it apart, for lack of CPU time). A corpus lacks some of them (EmoDB has no
surprise, EMOVO and RAVDESS no boredom): for its rows those outputs are masked in the loss
(`loop.masked_cross_entropy`: left out of the row's softmax, so they are neither negatives nor
targets), never counted as wrong. This is `pretrain.py`'s multi-corpus training (each corpus's
emotions one output each, the study's layer stack, the recipe's augmentation and optimiser)
with the mask, one standardiser over all training rows (a visitor's clip has no corpus to pick
one by) and the recipe's weight averaging.

Protocols, each fold one model (`run_protocol`, resumable per epoch and per fold):
  pooled  4 fixed speaker folds over the 40 speakers (`POOLED_FOLDS`: each 10 speakers of all
          three corpora, every speaker tested once); the model answers over every output
  loco    leave one corpus out: trained on two corpora, tested on every speaker of the third,
          over the classes the third shares with the two (`shared_classes`)"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ser_core.config import PAPER_FEATURES, TrainConfig, stable_hash
from ser_core.data.corpora import CORPORA, read_corpus
from ser_core.data.dataset import ChunkTable, build_table, table_key
from ser_core.errors import ParameterError
from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.training.loop import (clip_probabilities, cpu_fast, fit_standardizer, plain,
                                    predict_tensor, recalibrate_batchnorm, train_epoch)
from ser_core.training.recipes import get_recipe
from ser_core.training.study import resolve_precision

LABELS = ("neutral", "happiness", "sadness", "anger", "fear", "disgust", "surprise", "boredom")
MERGE = {"calm": "neutral"}  # a corpus's emotion -> the output it trains
RECIPE = "swa-all"  # global offset removed, on-the-fly augmentation, the second half averaged
EPOCHS = 10  # CPU budget: 2 cores shared with 3 other jobs (reports/multicorpus/README.md)

# Fixed pooled folds ("corpus:speaker"): each fold 6 RAVDESS actors (3 m / 3 f), 2-3 EmoDB and 1-2
# EMOVO speakers; every one of the 40 speakers in exactly one fold.
POOLED_FOLDS: list[tuple[str, ...]] = [
    tuple(f"ravdess:{a:02d}" for a in range(6 * k + 1, 6 * k + 7)) + emodb + emovo
    for k, (emodb, emovo) in enumerate([
        (("emodb:03", "emodb:08", "emodb:15"), ("emovo:m1",)),
        (("emodb:10", "emodb:09", "emodb:16"), ("emovo:f1",)),
        (("emodb:11", "emodb:13"), ("emovo:m2", "emovo:f2")),
        (("emodb:12", "emodb:14"), ("emovo:m3", "emovo:f3"))])]
# the shipped model's validation speakers: ser_core/data/folds.SHIP_VALIDATION's, one m / one f
# per corpus (the app's example clips are RAVDESS 01 and 02's)
SHIP_VALIDATION = ("emodb:03", "emodb:08", "emovo:m1", "emovo:f1", "ravdess:01", "ravdess:02")


def parse_negatives(spec: str) -> list[tuple[str, str]]:
    """TrainConfig.absent_negatives ("neutral>boredom,...") -> [(label, absent), ...]."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        label, _, absent = part.partition(">")
        if label not in LABELS or absent not in LABELS or label == absent:
            raise ParameterError(f"absent_negatives {part!r}: expected LABEL>ABSENT, two different "
                                 f"outputs of {', '.join(LABELS)}")
        out.append((label, absent))
    return out


def label_of(emotion: str) -> str:
    return MERGE.get(emotion, emotion)


def corpus_labels(name: str) -> list[str]:
    """The outputs corpus `name` trains, in LABELS order."""
    have = {label_of(e) for e in CORPORA[name].all_classes}
    return [c for c in LABELS if c in have]


@dataclass
class Pooled:
    """Every chunk of every corpus (as recorded, no offline augmentation), one row each."""
    tables: dict[str, ChunkTable]
    corpus: np.ndarray  # per row: corpus name
    local: np.ndarray  # per row: its row in tables[corpus]
    clip: np.ndarray  # per row: clip id "corpus:file"
    speaker: np.ndarray  # "corpus:speaker"
    gender: np.ndarray
    label: np.ndarray  # index in LABELS

    def __len__(self):
        return len(self.corpus)

    def features(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), frames, bands) log-Mel of `rows`, in that order."""
        rows = np.asarray(rows)
        out = np.empty((len(rows), *self.tables[self.corpus[0]].cfg.input_shape), np.float32)
        for name, t in self.tables.items():
            sel = np.flatnonzero(self.corpus[rows] == name)
            if len(sel):
                order = np.argsort(self.local[rows[sel]])
                out[sel[order]] = t.features[self.local[rows[sel]][order]]
        return out

    def mask(self, rows: np.ndarray, allowed=LABELS, negatives=()) -> torch.Tensor:
        """(len(rows), len(LABELS)) bool: the outputs each row's corpus has, among `allowed`;
        `negatives` ((label, absent) pairs, `parse_negatives`): a row labelled `label` also has
        `absent` (a negative for it) where its corpus lacks that class."""
        have = {n: [c in corpus_labels(n) and c in allowed for c in LABELS] for n in self.tables}
        out = torch.tensor([have[c] for c in self.corpus[rows]], dtype=torch.bool)
        for label, absent in negatives:
            if absent in allowed:
                out[torch.from_numpy(self.label[rows] == LABELS.index(label)), LABELS.index(absent)] = True
        return out

    def key(self) -> str:
        return stable_hash([table_key(t.corpus, t.cfg, False) for t in self.tables.values()])


def pooled_table(data_root, corpora=tuple(CORPORA)) -> Pooled:
    """The corpora read from `data_root/<corpus>` with every emotion they have."""
    tables, cols = {}, {k: [] for k in ("corpus", "local", "clip", "speaker", "gender", "label")}
    for name in corpora:
        folder = Path(data_root) / name
        if not folder.is_dir():
            raise ParameterError(f"{folder}: not a folder (the multi-corpus model reads "
                                 f"{', '.join(corpora)} from --data-root)")
        t = build_table(read_corpus(name, folder, classes="all"), PAPER_FEATURES,
                        augmentation=False, progress=False)
        tables[name] = t
        utts = t.corpus.utterances
        cols["corpus"].append(np.full(len(t), name))
        cols["local"].append(np.arange(len(t)))
        cols["clip"].append(np.array([f"{name}:{u.name}" for u in utts])[t.utt])
        cols["speaker"].append(np.array([f"{name}:{u.speaker}" for u in utts])[t.utt])
        cols["gender"].append(np.array([u.gender for u in utts])[t.utt])
        cols["label"].append(np.array([LABELS.index(label_of(u.emotion)) for u in utts])[t.utt])
    return Pooled(tables, **{k: np.concatenate(v) for k, v in cols.items()})


# --- folds ----------------------------------------------------------------------------------------
@dataclass
class Fold:
    name: str  # "pooled-0", "loco-emodb", "ship"
    train: np.ndarray  # rows
    test: np.ndarray  # rows (the shipped model: its validation speakers)
    classes: tuple[str, ...]  # the outputs the test clips are decided over


def shared_classes(pooled: Pooled, test_corpus: str) -> tuple[str, ...]:
    """The test corpus's outputs that the other corpora train."""
    trained = {c for n in pooled.tables if n != test_corpus for c in corpus_labels(n)}
    return tuple(c for c in corpus_labels(test_corpus) if c in trained)


def folds(pooled: Pooled, protocol: str) -> list[Fold]:
    if protocol == "pooled":
        missing = set(pooled.speaker) ^ {s for f in POOLED_FOLDS for s in f}
        if missing:
            raise ParameterError(f"the corpora's speakers do not match POOLED_FOLDS (differ in "
                                 f"{sorted(missing)})")
        return [Fold(f"pooled-{k}", np.flatnonzero(~np.isin(pooled.speaker, f)),
                     np.flatnonzero(np.isin(pooled.speaker, f)), LABELS)
                for k, f in enumerate(POOLED_FOLDS)]
    if protocol == "loco":
        out = []
        for name in pooled.tables:
            shared = shared_classes(pooled, name)
            test = np.flatnonzero((pooled.corpus == name)
                                  & np.isin(pooled.label, [LABELS.index(c) for c in shared]))
            out.append(Fold(f"loco-{name}", np.flatnonzero(pooled.corpus != name), test, shared))
        return out
    if protocol == "ship":
        val = np.isin(pooled.speaker, SHIP_VALIDATION)
        return [Fold("ship", np.flatnonzero(~val), np.flatnonzero(val), LABELS)]
    raise ParameterError(f"protocol {protocol!r} (accepted: pooled, loco, ship)")


# --- training -------------------------------------------------------------------------------------
def recipe_for(epochs: int = EPOCHS, name: str | None = None, **changes) -> TrainConfig:
    """Recipe `name` (default RECIPE) at `epochs`."""
    return get_recipe(name or RECIPE, epochs, **changes)


@dataclass
class Trained:
    model: CNNLSTM
    standardizer: object
    history: list
    seconds: float
    cpu_seconds: float


def train_rows(pooled: Pooled, rows: np.ndarray, recipe: TrainConfig, run_dir: Path | None = None,
               log=None) -> Trained:
    """The study's CNN-LSTM with LABELS outputs trained on `rows` by `recipe` with the loss masked
    per corpus; the model is the average of the weights of the epochs from swa_start on, its
    BatchNorm statistics recomputed on the clean rows. Resumes from run_dir/checkpoint.pt."""
    log = log or sys.stderr
    if not recipe.swa_start:
        raise ParameterError(f"recipe {recipe.name!r}: the multi-corpus model has no validation "
                             f"to select on; it needs weight averaging (swa_start > 0)")
    rows = np.sort(rows)
    feats = pooled.features(rows)
    standardizer = fit_standardizer(feats, recipe)
    x = torch.from_numpy(standardizer.transform(feats))
    del feats
    rooms = None
    if recipe.room_p > 0:  # each chunk's copy recorded in a simulated room, same standardiser
        from ser_core.data.room_copies import room_copy
        copies = Pooled({n: dataclasses.replace(t, features=room_copy(t)) for n, t in pooled.tables.items()},
                        pooled.corpus, pooled.local, pooled.clip, pooled.speaker, pooled.gender, pooled.label)
        rooms = torch.from_numpy(standardizer.transform(copies.features(rows)))
    y = torch.from_numpy(pooled.label[rows]).long()
    trained = {c for c in LABELS if bool((y == LABELS.index(c)).any())}
    mask = pooled.mask(rows, trained, parse_negatives(recipe.absent_negatives))
    torch.manual_seed(recipe.seed)
    model = CNNLSTM(len(LABELS), recipe.dropout, recipe.lstm_input_dropout,
                    PAPER_FEATURES.input_shape, input_norm=recipe.input_norm)
    cpu_fast(model, "cpu")
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate,
                            weight_decay=recipe.weight_decay, eps=1e-7)
    g = torch.Generator().manual_seed(recipe.seed)
    # bfloat16 autocast where the CPU runs it natively (AMX / AVX512-BF16: about 1.8x faster)
    amp = {"device_type": "cpu", "dtype": torch.bfloat16, "enabled": resolve_precision("auto") == "bf16"}
    steps = math.ceil(len(x) / recipe.batch_size)
    state = {"epoch": 0, "seconds": 0.0, "cpu_seconds": 0.0, "history": [], "swa_n": 0}
    key = stable_hash([pooled.key(), rows.tolist(), recipe.key()])
    ckpt = Path(run_dir) / "checkpoint.pt" if run_dir else None
    if ckpt and ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        if saved["key"] != key:
            raise ParameterError(f"{ckpt}: checkpoint of other rows or another recipe; remove it")
        model.load_state_dict(saved["model"]); opt.load_state_dict(saved["opt"])
        state = saved["state"]; g.set_state(saved["gen"]); torch.set_rng_state(saved["torch_rng"])
    swa_from = int(recipe.swa_start * recipe.max_epochs)
    while state["epoch"] < recipe.max_epochs:
        t0, c0 = time.time(), time.process_time()
        loss = train_epoch(model, opt, x, y, recipe, g, amp, "cpu", len(LABELS),
                           state["epoch"] * steps, steps * recipe.max_epochs, mask=mask,
                           alternate=rooms, alternate_p=recipe.room_p)
        if state["epoch"] >= swa_from:
            k = state["swa_n"]
            params = {n: p.detach().float().clone() for n, p in model.named_parameters()}
            state["swa"] = params if k == 0 else {n: (state["swa"][n] * k + params[n]) / (k + 1)
                                                  for n in params}
            state["swa_n"] = k + 1
        state["epoch"] += 1
        state["seconds"] += time.time() - t0
        state["cpu_seconds"] += time.process_time() - c0
        row = {"epoch": state["epoch"], "loss": round(loss, 4), "seconds": round(time.time() - t0, 1)}
        state["history"].append(row)
        print(json.dumps(row), file=log, flush=True)
        if ckpt:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                        "gen": g.get_state(), "torch_rng": torch.get_rng_state(), "key": key}, tmp)
            tmp.replace(ckpt)
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(state["swa"][n].to(p.dtype))
    recalibrate_batchnorm(model, x, "cpu", amp)
    plain(model)
    return Trained(model, standardizer, state["history"], state["seconds"], state["cpu_seconds"])


def chunk_probabilities(model, x: torch.Tensor, classes, shifts: int = 1) -> np.ndarray:
    """(chunks, len(classes)) probabilities over `classes` only (the softmax of their logits);
    shifts > 1: the mean over that many circular time shifts of each chunk (test-time averaging,
    the training's time-shift augmentation)."""
    cols = [LABELS.index(c) for c in classes]
    frames = x.shape[1]
    out = 0
    for s in range(shifts):
        p = predict_tensor(model, torch.roll(x, s * frames // shifts, 1))[:, cols]
        out = out + p / p.sum(1, keepdims=True)
    return out / shifts


def clip_records(pooled: Pooled, rows: np.ndarray, chunk_probs: np.ndarray, classes) -> list[dict]:
    """One record per clip of `rows` (the mean of its chunks' probabilities), as
    stats.summarise_clips reads them, with its corpus."""
    ids, probs = clip_probabilities(chunk_probs, pooled.clip[rows])
    first = {c: r for r, c in zip(rows[::-1], pooled.clip[rows][::-1])}
    return [{"file": c, "corpus": str(pooled.corpus[first[c]]), "speaker": str(pooled.speaker[first[c]]),
             "gender": str(pooled.gender[first[c]]),
             "label": list(classes).index(LABELS[pooled.label[first[c]]]),
             "probs": [round(float(v), 5) for v in p]} for c, p in zip(ids, probs)]
