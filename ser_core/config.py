"""The study's constants in one frozen place (Facchinetti et al. 2024, ../shared/PAPER.md).

`FeatureConfig` fixes how audio becomes model input; `TrainConfig` how a model is trained
(the study's recipe and ours; the named ones are in ser_core/training/recipes.py). Both are
frozen dataclasses: a run records them in its bundle and the feature cache is keyed by them, so
a change of any constant yields a new cache entry and a new bundle config."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

from ser_core.errors import ParameterError


@dataclass(frozen=True)
class FeatureConfig:
    """Preprocessing of the study, steps 1-5 of PAPER.md."""

    sample_rate: int = 16_000
    # librosa.effects.trim parameters
    trim_top_db: float = 30.0
    trim_frame_length: int = 512
    trim_hop_length: int = 64
    # 3 s windows
    window_seconds: float = 3.0
    # augmentation: nine versions of each clip (the original plus these eight)
    pitch_steps: tuple[float, ...] = (-3.0, -1.5, 1.5, 3.0)
    stretch_rates: tuple[float, ...] = (0.75, 0.9, 1.1, 1.25)
    # log-Mel
    n_fft: int = 368
    hop_length: int = 184
    n_mels: int = 128
    db_top_db: float = 80.0

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        # librosa centres frames: 1 + n // hop
        return 1 + self.window_samples // self.hop_length

    @property
    def input_shape(self) -> tuple[int, int]:
        """(frames, bands): 261 x 128 for the study."""
        return (self.n_frames, self.n_mels)

    def augmentations(self) -> list[tuple[str, float | None]]:
        """('none', None), ('pitch', steps)..., ('stretch', rate)... in a fixed order."""
        return ([("none", None)] + [("pitch", s) for s in self.pitch_steps]
                + [("stretch", r) for r in self.stretch_rates])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = dict(d)
        for k in ("pitch_steps", "stretch_rates"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> str:
        return stable_hash(self.to_dict())


PAPER_FEATURES = FeatureConfig()


# The fields a run of each training loop records, in the order its records have always had them
# (reports/crossval/*.json, models/*/config.json, checkpoints): the loop's `to_dict`.
OUR_FIELDS = ("name", "standardizer", "input_norm", "time_roll", "mel_shift", "freq_masks",
              "freq_mask_width", "time_masks", "time_mask_width", "mixup_alpha", "label_smoothing",
              "dropout", "lstm_input_dropout", "learning_rate", "weight_decay", "batch_size",
              "max_epochs", "patience", "select_on", "bn_recalibrate", "schedule", "seed",
              "offline_augmentation", "pretrain", "pretrain_epochs", "cotrain", "finetune_lr",
              "swa_start", "hold_out_validation", "absent_negatives", "room_p", "describe")
# the study's bundles call `patience` early_stopping_patience
STUDY_FIELDS = ("dropout", "lstm_input_dropout", "learning_rate", "batch_size", "max_epochs",
                "validation_fraction", "early_stopping_patience", "lr_plateau_patience",
                "lr_plateau_factor", "lr_plateau_min_delta", "seed")
_ACCEPTED = {"loop": ("ours", "study"), "standardizer": ("band", "cell", "global"),
             "input_norm": ("none", "utterance", "global"), "select_on": ("val_uar", "val_loss"),
             "schedule": ("cosine", "constant", "plateau")}


@dataclass(frozen=True)
class TrainConfig:
    """How the study's CNN-LSTM layer stack is trained: the one training configuration, for the
    study's recipe (`loop="study"`, ser_core/training/study.py: Adam, learning rate x0.1 on a
    validation-loss plateau, early stopping on it) and for ours (`loop="ours"`,
    ser_core/training/loop.py). Named configurations are declared in
    ser_core/training/recipes.py as a parent plus the fields they change; the defaults here
    are our base recipe. What the fields do:
      - `standardizer`: "cell" (the study: one mean/scale per time-frequency cell), "band" (one
        per Mel band, pooled over time) or "global" (one for all cells);
      - `input_norm`: "utterance" removes each chunk's per-band mean over time inside the model
        (so a recording's level, noise floor and microphone colour do not move the input),
        "global" one offset per chunk (level and noise floor only), "none" the study's;
      - on-the-fly augmentation of the standardised log-Mel: random circular time shift
        (`time_roll`), a random shift of the Mel axis by up to `mel_shift` bands (a cheap
        stand-in for pitch/vocal-tract changes), SpecAugment masks (Park et al., Interspeech
        2019), mixup (`mixup_alpha`; Zhang et al., ICLR 2018);
      - AdamW with `weight_decay`, `label_smoothing`, a cosine learning-rate `schedule`;
      - `bn_recalibrate`: BatchNorm statistics recomputed on the clean training rows after every
        epoch: mixup and masks shrink the activations BatchNorm sees in training, so its running
        statistics lag behind clean input and the eval-mode model collapses onto one class
        (measured: a RAVDESS fold answered one class for 91 of 96 validation chunks in eval mode
        and 0.44 accuracy with batch statistics);
      - `select_on`: model selection on validation unweighted average recall (UAR, clip level)
        or loss, early stopping on it after `patience` epochs without improvement;
      - `offline_augmentation`: the training speakers' clips also in the study's eight
        pitch-shifted and time-stretched versions (ser_core/audio/augment.py; validation and
        test clips stay as recorded), so an epoch is nine times longer and `max_epochs` is
        counted in those;
      - `pretrain`: start from the layer stack trained for `pretrain_epochs` on the two other
        corpora (ser_core/training/pretrain.py); `finetune_lr` > 0: the peak learning rate when
        fine-tuning those weights (pre-training keeps `learning_rate`), so the layers
        pre-training shaped move less;
      - `cotrain`: keep those corpora's clips of the target's classes in the training set while
        fine-tuning (their speakers join the target's few: EMOVO's folds train on 4 speakers of
        their own), each corpus by its own standardiser, as in pre-training;
      - `swa_start` > 0: stochastic weight averaging (Izmailov et al., UAI 2018): the model is
        the average of the weights after every epoch from that fraction of `max_epochs` on,
        with its BatchNorm statistics recomputed, instead of the epoch two validation speakers
        chose (a choice that noisy picks a lucky epoch as often as a good one); no early stop;
      - `hold_out_validation` False: with nothing to select (weight averaging), a
        cross-validation fold's validation speakers train too (EmoDB 8 training speakers
        instead of 6, RAVDESS 20 instead of 16, EMOVO every sentence of its 4 instead of 80 %).
        A shipped model still keeps its two validation speakers out, as the figure beside it;
      - `absent_negatives` (the multi-corpus model only, ser_core/training/multicorpus.py):
        "label>absent,...": a row labelled `label` from a corpus without the class `absent` has
        `absent` as a negative in its loss instead of masked (e.g. "neutral>boredom": EMOVO's and
        RAVDESS's neutral speech pushes EmoDB's boredom output down);
      - `room_p` (the multi-corpus model only): the probability that a training chunk is
        replaced, each time it is drawn, by its copy recorded in a simulated room with background
        noise and a band-limited microphone (ser_core/data/room_copies.py);
      - the study's loop only: `validation_fraction` (recorded; the split is
        ser_core/data/splits.py's) and the `lr_plateau_*` schedule (Keras's ReduceLROnPlateau).
    Naming: a configuration first run under another name (before recipes were named by what
    they are) keeps that name, `stored_as`, in everything it writes (report files, run
    folders, checkpoints, bundle configs), so what was run before is found and rebuilt;
    `declared_epochs` is the epoch cap it was declared with (a run at another cap names its
    results -e<N>)."""

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
    select_on: str = "val_uar"
    bn_recalibrate: bool = True
    schedule: str = "cosine"
    seed: int = 1938
    offline_augmentation: bool = False
    pretrain: bool = False
    pretrain_epochs: int = 30
    cotrain: bool = False
    finetune_lr: float = 0.0
    swa_start: float = 0.0
    hold_out_validation: bool = True
    absent_negatives: str = ""
    room_p: float = 0.0
    describe: str = ""
    # the study's loop only
    validation_fraction: float = 0.2
    lr_plateau_patience: int = 6
    lr_plateau_factor: float = 0.1
    lr_plateau_min_delta: float = 1e-4
    # which loop trains it, and how its runs are named (not part of any record)
    loop: str = "ours"
    stored_as: str = ""
    declared_epochs: int = 0

    def __post_init__(self):
        for field_name, accepted in _ACCEPTED.items():
            if getattr(self, field_name) not in accepted:
                raise ParameterError(f"training config {self.name!r}: {field_name}="
                                     f"{getattr(self, field_name)!r} (accepted: {', '.join(accepted)})")

    @property
    def stored_name(self) -> str:
        """The name its runs, results and bundles record."""
        return self.stored_as or self.name

    def to_dict(self) -> dict:
        """The record a run of its loop writes (the same keys, in the same order, as always)."""
        if self.loop == "study":
            return {k: self.patience if k == "early_stopping_patience" else getattr(self, k)
                    for k in STUDY_FIELDS}
        return {k: self.stored_name if k == "name" else getattr(self, k) for k in OUR_FIELDS}

    def key(self) -> dict:
        """What names a run folder and what a checkpoint must match (`record_key`)."""
        return record_key(self.to_dict())

    def hyperparameters(self) -> dict:
        """What a bundle config records (ModelBundle.torch_model reads dropout, input_norm)."""
        d = self.to_dict()
        if self.loop == "ours":
            d["recipe"] = d.pop("name")
            d.pop("describe")
        return d


def record_key(record: dict) -> dict:
    """The name and the fields of a recorded configuration (`TrainConfig.to_dict`, ours) that
    differ from the defaults, so that a field added later, with a default that keeps the old
    behaviour, leaves the runs made before it valid."""
    return {k: v for k, v in record.items()
            if k == "name" or (k != "describe" and v != _RECORD_DEFAULTS.get(k, _MISSING))}


_MISSING = object()
_RECORD_DEFAULTS = TrainConfig(name="").to_dict()

# The study's recipe (PAPER.md "Training"), and its per-corpus hyperparameters.
STUDY_TRAIN = TrainConfig(
    name="paper", loop="study", describe="the study's training (PAPER.md): Adam, learning rate "
    "x0.1 on a validation-loss plateau, early stopping on validation loss",
    standardizer="cell", input_norm="none", time_roll=False, mel_shift=0, freq_masks=0,
    time_masks=0, mixup_alpha=0.0, label_smoothing=0.0, weight_decay=0.0, learning_rate=1e-3,
    max_epochs=100, patience=10, select_on="val_loss", schedule="plateau", bn_recalibrate=False)
PAPER_TRAIN = {
    "emodb": dataclasses.replace(STUDY_TRAIN, name="paper-emodb"),
    "emovo": dataclasses.replace(STUDY_TRAIN, name="paper-emovo", lstm_input_dropout=0.0,
                                 learning_rate=1e-4, batch_size=8),
    "ravdess": dataclasses.replace(STUDY_TRAIN, name="paper-ravdess", dropout=0.6, batch_size=128),
}

PAPER_SEED = 1938
PAPER_TEST_FRACTION = 0.2


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
