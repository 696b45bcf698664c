"""Our training recipes for the speaker protocol: the study's CNN-LSTM layer stack, trained to
recognise new voices.

The study's recipe (ser_core/config.py STUDY_TRAIN, trained by ser_core/training/study.py and
kept exactly for the "paper" protocol) overfits the few speakers of a corpus: under EmoDB's
speaker cross-validation it reaches 0.27 (chance 0.20), answering sadness for most clips
(reports/crossval/README.md). A recipe changes only how the same layer stack is trained and fed
(the fields are `TrainConfig`'s, ser_core/config.py); ser_core/training/loop.py trains it.

Each recipe is declared as a parent plus the fields it changes, and named by what it is. The
ablation ladder: each row changes one thing from a row above (EmoDB folds first), then the
candidates run on every corpus (README, "Default models"); DEFAULT_RECIPE is the winner. The
cross-validation report has one ablation row per recipe, in this order.

Recipes were first named by their history (`ours-global-pre-swa-all-co`); those names stay
accepted everywhere (`ALIASES`), and stay the names their runs record (`stored_as`), so the
committed reports, run folders and bundles keep loading and rebuilding to the same figures."""
from __future__ import annotations

import dataclasses

from ser_core.config import STUDY_TRAIN, TrainConfig
from ser_core.errors import ParameterError

RECIPES: dict[str, TrainConfig] = {}
ALIASES: dict[str, str] = {}  # the name a recipe was first run under -> its name


def _declare(name: str, parent: TrainConfig | str, describe: str, was: str = "",
             **changes) -> TrainConfig:
    """Recipe `name`: `parent` (a declared recipe's name, or a configuration) with `changes`;
    `was`: the name it was first run under (what its runs keep recording)."""
    base = RECIPES[parent] if isinstance(parent, str) else parent
    recipe = dataclasses.replace(base, name=name, describe=describe, stored_as=was, **changes)
    recipe = dataclasses.replace(recipe, declared_epochs=recipe.max_epochs)
    RECIPES[name] = recipe
    if was and was != name:
        ALIASES[was] = name
    return recipe


# The describe texts are the report rows' as they were run (they name the recipes' first names).
_declare("study", STUDY_TRAIN, "the study's training (Adam 1e-3, cell standardiser, no augmentation, "
         "selection on validation loss), on speaker folds",
         loop="ours", schedule="constant", max_epochs=80, patience=30)
_declare("study-norm", "study", "+ per-band standardiser and per-utterance normalisation", was="norm",
         standardizer="band", input_norm="utterance")
_declare("no-augment", "study-norm", "+ selection on validation UAR, AdamW 5e-4 with cosine schedule, "
         "label smoothing", was="norm-uar", select_on="val_uar", learning_rate=5e-4, weight_decay=1e-2,
         schedule="cosine", label_smoothing=0.1, bn_recalibrate=True)
_declare("augment", "no-augment", "+ augmentation: time shift, Mel shift, SpecAugment, mixup", was="ours",
         time_roll=True, mel_shift=3, freq_masks=2, time_masks=2, mixup_alpha=0.2)
_declare("global-norm", "augment", "ours with one offset per chunk removed instead of each band's mean "
         "(keeps the spectral shape)", was="ours-global", standardizer="global", input_norm="global")
_declare("no-norm", "augment", "ours without per-utterance normalisation (cell standardiser)",
         was="ours-nonorm", standardizer="cell", input_norm="none")
_declare("pretrained", "global-norm", "ours-global started from the layer stack pre-trained for 30 "
         "epochs on every clip and emotion of the two other corpora", was="ours-global-pre",
         pretrain=True)
_declare("swa", "global-norm", "ours-global, the model the average of the weights of epochs 31-60 "
         "instead of the epoch validation chose", was="ours-global-swa",
         max_epochs=60, patience=60, swa_start=0.5)
_declare("pretrained-swa", "swa", "ours-global-pre with the weights of epochs 31-60 averaged",
         was="ours-global-pre-swa", pretrain=True)
_declare("light-augment", "global-norm", "ours-global with lighter augmentation: no mixup, no Mel "
         "shift, one time and one frequency mask (RAVDESS's folds underfit: training loss 1.1-1.2 at "
         "40 epochs)", was="ours-global-light", mixup_alpha=0.0, mel_shift=0, freq_masks=1, time_masks=1)
_declare("transfer", "pretrained-swa", "ours-global-pre-swa with no validation speakers held out in "
         "the folds (nothing is selected on them): they train too", was="ours-global-pre-swa-all",
         hold_out_validation=False)
_declare("transfer-low-lr", "transfer", "ours-global-pre-swa-all fine-tuned from a peak learning rate "
         "of 1.5e-4 instead of 5e-4 (pre-training keeps 5e-4), so the pre-trained layers move less",
         was="ours-global-pre-swa-all-ft", finetune_lr=1.5e-4)
