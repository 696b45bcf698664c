"""Our training recipes for the speaker protocol: the study's CNN-LSTM layer stack, trained to
recognise new voices.

The study's recipe (ser_core/training/study.py, kept exactly for the "paper" protocol) overfits the few
speakers of a corpus: under EmoDB's speaker cross-validation it reaches 0.27 (chance 0.20),
answering sadness for most clips (reports/crossval/README.md). A `Recipe`
changes only how the same layer stack is trained and fed:
  - `standardizer`: "cell" (the study: one mean/scale per time-frequency cell), "band" (one
    per Mel band, pooled over time) or "global" (one for all cells);
  - `input_norm`: "utterance" removes each chunk's per-band mean over time inside the model
    (so a recording's level, noise floor and microphone colour do not move the input),
    "global" one offset per chunk (level and noise floor only);
  - on-the-fly augmentation of the standardised log-Mel: random circular time shift, a random
    shift of the Mel axis by up to `mel_shift` bands (a cheap stand-in for pitch/vocal-tract
    changes), SpecAugment masks (Park et al., Interspeech 2019), mixup (Zhang et al., ICLR
    2018);
  - AdamW with weight decay, label smoothing, a cosine learning-rate schedule;
  - BatchNorm statistics recomputed on the clean training rows after every epoch
    (`bn_recalibrate`): mixup and masks shrink the activations BatchNorm sees in training, so its
    running statistics lag behind clean input and the eval-mode model collapses onto one class
    (measured: a RAVDESS fold answered one class for 91 of 96 validation chunks in eval mode and
    0.44 accuracy with batch statistics);
  - model selection on validation unweighted average recall (UAR, clip level), early stopping
    on it;
  - `offline_augmentation`: the training speakers' clips also in the study's eight pitch-shifted
    and time-stretched versions (ser_core/audio/augment.py; validation and test clips stay as
    recorded), so an epoch is nine times longer and `max_epochs` is counted in those;
  - `pretrain`: start from the layer stack trained on the two other corpora (pretrain.py);
  - `cotrain`: keep those corpora's clips of the target's classes in the training set while
    fine-tuning (their speakers join the target's few: EMOVO's folds train on 4 speakers of
    their own), each corpus by its own standardiser, as in pre-training;
  - `swa_start`: stochastic weight averaging (Izmailov et al., UAI 2018): the model is the
    average of the weights after every epoch from that fraction of `max_epochs` on, with its
    BatchNorm statistics recomputed, instead of the epoch two validation speakers chose (a
    choice that noisy picks a lucky epoch as often as a good one); no early stop;
  - `hold_out_validation`: with nothing to select (weight averaging), a cross-validation fold's
    validation speakers train too (EmoDB 8 training speakers instead of 6, RAVDESS 20 instead of
    16, EMOVO every sentence of its 4 instead of 80 %). A shipped model still keeps its two
    validation speakers out, as the figure beside it.
Each recipe is a named, frozen object; the cross-validation report has one ablation row per
recipe. Training resumes from a per-epoch checkpoint."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ser_core.data.dataset import ChunkTable
from ser_core.errors import ParameterError
from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.audio.standardize import Standardizer
from ser_core.training.study import load_rows, resolve_precision


@dataclass(frozen=True)
class Recipe:
    name: str
    standardizer: str = "band"
    input_norm: str = "utterance"
    time_roll: bool = True
    mel_shift: int = 3
    freq_masks: int = 2
    freq_mask_width: int = 12
    time_masks: int = 2
    time_mask_width: int = 30
    mixup_alpha: float = 0.2
    label_smoothing: float = 0.1
    dropout: float = 0.3
    lstm_input_dropout: float = 0.2
    learning_rate: float = 5e-4
    weight_decay: float = 1e-2
    batch_size: int = 32
    max_epochs: int = 80
    patience: int = 30
    select_on: str = "val_uar"  # or "val_loss"
    bn_recalibrate: bool = True
    schedule: str = "cosine"  # or "constant"
    seed: int = 1938
    offline_augmentation: bool = False
    pretrain: bool = False  # start from weights trained on the other two corpora (pretrain.py)
    pretrain_epochs: int = 30
    # fine-tune on the target's training speakers together with every clip of the other two
    # corpora whose emotion is one of the target's classes (pretrain.cotrain_rows)
    cotrain: bool = False
    # > 0: the peak learning rate when fine-tuning pre-trained weights (pre-training keeps
    # learning_rate), so that the layers pre-training shaped move less
    finetune_lr: float = 0.0
    swa_start: float = 0.0  # > 0: average the weights of every epoch from this fraction of max_epochs on
    # False: a cross-validation fold holds out no validation speakers (they train too); only for
    # recipes that select nothing on validation (swa_start > 0)
    hold_out_validation: bool = True
    describe: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def key(self) -> dict:
        """What names a run folder and what a checkpoint must match: the name and the fields
        that differ from the defaults, so that a field added later, with a default that keeps the
        old behaviour, leaves the runs made before it valid."""
        defaults = Recipe(name=self.name)
        return {k: v for k, v in self.to_dict().items()
                if k == "name" or (k != "describe" and v != getattr(defaults, k))}

    def hyperparameters(self) -> dict:
        """What a bundle config records (ModelBundle.torch_model reads dropout, input_norm)."""
        d = self.to_dict()
        d["recipe"] = d.pop("name")
        d.pop("describe")
        return d


def _r(name, describe, **kw) -> Recipe:
    return Recipe(name=name, describe=describe, **kw)


# The ablation ladder: each row changes one thing from a row above (EmoDB folds first), then the
# candidates run on every corpus (README, "Default models"). DEFAULT_RECIPE is the winner.
RECIPES: dict[str, Recipe] = {r.name: r for r in [
    _r("study", "the study's training (Adam 1e-3, cell standardiser, no augmentation, selection on "
       "validation loss), on speaker folds", standardizer="cell", input_norm="none",
       time_roll=False, mel_shift=0, freq_masks=0, time_masks=0, mixup_alpha=0.0,
       label_smoothing=0.0, weight_decay=0.0, learning_rate=1e-3, select_on="val_loss",
       schedule="constant", bn_recalibrate=False),
    _r("norm", "+ per-band standardiser and per-utterance normalisation", input_norm="utterance",
       standardizer="band", time_roll=False, mel_shift=0, freq_masks=0, time_masks=0,
       mixup_alpha=0.0, label_smoothing=0.0, weight_decay=0.0, learning_rate=1e-3,
       select_on="val_loss", schedule="constant", bn_recalibrate=False),
    _r("norm-uar", "+ selection on validation UAR, AdamW 5e-4 with cosine schedule, label smoothing",
       time_roll=False, mel_shift=0, freq_masks=0, time_masks=0, mixup_alpha=0.0),
    _r("ours", "+ augmentation: time shift, Mel shift, SpecAugment, mixup"),
    _r("ours-global", "ours with one offset per chunk removed instead of each band's mean "
       "(keeps the spectral shape)", standardizer="global", input_norm="global"),
    _r("ours-nonorm", "ours without per-utterance normalisation (cell standardiser)",
       standardizer="cell", input_norm="none"),
    _r("ours-global-pre", "ours-global started from the layer stack pre-trained for 30 epochs on "
       "every clip and emotion of the two other corpora", standardizer="global",
       input_norm="global", pretrain=True),
    _r("ours-global-swa", "ours-global, the model the average of the weights of epochs 31-60 "
       "instead of the epoch validation chose", standardizer="global", input_norm="global",
       max_epochs=60, patience=60, swa_start=0.5),
    _r("ours-global-pre-swa", "ours-global-pre with the weights of epochs 31-60 averaged",
       standardizer="global", input_norm="global", pretrain=True, max_epochs=60, patience=60,
       swa_start=0.5),
    _r("ours-global-light", "ours-global with lighter augmentation: no mixup, no Mel shift, one "
       "time and one frequency mask (RAVDESS's folds underfit: training loss 1.1-1.2 at 40 epochs)",
       standardizer="global", input_norm="global", mixup_alpha=0.0, mel_shift=0, freq_masks=1,
       time_masks=1),
    _r("ours-global-pre-swa-all", "ours-global-pre-swa with no validation speakers held out in the "
       "folds (nothing is selected on them): they train too", standardizer="global",
       input_norm="global", pretrain=True, max_epochs=60, patience=60, swa_start=0.5,
       hold_out_validation=False),
    _r("ours-global-pre-swa-all-ft", "ours-global-pre-swa-all fine-tuned from a peak learning "
       "rate of 1.5e-4 instead of 5e-4 (pre-training keeps 5e-4), so the pre-trained layers move "
       "less", standardizer="global", input_norm="global", pretrain=True, max_epochs=60,
       patience=60, swa_start=0.5, hold_out_validation=False, finetune_lr=1.5e-4),
    _r("ours-global-pre-swa-all-co", "ours-global-pre-swa-all fine-tuned with the other two "
       "corpora's clips of the target's classes in its training set (30 epochs of 2-5 times the "
       "rows, the weights of epochs 16-30 averaged)", standardizer="global", input_norm="global",
       pretrain=True, cotrain=True, max_epochs=30, patience=30, swa_start=0.5,
       hold_out_validation=False),
    _r("ours-global-pre-swa-all-co-ft", "ours-global-pre-swa-all-co fine-tuned from a peak "
       "learning rate of 1.5e-4 (the two changes that each moved EMOVO on all three folds, "
       "together)", standardizer="global", input_norm="global", pretrain=True, cotrain=True,
       max_epochs=30, patience=30, swa_start=0.5, hold_out_validation=False, finetune_lr=1.5e-4),
    _r("ours-global-pre-swa-all-nomel", "ours-global-pre-swa-all without the Mel shift (a shift "
       "of up to 3 bands moves the low harmonics by 100-150 Hz, as much as the pitch differences "
       "that set fear and happiness apart from sadness)", standardizer="global",
       input_norm="global", pretrain=True, max_epochs=60, patience=60, swa_start=0.5,
       hold_out_validation=False, mel_shift=0),
    _r("ours-global-swa-all", "ours-global-swa with no validation speakers held out in the folds: "
       "they train too", standardizer="global", input_norm="global", max_epochs=60, patience=60,
       swa_start=0.5, hold_out_validation=False),
    _r("ours-global-aug", "ours-global with the study's pitch (+-1.5, +-3 semitones) and tempo "
       "(0.75-1.25) copies of the training clips; 16 epochs of nine times the rows",
       standardizer="global", input_norm="global", offline_augmentation=True, max_epochs=16,
       patience=16),
]}
DEFAULT_RECIPE = "ours-global-pre-swa-all"  # the recipe with the best mean over the three corpora
# What each default bundle is trained with: (recipe, epoch cap, None: the recipe's own). Three
# choices were made on a corpus's own folds (README, "Default models"): RAVDESS's 160 epochs (0.577
# against 0.564 at 80, fear recall 0.36 against 0.28), EMOVO's co-training (EmoDB 0.735 with it
# against 0.802, RAVDESS 0.535 against 0.564) and EMOVO's 60 epochs with it (0.421 against 0.393,
# better on each of the 3 folds).
SHIPPED: dict[str, tuple[str, int | None]] = {
    "emodb": (DEFAULT_RECIPE, None),
    "emovo": ("ours-global-pre-swa-all-co", 60),
    "ravdess": (DEFAULT_RECIPE, 160),
}


def get_recipe(name: str, **overrides) -> Recipe:
    try:
        r = RECIPES[name]
    except KeyError:
        raise ParameterError(f"unknown recipe {name!r} (accepted: {', '.join(RECIPES)})") from None
    return dataclasses.replace(r, **overrides) if overrides else r


def table_for(corpus, recipe: Recipe, cfg=None):
    """The chunk table a recipe trains on: with the offline augmented versions when it asks for
    them (rows with aug == 0 are the clips as recorded, what validation and test use)."""
    from ser_core.config import PAPER_FEATURES
    from ser_core.data.dataset import build_table
    return build_table(corpus, cfg or PAPER_FEATURES, augmentation=recipe.offline_augmentation,
                       progress=False)


def fit_standardizer(features, recipe: Recipe) -> Standardizer:
    if recipe.standardizer == "band":
        return Standardizer.fit_bands(features)
    if recipe.standardizer == "cell":
        return Standardizer.fit(features)
    if recipe.standardizer == "global":
        return Standardizer.fit_global(features)
    raise ParameterError(f"standardizer {recipe.standardizer!r} (accepted: band, cell, global)")


def augment_batch(x: torch.Tensor, recipe: Recipe, g: torch.Generator) -> torch.Tensor:
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


def uar(labels: np.ndarray, pred: np.ndarray, n_classes: int) -> float:
    """Unweighted average recall over the classes present in `labels`."""
    recalls = [np.mean(pred[labels == k] == k) for k in range(n_classes) if np.any(labels == k)]
    return float(np.mean(recalls)) if recalls else float("nan")


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


def train_epoch(model, opt, x: torch.Tensor, y: torch.Tensor, recipe: Recipe, g: torch.Generator,
                amp: dict, device, n_classes: int, first_step: int, total_steps: int,
                peak_lr: float | None = None) -> float:
    """One pass over (x, y) in shuffled batches: on-the-fly augmentation, label smoothing, mixup,
    the cosine learning rate (from `peak_lr`, default the recipe's) by global step. Returns the
    mean training loss."""
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
        xb = augment_batch(x[idx], recipe, g)
        target = F.one_hot(y[idx], n_classes).float()
        if recipe.label_smoothing:
            target = target * (1 - recipe.label_smoothing) + recipe.label_smoothing / n_classes
        if recipe.mixup_alpha > 0 and len(idx) > 1:
            lam = float(np.random.default_rng(int(torch.randint(0, 2**31, (1,), generator=g)))
                        .beta(recipe.mixup_alpha, recipe.mixup_alpha))
            lam = max(lam, 1 - lam)
            j = torch.randperm(len(idx), generator=g)
            xb = lam * xb + (1 - lam) * xb[j]
            target = lam * target + (1 - lam) * target[j]
        xb, target = xb.to(device), target.to(device)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            logits = model(xb)
        loss = torch.sum(-target * F.log_softmax(logits.float(), 1), 1).mean()
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


def train_recipe(table: ChunkTable, train_rows: np.ndarray, val_rows: np.ndarray, recipe: Recipe,
                 run_dir: Path | None = None, precision: str = "auto", device: str | None = None,
                 log=None, progress=None, init: dict | None = None,
                 extra: tuple[torch.Tensor, torch.Tensor] | None = None) -> RecipeResult:
    """Train the study's CNN-LSTM on `train_rows` with `recipe`, selecting the epoch on the
    clip-level validation figure of `val_rows` (none: the recipe must average weights, and every
    epoch runs). Resumes from run_dir/checkpoint.pt. `init`: the pre-trained weights to start
    from (ser_core/training/pretrain.py), when the recipe has them; `extra`: standardised chunks and their
    labels (in the target's classes) that train beside `train_rows` (pretrain.cotrain_rows)."""
    log = log or sys.stderr
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
        if Recipe(**saved.get("recipe", {"name": ""})).key() != recipe.key():
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
