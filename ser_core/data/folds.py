"""Speaker folds for cross-validation, fixed and committed: every speaker is tested exactly once,
each fold balanced by gender.

- EmoDB (10 speakers, 5 m / 5 f): 5 folds of one male and one female speaker, paired in the
  order of their codes.
- EMOVO (6 speakers, 3 m / 3 f): 3 folds of one of each (m1 f1, m2 f2, m3 f3).
- RAVDESS (24 actors, odd = male): 6 folds of four consecutive actors (two of each gender):
  01-04, 05-08, ..., 21-24.
Fixed lists rather than a seeded draw, so that a fold's speakers never depend on a library's
random generator and anyone can read them here.

Validation (model selection, early stopping) comes from the training side, never the test fold:
the next fold's speakers (cyclically) where that leaves at least two training speakers per
gender (EmoDB, RAVDESS); otherwise (EMOVO: four training speakers) 20 % of the training
speakers' sentences, so no sentence is in both. `ship_split` is the split of a shipped model:
all speakers but one male and one female validation speaker."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ser_core.data.dataset import ChunkTable
from ser_core.errors import ParameterError

FOLDS: dict[str, list[tuple[str, ...]]] = {
    "emodb": [("03", "08"), ("10", "09"), ("11", "13"), ("12", "14"), ("15", "16")],
    "emovo": [("m1", "f1"), ("m2", "f2"), ("m3", "f3")],
    "ravdess": [tuple(f"{a:02d}" for a in range(4 * k + 1, 4 * k + 5)) for k in range(6)],
}

# Validation speakers of the shipped default models (one male, one female); the app's example
# clips come from these speakers only, which the shipped models never trained on.
SHIP_VALIDATION: dict[str, tuple[str, str]] = {
    "emodb": ("03", "08"), "emovo": ("m1", "f1"), "ravdess": ("01", "02"),
}

VAL_SENTENCE_FRACTION = 0.2


@dataclass
class FoldSplit:
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    speakers: dict

    def validation_trains(self, table: ChunkTable) -> "FoldSplit":
        """The same fold with no validation: every row (augmented versions included) of every
        speaker but the test speakers trains."""
        train = np.flatnonzero(~np.isin(table.speakers, self.speakers["test"]))
        desc = {k: v for k, v in self.speakers.items() if k not in ("val", "val_sentences")}
        desc.update(val=[], train=sorted(set(table.speakers[train])))
        return FoldSplit(self.fold, train, np.array([], dtype=np.int64), self.test, desc)

    def describe(self) -> dict:
        return {"protocol": "speaker folds", "fold": self.fold, "speakers": self.speakers,
                "rows": {"train": int(len(self.train)), "val": int(len(self.val)),
                         "test": int(len(self.test))},
                "standardizer_fitted_on": "train"}


def folds_for(corpus: str) -> list[tuple[str, ...]]:
    try:
        return FOLDS[corpus]
    except KeyError:
        raise ParameterError(f"no speaker folds for corpus {corpus!r} "
                             f"(accepted: {', '.join(FOLDS)})") from None


def _genders(table: ChunkTable) -> dict[str, str]:
    return {u.speaker: u.gender for u in table.corpus.utterances}


def _split(table: ChunkTable, fold: int, test: set[str], val_candidates: set[str]) -> FoldSplit:
    speakers = table.speakers
    original = table.aug == 0
    gender = _genders(table)
    train_side = sorted(set(gender) - test)
    per_gender = {g: [s for s in train_side if gender[s] == g] for g in ("male", "female")}
    left = {g: [s for s in v if s not in val_candidates] for g, v in per_gender.items()}
    is_test = np.isin(speakers, sorted(test))
    desc: dict = {"test": sorted(test)}
    if val_candidates and all(len(v) >= 2 for v in left.values()):
        is_val = np.isin(speakers, sorted(val_candidates))
        desc["val"] = sorted(val_candidates)
    else:
        # too few speakers to hold some out: hold out sentences of the training speakers
        sentences = sorted({u.sentence for u in table.corpus.utterances})
        rng = np.random.default_rng(1938 + fold)
        k = max(1, round(VAL_SENTENCE_FRACTION * len(sentences)))
        held = sorted(sentences[i] for i in rng.permutation(len(sentences))[:k])
        sentence = np.array([u.sentence for u in table.corpus.utterances])[table.utt]
        is_val = ~is_test & np.isin(sentence, held)
        desc["val"] = []
        desc["val_sentences"] = held
    train = np.flatnonzero(~is_test & ~is_val)
    desc["train"] = sorted(set(speakers[train]))
    return FoldSplit(fold, train, np.flatnonzero(is_val & original),
                     np.flatnonzero(is_test & original), desc)


def fold_split(table: ChunkTable, fold: int) -> FoldSplit:
    """Fold `fold` (0-based) of the corpus's fixed folds."""
    folds = folds_for(table.corpus.name)
    if not 0 <= fold < len(folds):
        raise ParameterError(f"fold {fold} of {table.corpus.name} (accepted: 0..{len(folds) - 1})")
    missing = set().union(*map(set, folds)) ^ set(_genders(table))
    if missing:
        raise ParameterError(f"{table.corpus.name}: the corpus folder's speakers do not match the "
                             f"fixed folds (differ in {sorted(missing)})")
    return _split(table, fold, set(folds[fold]), set(folds[(fold + 1) % len(folds)]))


def ship_split(table: ChunkTable) -> FoldSplit:
    """Train on every speaker but the corpus's two validation speakers; no test speakers (the
    published figure of a shipped model is its cross-validation)."""
    val = set(SHIP_VALIDATION[table.corpus.name])
    s = _split(table, -1, set(), val)
    if s.speakers.get("val") != sorted(val):
        raise ParameterError(f"{table.corpus.name}: validation speakers {sorted(val)} not found")
    return s
