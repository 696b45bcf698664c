"""The multi-corpus model (ser_core/training/multicorpus.py): the loss masked per corpus, the
leave-one-corpus-out and pooled speaker folds, and the shipped `models/any` bundle."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ser_core.data.corpora import CORPORA, read_corpus
from ser_core.training.loop import masked_cross_entropy
from ser_core.training.multicorpus import (LABELS, POOLED_FOLDS, SHIP_VALIDATION, Pooled, corpus_labels,
                                           folds, label_of, shared_classes)

ANY = Path(__file__).resolve().parents[1] / "models" / "any"


def test_masked_loss_gives_a_corpus_s_absent_classes_no_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, len(LABELS), generator=g, requires_grad=True)
    mask = torch.ones(6, len(LABELS), dtype=torch.bool)
    mask[:3, LABELS.index("surprise")] = False  # EmoDB rows: no surprise
    mask[3:, LABELS.index("boredom")] = False  # EMOVO / RAVDESS rows: no boredom
    target = torch.nn.functional.one_hot(torch.tensor([0, 3, 7, 1, 6, 4]), len(LABELS)).float()
    target = target * 0.9 + 0.1 * mask.float() / mask.sum(1, keepdim=True)  # smoothing over own classes
    masked_cross_entropy(logits, target, mask).backward()
    assert torch.all(logits.grad[~mask] == 0)
    assert torch.all(logits.grad[mask].abs().sum() > 0)
    # and moving an absent class's logit does not change the loss
    moved = logits.detach().clone()
    moved[~mask] += 50.0
    assert torch.isclose(masked_cross_entropy(moved, target, mask), masked_cross_entropy(logits.detach(), target, mask))


def test_unmasked_loss_is_the_plain_soft_cross_entropy():
    logits = torch.randn(4, 5, generator=torch.Generator().manual_seed(1))
    target = torch.softmax(torch.randn(4, 5, generator=torch.Generator().manual_seed(2)), 1)
    plain = torch.sum(-target * torch.log_softmax(logits, 1), 1).mean()
    assert torch.isclose(masked_cross_entropy(logits, target), plain)


def test_every_corpus_emotion_has_an_output_and_calm_is_neutral():
    for name, spec in CORPORA.items():
        assert {label_of(e) for e in spec.all_classes} == set(corpus_labels(name))
    assert label_of("calm") == "neutral"
    assert "surprise" not in corpus_labels("emodb") and "boredom" not in corpus_labels("ravdess")


@pytest.fixture(scope="module")
def clip_rows(data_dir):
    """A Pooled with one row per clip and no features: what the folds read."""
    cols = {k: [] for k in ("corpus", "local", "clip", "speaker", "gender", "label")}
    for name in CORPORA:
        for i, u in enumerate(read_corpus(name, data_dir / name, classes="all").utterances):
            for k, v in zip(cols, (name, i, f"{name}:{u.name}", f"{name}:{u.speaker}", u.gender,
                                   LABELS.index(label_of(u.emotion)))):
                cols[k].append(v)
    return Pooled(dict.fromkeys(CORPORA), **{k: np.array(v) for k, v in cols.items()})


def test_leave_one_corpus_out_never_mixes_corpora(clip_rows):
    loco = folds(clip_rows, "loco")
    assert [f.name for f in loco] == [f"loco-{c}" for c in CORPORA]
    for f, held in zip(loco, CORPORA):
        assert set(clip_rows.corpus[f.test]) == {held}
        assert set(clip_rows.corpus[f.train]) == set(CORPORA) - {held}
        assert not set(clip_rows.speaker[f.train]) & set(clip_rows.speaker[f.test])
        assert f.classes == shared_classes(clip_rows, held)
        assert {LABELS[k] for k in clip_rows.label[f.test]} == set(f.classes)
    # EmoDB's boredom is in neither other corpus: its LOCO is decided over six shared classes
    assert "boredom" not in loco[0].classes and len(loco[0].classes) == 6


def test_pooled_folds_test_every_one_of_the_40_speakers_once(clip_rows):
    pooled = folds(clip_rows, "pooled")
    tested = [s for f in pooled for s in set(clip_rows.speaker[f.test])]
    assert len(tested) == len(set(tested)) == len(set(clip_rows.speaker)) == 40
    assert sorted(tested) == sorted(s for f in POOLED_FOLDS for s in f)
    for f in pooled:
        assert not set(clip_rows.speaker[f.train]) & set(clip_rows.speaker[f.test])
        assert set(clip_rows.corpus[f.test]) == set(CORPORA)  # every fold tests all three corpora
        assert len(f.train) + len(f.test) == len(clip_rows)
        genders = [clip_rows.gender[clip_rows.speaker == s][0] for s in set(clip_rows.speaker[f.test])]
        assert 4 <= genders.count("male") <= 6


def test_ship_split_holds_out_one_male_and_one_female_per_corpus(clip_rows):
    (ship,) = folds(clip_rows, "ship")
    held = set(clip_rows.speaker[ship.test])
    assert held == set(SHIP_VALIDATION) and not held & set(clip_rows.speaker[ship.train])
    for name in CORPORA:
        genders = {clip_rows.gender[clip_rows.speaker == s][0] for s in held if s.startswith(name)}
        assert genders == {"male", "female"}


@pytest.mark.skipif(not (ANY / "config.json").is_file(), reason="models/any not trained")
def test_shipped_any_bundle_names_every_corpus_and_licence_and_fits_the_budget():
    cfg = json.loads((ANY / "config.json").read_text())
    card = (ANY / "README.md").read_text()
    assert cfg["labels"] == list(LABELS) and cfg["corpora"] == list(CORPORA)
    for name in CORPORA:
        assert CORPORA[name].title in card and cfg["data"]["corpora"][name]["licence"] in card
    assert "cc-by-nc-sa-4.0" in card
    assert (ANY / "model.safetensors").stat().st_size < 10 * 2**20
    for key in ("seconds", "loudness_dbfs"):
        assert cfg["input_range"][key]["min"] < cfg["input_range"][key]["max"]


@pytest.mark.slow
@pytest.mark.skipif(not (ANY / "config.json").is_file(), reason="models/any not trained")
def test_shipped_any_model_does_not_answer_one_label_for_most_held_out_clips(data_dir):
    from ser_core.data.held_out import bundle_test_clips
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load(ANY)
    ts = bundle_test_clips(b, data_dir)  # the corpora's clips in the bundle's corpus order
    preds = np.array([b.predict_clip(y, 16_000).label for y in ts.x])
    start = 0
    for name in b.config["corpora"]:
        n = sum(1 for u in read_corpus(name, data_dir / name, classes="all").utterances
                if f"{name}:{u.speaker}" in b.held_out_speakers)
        _, counts = np.unique(preds[start:start + n], return_counts=True)
        assert n > 0 and counts.max() < 0.5 * n, (name, dict(zip(*np.unique(preds[start:start + n], return_counts=True))))
        start += n
    assert start == len(ts)


def test_range_note_names_a_clip_outside_what_the_model_heard():
    from ser_core.audio.level import clip_level
    from ser_core.serving.prediction import range_note
    cfg = {"input_range": {"seconds": {"min": 1.0, "max": 8.0}, "loudness_dbfs": {"min": -40.0, "max": -5.0}}}
    assert range_note(cfg, {"seconds": 3.0, "loudness_dbfs": -20.0}) is None
    assert "longer (20.0 s)" in range_note(cfg, {"seconds": 20.0, "loudness_dbfs": -20.0})
    note = range_note(cfg, {"seconds": 0.5, "loudness_dbfs": -60.0})
    assert "shorter" in note and "quieter" in note
    assert range_note({}, {"seconds": 99.0, "loudness_dbfs": 0.0}) is None  # a bundle without a range
    t = np.arange(16_000) / 16_000
    loud, quiet = clip_level(0.5 * np.sin(2 * np.pi * 200 * t), 16_000), clip_level(0.005 * np.sin(2 * np.pi * 200 * t), 16_000)
    assert loud["seconds"] == 1.0 and abs((loud["loudness_dbfs"] - quiet["loudness_dbfs"]) - 40.0) < 0.1


@pytest.mark.skipif(not (ANY / "config.json").is_file(), reason="models/any not trained")
def test_the_app_s_answer_from_any_is_the_whole_distribution_with_a_note_for_a_far_clip(tmp_path):
    """What a visitor sees from the default model: every emotion's probability, and a plain
    sentence when the clip is quieter than anything the model heard (issue 27, part 4)."""
    import soundfile as sf
    from ser_core.serving import service
    from tests.test_app_api import EXAMPLE
    y, sr = sf.read(str(EXAMPLE), dtype="float32")
    cfg = json.loads((ANY / "config.json").read_text())
    r = service.predict(str(EXAMPLE), "any")
    assert list(r["probabilities"]) == list(LABELS)
    assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert not r["outside_training_range"]
    quiet = y * 10 ** ((cfg["input_range"]["loudness_dbfs"]["min"] - 12 - r["input_level"]["loudness_dbfs"]) / 20)
    sf.write(tmp_path / "quiet.wav", quiet, sr)
    q = service.predict(str(tmp_path / "quiet.wav"), "any")
    assert q["emotion_shown"] and q["outside_training_range"]
    assert any("quieter" in n and "treat its answer with caution" in n for n in q["notes"])


def test_neutral_rows_of_a_corpus_without_boredom_get_boredom_as_a_negative():
    from ser_core.training.multicorpus import parse_negatives
    rows = Pooled(dict.fromkeys(CORPORA), np.array(["emodb", "ravdess", "ravdess", "emovo"]), np.arange(4),
                  np.array(list("abcd")), np.array(list("wxyz")), np.array(["m"] * 4),
                  np.array([LABELS.index(c) for c in ("neutral", "neutral", "anger", "neutral")]))
    plain, neg = rows.mask(np.arange(4)), rows.mask(np.arange(4), LABELS, parse_negatives("neutral>boredom"))
    b = LABELS.index("boredom")
    assert plain[:, b].tolist() == [True, False, False, False]
    assert neg[:, b].tolist() == [True, True, False, True]  # only the neutral rows change
    assert torch.equal(plain[:, :b], neg[:, :b])
    # a class no training row has stays masked (leave one corpus out without EmoDB)
    assert not rows.mask(np.arange(4), LABELS[:b], parse_negatives("neutral>boredom"))[:, b].any()
    with pytest.raises(Exception, match="LABEL>ABSENT"):
        parse_negatives("neutral>calm")


def test_room_copies_keep_the_table_s_rows_and_change_their_sound(data_dir, tmp_path, monkeypatch):
    from ser_core.config import PAPER_FEATURES
    from ser_core.data.dataset import ChunkTable, build_table
    from ser_core.data.room_copies import room_copy
    corpus = read_corpus("emodb", data_dir / "emodb", classes="all")
    full = build_table(corpus, PAPER_FEATURES, augmentation=False, progress=False)
    keep = np.flatnonzero(full.utt < 3)
    table = ChunkTable(corpus, full.cfg, np.asarray(full.features[keep]), full.utt[keep], full.aug[keep],
                       full.piece[keep])
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path))
    copy = room_copy(table, n_rooms=2)
    assert copy.shape == table.features.shape and copy.dtype == np.float32
    diff = np.abs(copy - table.features).mean(axis=(1, 2))
    assert np.all(diff > 1.0)  # every row recorded in a room (dB)
    # rows stay aligned: a chunk's copy is closer to its own clean chunk than to another clip's
    other = np.abs(copy[::-1] - table.features).mean(axis=(1, 2))
    assert np.mean(diff) < np.mean(other)
    assert np.array_equal(room_copy(table, n_rooms=2), copy)  # cached


def test_negatives_change_no_fold_whose_training_lacks_their_class(clip_rows):
    from ser_core.training.multicorpus import recipe_for
    from ser_core.training.multicorpus_run import same_training
    recipe = recipe_for(10, "swa-all-bored-neg")
    loco = {f.name: f for f in folds(clip_rows, "loco")}
    # without EmoDB nothing trains boredom: that fold trains exactly as swa-all does
    assert same_training(clip_rows, loco["loco-emodb"], recipe).key() == \
        {**recipe_for(10, "swa-all").key(), "name": recipe.stored_name}
    for name in ("loco-emovo", "loco-ravdess"):
        assert same_training(clip_rows, loco[name], recipe) is recipe
    for f in folds(clip_rows, "pooled"):
        assert same_training(clip_rows, f, recipe) is recipe
