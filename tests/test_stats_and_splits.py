"""The first fidelity check: `python -m export stats` reproduces the study's chunk counts and
test-set sizes; the speaker protocol holds speakers out, balanced by gender."""
import json

import numpy as np
import pytest

from export.cli import main

PAPER = {  # clips, chunks, chunks with augmentation, paper test-set size (PAPER.md)
    "emodb": (339, 457, 4181, 837),
    "emovo": (420, 544, 4931, 987),
    "ravdess": (960, 983, 8953, 1791),
}


def stats(capsys, *args):
    assert main(["stats", *args]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("corpus", sorted(PAPER))
def test_chunk_counts_and_paper_split_reproduce_the_study(capsys, data_dir, corpus):
    clips, chunks, augmented, test = PAPER[corpus]
    s = stats(capsys, "--corpus", corpus, "--data-dir", str(data_dir / corpus), "--protocol", "paper")
    assert s["without_augmentation"]["clips"] == clips
    assert s["without_augmentation"]["chunks"] == chunks
    assert s["with_augmentation"]["chunks"] == augmented
    sp = s["splits"]
    assert sp["test"]["chunks"] == test
    assert sp["train"]["chunks"] + sp["val"]["chunks"] + test == augmented
    # stratified: every class within one chunk of its share of the test set
    for cls, n in s["with_augmentation"]["chunks_by_class"].items():
        assert abs(sp["test"]["chunks_by_class"][cls] - n * test / augmented) <= 1


def test_speaker_protocol_holds_out_speakers_balanced_by_gender(capsys, data_dir):
    s = stats(capsys, "--corpus", "emodb", "--data-dir", str(data_dir / "emodb"), "--protocol", "speaker")
    spk = s["split"]["speakers"]
    assert not set(spk["test"]) & set(spk["train"]) and not set(spk["val"]) & set(spk["train"])
    assert not set(spk["test"]) & set(spk["val"]) and len(spk["test"]) == len(spk["val"]) == 2
    assert s["splits"]["test"]["chunks_by_gender"].keys() == {"male", "female"}
    # augmentation only on training data: validation and test hold one chunk set per clip
    assert s["splits"]["test"]["chunks"] < 2 * s["splits"]["test"]["clips"]
    assert s["splits"]["train"]["chunks"] > 8 * s["splits"]["train"]["clips"]
