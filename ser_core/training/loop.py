"""Our training loop: a chunk table's training rows and a recipe (ser_core/training/recipes.py,
its fields documented in ser_core/config.py TrainConfig) -> a trained CNN-LSTM.

One pass per epoch over shuffled batches with on-the-fly augmentation, label smoothing and
mixup, AdamW on a cosine schedule; after each epoch the BatchNorm statistics recomputed on the
clean rows, the clip-level validation UAR (when there are validation rows) for selection and
early stopping, the weights added to the running average (weight-averaging recipes). Resumes
from a per-epoch checkpoint that must match the recipe's key."""
from __future__ import annotations

import copy
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ser_core.audio.standardize import Standardizer
from ser_core.config import PAPER_FEATURES, TrainConfig, record_key
from ser_core.data.dataset import ChunkTable, build_table
from ser_core.errors import ParameterError
from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.stats import uar
from ser_core.training.study import load_rows, resolve_precision


def table_for(corpus, recipe: TrainConfig, cfg=None):
    """The chunk table a recipe trains on: with the offline augmented versions when it asks for
    them (rows with aug == 0 are the clips as recorded, what validation and test use)."""
    return build_table(corpus, cfg or PAPER_FEATURES, augmentation=recipe.offline_augmentation,
                       progress=False)


def fit_standardizer(features, recipe: TrainConfig) -> Standardizer:
    if recipe.standardizer == "band":
        return Standardizer.fit_bands(features)
    if recipe.standardizer == "cell":
        return Standardizer.fit(features)
    if recipe.standardizer == "global":
        return Standardizer.fit_global(features)
    raise ParameterError(f"standardizer {recipe.standardizer!r} (accepted: band, cell, global)")


def augment_batch(x: torch.Tensor, recipe: TrainConfig, g: torch.Generator) -> torch.Tensor:
    """Random time shift, Mel shift and SpecAugment masks on a (batch, frames, bands) batch of
    standardised log-Mel (masked cells set to 0, the training mean)."""
    b, frames, bands = x.shape
    x = x.clone()
    if recipe.time_roll:
        shifts = torch.randint(0, frames, (b,), generator=g)
        idx = (torch.arange(frames)[None, :] + shifts[:, None]) % frames
        x = torch.gather(x, 1, idx[:, :, None].expand(b, frames, bands))
    if recipe.mel_shift:
        shifts = torch.randint(-recipe.mel_shift, recipe.mel_shift + 1, (b,), generator=g)
        idx = (torch.arange(bands)[None, :] - shifts[:, None]).clamp(0, bands - 1)
        x = torch.gather(x, 2, idx[:, None, :].expand(b, frames, bands))
    for n, width, dim, size in ((recipe.freq_masks, recipe.freq_mask_width, 2, bands),
                                (recipe.time_masks, recipe.time_mask_width, 1, frames)):
        for _ in range(n):
            w = torch.randint(0, width + 1, (b,), generator=g)
            start = (torch.rand(b, generator=g) * (size - w)).long()
            pos = torch.arange(size)[None, :]
            mask = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (b, size)
            mask = mask[:, None, :] if dim == 2 else mask[:, :, None]
            x = x.masked_fill(mask, 0.0)
    return x


def clip_probabilities(chunk_probs: np.ndarray, utt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each utterance's chunk probabilities (the serving path's clip decision):
    (utterance ids in order, (n_utterances, classes))."""
    ids, inverse = np.unique(utt, return_inverse=True)
    out = np.zeros((len(ids), chunk_probs.shape[1]))
    np.add.at(out, inverse, chunk_probs)
    return ids, out / np.bincount(inverse)[:, None]


@torch.no_grad()
def recalibrate_batchnorm(model: CNNLSTM, x: torch.Tensor, device="cpu", amp=None, batch=128):
    """Recompute every BatchNorm layer's running statistics as the plain average over the clean
    rows x (the CNN alone runs: BatchNorm sits there), as after stochastic weight averaging."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
        m.train()
    for i in range(0, len(x), batch):
        with torch.autocast(**(amp or {"device_type": "cpu", "enabled": False})):
            model.cnn(model.blocks(x[i:i + batch].to(device)))
    for m, (momentum, training) in zip(bns, saved):
        m.momentum = momentum
        m.train(training)