_declare("cotrain", "transfer", "ours-global-pre-swa-all fine-tuned with the other two corpora's clips "
         "of the target's classes in its training set (30 epochs of 2-5 times the rows, the weights of "
         "epochs 16-30 averaged)", was="ours-global-pre-swa-all-co",
         cotrain=True, max_epochs=30, patience=30)
_declare("cotrain-low-lr", "cotrain", "ours-global-pre-swa-all-co fine-tuned from a peak learning rate "
         "of 1.5e-4 (the two changes that each moved EMOVO on all three folds, together)",
         was="ours-global-pre-swa-all-co-ft", finetune_lr=1.5e-4)
_declare("transfer-no-mel-shift", "transfer", "ours-global-pre-swa-all without the Mel shift (a shift "
         "of up to 3 bands moves the low harmonics by 100-150 Hz, as much as the pitch differences that "
         "set fear and happiness apart from sadness)", was="ours-global-pre-swa-all-nomel", mel_shift=0)
_declare("swa-all", "swa", "ours-global-swa with no validation speakers held out in the folds: they "
         "train too", was="ours-global-swa-all", hold_out_validation=False)
_declare("offline-augment", "global-norm", "ours-global with the study's pitch (+-1.5, +-3 semitones) "
         "and tempo (0.75-1.25) copies of the training clips; 16 epochs of nine times the rows",
         was="ours-global-aug", offline_augmentation=True, max_epochs=16, patience=16)

# The multi-corpus model's levers (ser_core/training/multicorpus.py; reports/multicorpus/)
_declare("swa-all-cmn", "swa-all", "swa-all with each chunk's per-band mean over time removed "
         "(cepstral-mean-style: a microphone's fixed spectral tilt goes with the level) and the "
         "per-band standardiser, instead of one offset per chunk", standardizer="band",
         input_norm="utterance")
_declare("swa-all-bored-neg", "swa-all", "swa-all with EMOVO's and RAVDESS's neutral clips "
         "negatives for boredom (EmoDB's only), which otherwise took 247 of 451 neutral clips of the "
         "pooled folds", absent_negatives="neutral>boredom")
_declare("swa-all-rooms", "swa-all", "swa-all with each training chunk drawn, half of the time, as "
         "recorded in one of 64 simulated rooms (reverberation, pink noise, band-limited microphone)",
         room_p=0.5)
_declare("swa-rooms-bored-neg", "swa-all-rooms", "swa-all-rooms with EMOVO's and RAVDESS's "
         "neutral clips negatives for boredom", absent_negatives="neutral>boredom")

DEFAULT_RECIPE = "transfer"  # the recipe with the best mean over the three corpora
# What each default bundle is trained with: (recipe, epoch cap, None: the recipe's own). Three
# choices were made on a corpus's own folds (README, "Default models"): RAVDESS's 160 epochs (0.577
# against 0.564 at 80, fear recall 0.36 against 0.28), EMOVO's co-training (EmoDB 0.735 with it
# against 0.802, RAVDESS 0.535 against 0.564) and EMOVO's 60 epochs with it (0.421 against 0.393,
# better on each of the 3 folds).
SHIPPED: dict[str, tuple[str, int | None]] = {
    "emodb": (DEFAULT_RECIPE, None),
    "emovo": ("cotrain", 60),
    "ravdess": (DEFAULT_RECIPE, 160),
}


def recipe_names() -> list[str]:
    """Every name `get_recipe` accepts: the recipes' names, then the names they were first run
    under."""
    return [*RECIPES, *ALIASES]


def get_recipe(name: str, max_epochs: int | None = None, **changes) -> TrainConfig:
    """The recipe called `name` (or first run as `name`), at another epoch cap when
    `max_epochs` is given, with `changes` to its other fields."""
    try:
        recipe = RECIPES[ALIASES.get(name, name)]
    except KeyError:
        raise ParameterError(f"unknown recipe {name!r} (accepted: {', '.join(recipe_names())})") from None
    if max_epochs:
        changes["max_epochs"] = max_epochs
    return dataclasses.replace(recipe, **changes) if changes else recipe


def resolve(recipe: str | TrainConfig, max_epochs: int | None = None) -> TrainConfig:
    """A recipe name (resolved once, here) or a configuration, at another epoch cap when
    `max_epochs` is given: what cross-validation and shipping pass down."""
    if isinstance(recipe, str):
        return get_recipe(recipe, max_epochs)
    return dataclasses.replace(recipe, max_epochs=max_epochs) if max_epochs else recipe


def recipe_order(stored_name: str) -> int:
    """Where a recorded recipe (its `to_dict()["name"]`) stands in the ablation ladder (99: not
    declared here), for the cross-validation report."""
    name = ALIASES.get(stored_name, stored_name)
    return list(RECIPES).index(name) if name in RECIPES else 99
