"""The first fidelity check: `python -m export stats` reproduces the study's chunk counts and
test-set sizes; the speaker protocol holds speakers out, balanced by gender. Then the figures of
ser_core/stats.py: accuracy, UAR, macro-F1, confusion and the speaker bootstrap."""
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


def test_clip_metrics_match_scikit_learn_and_bracket_the_estimate():
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from ser_core.stats import clip_metrics
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 200)
    pred = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 5, 200))
    speakers = np.repeat([f"s{i}" for i in range(10)], 20)
    genders = np.where(np.arange(200) < 100, "male", "female")
    m = clip_metrics(labels, pred, genders, speakers, [f"c{i}" for i in range(5)])
    assert m["accuracy"] == pytest.approx(np.mean(labels == pred))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(labels, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(labels, pred, average="macro"))
    assert m["male"]["accuracy"] == pytest.approx(np.mean(labels[:100] == pred[:100]))
    for key in ("accuracy", "uar", "macro_f1"):
        lo, hi = m[f"{key}_speaker_bootstrap95"]
        assert lo < m[key] < hi and hi - lo < 0.3
    assert np.array(m["confusion"]["matrix"]).sum() == 200 and m["n_speakers"] == 10


def test_uar_and_macro_f1_count_only_the_classes_present():
    """A class no example has (a fold without one speaker's disgust) neither lowers UAR nor
    macro-F1; its recall is undefined, not 0."""
    from sklearn.metrics import f1_score
    from ser_core.stats import accuracy, class_metrics, confusion, uar
    labels = np.array([0, 0, 1, 1, 1, 3])
    pred = np.array([0, 1, 1, 1, 2, 3])
    m = class_metrics(labels, pred, 4)
    assert uar(labels, pred, 4) == m["uar"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro_f1"] == pytest.approx(f1_score(labels, pred, labels=[0, 1, 3], average="macro"))
    assert np.isnan(m["recall"][2]) and m["recall"][1] == pytest.approx(2 / 3)
    assert confusion(labels, pred, 4).tolist() == [[1, 1, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert accuracy(labels, pred) == m["accuracy"] == pytest.approx(4 / 6) and accuracy([], []) is None
    assert np.isnan(uar(np.array([], int), np.array([], int), 3))


def test_speaker_bootstrap_resamples_whole_speakers():
    """One speaker always right, one always wrong: a resample holds all clips of each speaker it
    draws, so accuracy takes only the values 0, 1/2 (both drawn) and 1."""
    from ser_core.stats import speaker_bootstrap
    labels = np.zeros(6, int)
    pred = np.array([0, 0, 0, 1, 1, 1])
    speakers = np.array(["a"] * 3 + ["b"] * 3)
    lo, hi = speaker_bootstrap(labels, pred, speakers, 2, keys=("accuracy",), n=200)["accuracy"]
    assert (lo, hi) == (0.0, 1.0)
    same = speaker_bootstrap(labels, pred, np.array(["a"] * 6), 2, keys=("accuracy",), n=50)
    assert same["accuracy"] == [0.5, 0.5]  # one speaker: every resample is the whole set