@torch.no_grad()
def predict_tensor(model, x: torch.Tensor, device="cpu", amp=None, batch=128) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(x), batch):
        with torch.autocast(**(amp or {"device_type": "cpu", "enabled": False})):
            logits = model(x[i:i + batch].to(device)).float()
        out.append(torch.softmax(logits, 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.dense.out_features))


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor,
                         mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean soft-target cross-entropy; with `mask` (rows x classes, True where the row's corpus has
    the class) each row's softmax runs over its own classes only: an absent class is neither a
    negative nor a target, and its logit gets no gradient from that row."""
    if mask is not None:
        logits = logits.masked_fill(~mask, -1e9)
        target = target * mask
    return torch.sum(-target * F.log_softmax(logits.float(), 1), 1).mean()


def train_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, recipe: TrainConfig, g: torch.Generator,
                amp: dict, device, n_classes: int, first_step: int, total_steps: int,
                peak_lr: float | None = None, mask: torch.Tensor | None = None,
                alternate: torch.Tensor | None = None, alternate_p: float = 0.0) -> float:
    """One pass over (x, y) in shuffled batches: on-the-fly augmentation, label smoothing, mixup,
    the cosine learning rate (from `peak_lr`, default the recipe's) by global step. `mask` (rows x
    classes, bool): the classes each row's corpus has (`masked_cross_entropy`; smoothing spreads
    over them only, mixup pairs rows of the same class set). `alternate` (the shape of x): another
    version of each row (e.g. recorded in a room), drawn instead of the row with probability
    `alternate_p`. Returns the mean training loss."""
    peak_lr = recipe.learning_rate if peak_lr is None else peak_lr
    model.train()
    perm = torch.randperm(len(x), generator=g)
    total, n = 0.0, 0
    for bi, i in enumerate(range(0, len(perm), recipe.batch_size)):
        if recipe.schedule == "cosine":
            lr = peak_lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (first_step + bi) / total_steps)))
            for group in opt.param_groups:
                group["lr"] = lr
        idx = perm[i:i + recipe.batch_size]
        xb = x[idx]
        if alternate is not None and alternate_p > 0:
            pick = torch.rand(len(idx), generator=g) < alternate_p
            xb = torch.where(pick[:, None, None], alternate[idx], xb)
        xb = augment_batch(xb, recipe, g)
        target = F.one_hot(y[idx], n_classes).float()
        mb = None if mask is None else mask[idx]
        if recipe.label_smoothing:
            spread = 1 / n_classes if mb is None else mb.float() / mb.sum(1, keepdim=True)
            target = target * (1 - recipe.label_smoothing) + recipe.label_smoothing * spread
        if recipe.mixup_alpha > 0 and len(idx) > 1:
            lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g)))
                        .beta(recipe.mixup_alpha, recipe.mixup_alpha))
            lam = max(lam, 1 - lam)
            j = torch.randperm(len(idx), generator=g)
            if mb is not None:  # a row of another class set mixes with itself
                j = torch.where((mb == mb[j]).all(1), j, torch.arange(len(idx)))
            xb = lam * xb + (1 - lam) * xb[j]
            target = lam * target + (1 - lam) * target[j]
        xb, target = xb.to(device), target.to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            logits = model(xb)
        loss = masked_cross_entropy(logits, target, None if mb is None else mb.to(device))
        loss.backward()
        opt.step()
        total += loss.item() * len(idx); n += len(idx)
    return total / max(n, 1)


def start_from(model: CNNLSTM, init: dict, classes) -> None:
    """Copy the pre-trained weights into `model` (whose outputs are `classes`): every layer but
    the output one as is; the output row of each class from the same emotion's row, where the
    pre-training data had that emotion."""
    state = {k: v for k, v in init["model"].items() if not k.startswith("dense.")}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape
        raise ParameterError(f"pre-trained weights do not fit the model: {e}") from None
    if unexpected or any(not k.startswith("dense.") for k in missing):
        raise ParameterError(f"pre-trained weights do not fit the model (missing {missing}, "
                             f"unexpected {unexpected})")
    with torch.no_grad():
        for i, c in enumerate(classes):
            if c in init["classes"]:  # an emotion pre-training saw
                j = init["outputs"].index(c)
                model.dense.weight[i] = init["model"]["dense.weight"][j]
                model.dense.bias[i] = init["model"]["dense.bias"][j]


def cpu_fast(model: CNNLSTM, device) -> CNNLSTM:
    """On CPU: channels-last CNN and unrolled LSTM, the same function trained about 1.8x faster
    (ser_core/models/cnn_lstm.py); `plain` undoes it before the weights are handed back."""
    if not str(device).startswith("cuda"):
        model.use_channels_last()
        model.unroll_lstm = True
    return model


def plain(model: CNNLSTM) -> CNNLSTM:
    model.cnn.to(memory_format=torch.contiguous_format)
    model.channels_last, model.unroll_lstm = False, False
    return model.eval().cpu()


@dataclass
class RecipeResult:
    model: CNNLSTM
    standardizer: Standardizer
    history: list
    best_epoch: int
    seconds: float
    cpu_seconds: float
    precision: str
    device: str


def train_recipe(table: ChunkTable, train_rows: np.ndarray, val_rows: np.ndarray, recipe: TrainConfig,
                 run_dir: Path | None = None, precision: str = "auto", device: str | None = None,
                 log=None, progress=None, init: dict | None = None,
                 extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> RecipeResult:
    """Train the study's CNN-LSTM on `train_rows` with `recipe`, selecting the epoch on the
    clip-level validation figure of `val_rows` (none: the recipe must average weights, and every
    epoch runs). Resumes from run_dir/checkpoint.pt. `init`: the pre-trained weights to start
    from (ser_core/training/pretrain.py), when the recipe has them; `extra`: standardised chunks and their
    labels (in the target's classes) that train beside `train_rows` (pretrain.cotrain_rows)."""
    log = log or sys.stderr
    if recipe.loop != "ours":
        raise ParameterError(f"recipe {recipe.name!r} is trained by the study's loop "
                             f"(ser_core/training/study.py), not this one")
    if len(val_rows) == 0 and not recipe.swa_start:
        raise ParameterError(f"recipe {recipe.name!r}: no validation rows to select an epoch on; "
                             f"a recipe without validation must average weights (swa_start > 0)")
    precision = resolve_precision(precision)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    standardizer = fit_standardizer(table.features[np.sort(train_rows)], recipe)
    labels = table.labels
    n_classes = len(table.corpus.classes)
    x_tr = load_rows(table, train_rows, standardizer)
    y_tr = torch.from_numpy(labels[train_rows]).long()
    if extra is not None:
        x_tr, y_tr = torch.cat([x_tr, extra[0]]), torch.cat([y_tr, extra[1]])
    x_va = load_rows(table, val_rows, standardizer)
    torch.manual_seed(recipe.seed)
    model = CNNLSTM(n_classes, recipe.dropout, recipe.lstm_input_dropout, table.cfg.input_shape,
                    input_norm=recipe.input_norm).to(device)
    if init is not None:
        start_from(model, init, table.corpus.classes)
    cpu_fast(model, device)
    params = [p for p in model.parameters() if p.requires_grad]
    peak_lr = recipe.finetune_lr if init is not None and recipe.finetune_lr else recipe.learning_rate
    opt = torch.optim.AdamW(params, lr=peak_lr, weight_decay=recipe.weight_decay,
                            eps=1e-7)
    steps_per_epoch = math.ceil(len(x_tr) / recipe.batch_size)
    total_steps = steps_per_epoch * recipe.max_epochs
    state = {"epoch": 0, "best_score": -math.inf, "best_state": None, "best_epoch": 0, "wait": 0,
             "history": [], "seconds": 0.0, "cpu_seconds": 0.0}
    g = torch.Generator().manual_seed(recipe.seed)
    ckpt = Path(run_dir) / "checkpoint.pt" if run_dir else None
    if ckpt and ckpt.exists():
        saved = torch.load(ckpt, weights_only=False)
        if record_key(saved.get("recipe", {"name": ""})) != recipe.key():
            raise ParameterError(f"{ckpt}: checkpoint of another recipe; remove it or use "
                                 f"another run folder")
        model.load_state_dict(saved["model"]); opt.load_state_dict(saved["opt"])
        state = saved["state"]; g.set_state(saved["gen"]); torch.set_rng_state(saved["torch_rng"])
        print(f"resuming at epoch {state['epoch'] + 1}", file=log, flush=True)
    amp = dict(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16,
               enabled=precision == "bf16")
    y_va_chunks = labels[val_rows]
    val_ids, _ = clip_probabilities(np.zeros((len(val_rows), n_classes)), table.utt[val_rows])
    y_va_clip = np.array([table.corpus.label_index(table.corpus.utterances[i]) for i in val_ids])
    # a weight-averaging recipe runs every epoch: the model is the average, not the epoch
    # validation liked, and stopping early would only cut the average short (its recipes set
    # patience to max_epochs, which a --max-epochs override used to leave behind: the 160-epoch
    # RAVDESS bundle stopped at epoch 103 and averaged 23 epochs instead of 80)
    while state["epoch"] < recipe.max_epochs and (recipe.swa_start or state["wait"] < recipe.patience):
        t0, c0 = time.time(), time.process_time()
        total = train_epoch(model, opt, x_tr, y_tr, recipe, g, amp, device, n_classes,
                            state["epoch"] * steps_per_epoch, total_steps, peak_lr)
        if recipe.swa_start and state["epoch"] >= int(recipe.swa_start * recipe.max_epochs):
            k = state.get("swa_n", 0)
            params = {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}
            state["swa"] = params if k == 0 else {n: (state["swa"][n] * k + params[n]) / (k + 1)
                                                  for n in params}
            state["swa_n"] = k + 1
        if recipe.bn_recalibrate:
            recalibrate_batchnorm(model, x_tr, device, amp)
        state["epoch"] += 1
        val = dict.fromkeys(("val_loss", "val_accuracy", "val_uar"))  # None: no validation
        if len(val_rows):
            probs = predict_tensor(model, x_va, device, amp)
            val_loss = float(F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)),
                                        torch.from_numpy(y_va_chunks).long()))
            _, clip = clip_probabilities(probs, table.utt[val_rows])
            pred = clip.argmax(1)
            val_uar = uar(y_va_clip, pred, n_classes)
            val = {"val_loss": round(val_loss, 4),
                   "val_accuracy": round(float(np.mean(pred == y_va_clip)), 4),
                   "val_uar": round(val_uar, 4)}
            score = val_uar if recipe.select_on == "val_uar" else -val_loss
            if score > state["best_score"] + (1e-9 if recipe.select_on == "val_uar" else 1e-4):
                state.update(best_score=score, best_epoch=state["epoch"], wait=0,
                             best_state=copy.deepcopy(model.state_dict()))
            else:
                state["wait"] += 1
        # without validation nothing is selected and nothing stops early: the average is the model
        state["seconds"] += time.time() - t0
        state["cpu_seconds"] += time.process_time() - c0
        row = {"epoch": state["epoch"], "loss": round(total, 4), **val,
               "lr": opt.param_groups[0]["lr"], "seconds": round(time.time() - t0, 1)}
        state["history"].append(row)
        print(json.dumps(row), file=log, flush=True)
        if progress:
            progress(state["epoch"], recipe.max_epochs, row)
        if ckpt:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "state": state,
                        "gen": g.get_state(), "torch_rng": torch.get_rng_state(),
                        "recipe": recipe.to_dict()}, tmp)
            tmp.replace(ckpt)
    if state.get("swa_n"):
        with torch.no_grad():
            for n, p in model.named_parameters():
                p.copy_(state["swa"][n].to(p.dtype))
        recalibrate_batchnorm(model, x_tr, device, amp)
        state["best_epoch"] = state["epoch"]  # the average, taken at the end
    elif state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    plain(model)
    return RecipeResult(model, standardizer, state["history"], state["best_epoch"],
                        state["seconds"], state["cpu_seconds"], precision, device)
