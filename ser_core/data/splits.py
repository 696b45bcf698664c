"""Chunk table -> train / validation / test rows, under one of two protocols.

"paper": the study's split, faithfully: stratified random 80/20 over the augmented chunks with
seed 1938 (scikit-learn's train_test_split, as in the study's notebooks), validation = the last
20 % of the training rows (Keras `validation_split` semantics), standardiser fitted on the whole
corpus. Augmented copies of one utterance, and every speaker, land on both sides (weak).

"speaker" (our default): held-out test speakers and separate validation speakers, each set
balanced by gender, chosen with the seed; augmented copies in training only; standardiser fitted
on the training rows only. Where validation speakers would leave fewer than two training speakers
per gender (EMOVO: three per gender), validation instead holds out 20 % of the sentences of the
training speakers (no sentence in both), so the test set stays speaker-independent and training
keeps four speakers rather than two."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ser_core.config import PAPER_SEED, PAPER_TEST_FRACTION
from ser_core.data.dataset import ChunkTable
from ser_core.errors import ParameterError

PROTOCOLS = ("paper", "speaker")


@dataclass
class Split:
    protocol: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    standardizer_rows: np.ndarray  # rows the standardiser is fitted on
    speakers: dict = field(default_factory=dict)  # {"train": [...], "val": [...], "test": [...]}
    seed: int = PAPER_SEED

    def describe(self) -> dict:
        return {"protocol": self.protocol, "seed": self.seed, "speakers": self.speakers,
                "rows": {"train": int(len(self.train)), "val": int(len(self.val)),
                         "test": int(len(self.test))},
                "standardizer_fitted_on": "whole corpus" if self.protocol == "paper" else "train"}


def paper_split(table: ChunkTable, seed: int = PAPER_SEED,
                validation_fraction: float = 0.2) -> Split:
    from sklearn.model_selection import train_test_split
    rows = np.arange(len(table))
    train, test = train_test_split(rows, test_size=PAPER_TEST_FRACTION, random_state=seed,
                                   stratify=table.labels)
    cut = int(len(train) * (1 - validation_fraction))
    return Split("paper", train[:cut], train[cut:], test, rows, seed=seed)


def speaker_independent_split(table: ChunkTable, seed: int = PAPER_SEED,
                              speakers_per_gender: int | None = None) -> Split:
    """Test and validation speakers: `speakers_per_gender` of each gender each (default: 10 % of
    the corpus's speakers per gender, at least one), drawn with `seed`; the rest train."""
    utts = table.corpus.utterances
    by_gender: dict[str, list[str]] = {}
    for u in utts:
        by_gender.setdefault(u.gender, [])
        if u.speaker not in by_gender[u.gender]:
            by_gender[u.gender].append(u.speaker)
    n_speakers = sum(len(v) for v in by_gender.values())
    k = speakers_per_gender or max(1, round(0.1 * n_speakers))
    rng = np.random.default_rng(seed)
    val_by_sentence = any(len(v) < 2 * k + 2 for v in by_gender.values())
    test, val = [], []
    for gender in sorted(by_gender):
        spk = sorted(by_gender[gender])
        if len(spk) < k + 2:
            raise ParameterError(f"{table.corpus.name} has {len(spk)} {gender} speakers: too few "
                                 f"for {k} test speakers per gender and two to train on")
        spk = [spk[i] for i in rng.permutation(len(spk))]
        test += spk[:k]
        if not val_by_sentence:
            val += spk[k:2 * k]
    speakers = table.speakers
    original = table.aug == 0
    is_test = np.isin(speakers, test)
    if val_by_sentence:
        sentences = sorted({u.sentence for u in utts})
        held = [sentences[i] for i in rng.permutation(len(sentences))[:max(1, round(0.2 * len(sentences)))]]
        sentence = np.array([u.sentence for u in utts])[table.utt]
        is_val = ~is_test & np.isin(sentence, held)
        val_desc = {"val_sentences": sorted(held)}
    else:
        is_val = np.isin(speakers, val)
        val_desc = {}
    train_rows = np.flatnonzero(~is_test & ~is_val)
    val_rows = np.flatnonzero(is_val & original)
    test_rows = np.flatnonzero(is_test & original)
    train_spk = sorted(set(speakers[train_rows]))
    val_spk = sorted(set(speakers[val_rows])) if val_by_sentence else sorted(val)
    return Split("speaker", train_rows, val_rows, test_rows, train_rows,
                 speakers={"train": train_spk, "val": val_spk, "test": sorted(test), **val_desc},
                 seed=seed)


def make_split(table: ChunkTable, protocol: str, seed: int = PAPER_SEED) -> Split:
    if protocol == "paper":
        return paper_split(table, seed)
    if protocol == "speaker":
        return speaker_independent_split(table, seed)
    raise ParameterError(f"unknown protocol {protocol!r} (accepted: {', '.join(PROTOCOLS)})")
