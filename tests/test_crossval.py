"""Speaker-fold cross-validation: the folds, the baseline, a tiny run that resumes, and the shipped
bundles quoted as SHIPPED says. The recipes: test_recipes.py; the training loop:
test_training_loop.py; the figures: test_stats_and_splits.py."""
import json
import os

import numpy as np
import pytest
import torch

from ser_core.data.corpora import CORPORA
from ser_core.errors import ParameterError
from ser_core.data.folds import FOLDS, SHIP_VALIDATION, fold_split, ship_split


def _gender(corpus, speaker):
    spec = CORPORA[corpus]
    if corpus == "emodb":
        return "male" if speaker in spec.MALE else "female"
    if corpus == "emovo":
        return "male" if speaker[0] == "m" else "female"
    return "male" if int(speaker) % 2 else "female"


ALL_SPEAKERS = {"emodb": set(CORPORA["emodb"].MALE | CORPORA["emodb"].FEMALE),
                "emovo": {f"{g}{i}" for g in "mf" for i in (1, 2, 3)},
                "ravdess": {f"{a:02d}" for a in range(1, 25)}}


@pytest.mark.parametrize("corpus", sorted(FOLDS))
def test_folds_test_every_speaker_exactly_once_balanced_by_gender(corpus):
    folds = FOLDS[corpus]
    flat = [s for f in folds for s in f]
    assert len(flat) == len(set(flat)) and set(flat) == ALL_SPEAKERS[corpus]
    for fold in folds:
        genders = [_gender(corpus, s) for s in fold]
        assert genders.count("male") == genders.count("female") >= 1
    m, f = sorted(SHIP_VALIDATION[corpus], key=lambda s: _gender(corpus, s) == "female")
    assert (_gender(corpus, m), _gender(corpus, f)) == ("male", "female")


@pytest.fixture(scope="module")
def emodb_table(data_dir):
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    return build_table(read_corpus("emodb", data_dir / "emodb"), augmentation=False, progress=False)


def test_fold_splits_are_disjoint_by_speaker_and_validate_on_the_training_side(emodb_table):
    t = emodb_table
    seen = []
    for k in range(len(FOLDS["emodb"])):
        s = fold_split(t, k)
        spk = {name: set(t.speakers[getattr(s, name)]) for name in ("train", "val", "test")}
        assert spk["test"] == set(FOLDS["emodb"][k])
        assert not spk["train"] & spk["test"] and not spk["val"] & spk["test"]
        assert not spk["train"] & spk["val"] and len(spk["val"]) == 2
        assert len(s.train) + len(s.val) + len(s.test) == len(t)
        seen += sorted(spk["test"])
    assert sorted(seen) == sorted(ALL_SPEAKERS["emodb"])
    ship = ship_split(t)
    assert set(t.speakers[ship.val]) == set(SHIP_VALIDATION["emodb"]) and len(ship.test) == 0
    assert not set(t.speakers[ship.train]) & set(SHIP_VALIDATION["emodb"])
    with pytest.raises(ParameterError, match="accepted: 0..4"):
        fold_split(t, 5)


def test_band_standardiser_and_utterance_norm_remove_a_recording_offset():
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.audio.standardize import Standardizer
    rng = np.random.default_rng(1)
    feats = rng.normal(40, 10, (30, 261, 128)).astype(np.float32)
    s = Standardizer.fit_bands(feats)
    assert np.allclose(s.mean[0], feats.mean((0, 1)), atol=1e-3)
    assert np.allclose(s.scale[5], feats.std((0, 1)), rtol=1e-3)
    g = Standardizer.fit_global(feats)
    assert np.allclose(g.mean, feats.mean(), atol=1e-2) and np.allclose(g.scale, feats.std(), rtol=1e-3)
    for norm, st in (("utterance", s), ("global", g)):
        model = CNNLSTM(5, input_norm=norm).eval()
        x = torch.from_numpy(st.transform(feats[:3]))
        shifted = torch.from_numpy(st.transform(feats[:3] + 17.0))  # another noise floor: a dB offset
        with torch.no_grad():
            assert torch.allclose(model(x), model(shifted), atol=1e-4)
            plain = CNNLSTM(5).eval()
            plain.load_state_dict(model.state_dict())
            assert not torch.allclose(plain(x), plain(shifted), atol=1e-2)


def test_utterance_norm_model_exports_to_onnx_with_parity(tmp_path):
    from ser_core.models.onnx_export import make_session
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.models.onnx_export import check_parity, export_onnx
    torch.manual_seed(0)
    model = CNNLSTM(5, input_norm="utterance").eval()
    path = export_onnx(model, tmp_path / "m.onnx", (261, 128))
    x = np.random.default_rng(0).normal(0, 1, (3, 261, 128)).astype(np.float32) + 2.0
    assert check_parity(model, make_session(path), x)["same_decisions"]


def tiny_emodb(root, data_dir):
    """EmoDB cut to one clip per speaker and class it has (49 clips: speaker 08 recorded no
    disgust) as links in `root`: all ten speakers, fast to train."""
    picked = {}
    for f in sorted((data_dir / "emodb" / "wav").glob("*.flac")):
        key = (f.name[:2], f.name[5])
        if f.name[5] in "LEFTN" and key not in picked:
            picked[key] = f
    for f in picked.values():
        os.symlink(f, root / f.name)
    return root


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, data_dir):
    return tiny_emodb(tmp_path_factory.mktemp("emodb-tiny"), data_dir)


@pytest.mark.slow
def test_tiny_crossval_runs_every_fold_resumes_and_reports(tiny_corpus, tmp_path):
    from ser_core.training.crossval import run_crossval
    out, runs = tmp_path / "report", tmp_path / "runs"
    n = len(list(tiny_corpus.iterdir()))
    assert n >= 45
    s = run_crossval("emodb", tiny_corpus, "ours", max_epochs=1, out_dir=out, run_root=runs)
    assert s["n_clips"] == n and s["n_speakers"] == 10 and s["folds"] == 5
    assert sum(p["n_clips"] for p in s["per_fold"]) == n
    assert set(s["per_class_recall"]) == {"boredom", "disgust", "happiness", "sadness", "neutral"}
    assert 0 <= s["accuracy_speaker_bootstrap95"][0] <= s["accuracy"] <= s["accuracy_speaker_bootstrap95"][1]
    run_dir = next(runs.iterdir())
    kept = {k: (run_dir / f"fold-{k}.json").stat().st_mtime_ns for k in (0, 1, 3, 4)}
    (run_dir / "fold-2.json").unlink()
    # the recipe by its name now ("ours" was its first): the same run folder, resumed
    s2 = run_crossval("emodb", tiny_corpus, "augment", max_epochs=1, out_dir=out, run_root=runs)
    assert {k: (run_dir / f"fold-{k}.json").stat().st_mtime_ns for k in kept} == kept  # not retrained
    assert (run_dir / "fold-2.json").is_file() and s2["n_clips"] == n and len(list(runs.iterdir())) == 1
    assert json.loads((out / "emodb-ours-e1.json").read_text())["accuracy"] == s2["accuracy"]
    base = json.loads((out / "emodb-baselines.json").read_text())
    assert base["egemaps-svm"]["n_clips"] == n and 0 <= base["egemaps-svm"]["accuracy"] <= 1
    report = (out / "README.md").read_text()
    assert "eGeMAPSv02" in report and "recipe `ours`" in report and "chance" in report


@pytest.mark.slow
def test_egemaps_features_are_the_88_functionals(tiny_corpus):
    from ser_core.training.baseline import egemaps
    from ser_core.data.corpora import read_corpus
    x = egemaps(read_corpus("emodb", tiny_corpus), progress=False)
    assert x.shape == (len(list(tiny_corpus.iterdir())), 88) and np.isfinite(x).all() and x.std(0).max() > 0


SHIPPED = [("emodb", "emodb"), ("emovo", "emovo"), ("ravdess", "ravdess")]


@pytest.mark.slow
@pytest.mark.parametrize("name,corpus", SHIPPED)
def test_shipped_default_model_does_not_answer_one_class_for_new_voices(name, corpus, data_dir):
    """Every clip of the speakers the shipped model never trained on: no single label for most
    of them, and better than chance by a margin."""
    from ser_core.models.bundle import ModelBundle
    from ser_core.data.corpora import read_corpus
    b = ModelBundle.load(name)
    held = set(b.held_out_speakers)
    assert held, "a shipped speaker-protocol model names the speakers it never trained on"
    utts = [u for u in read_corpus(corpus, data_dir / corpus).utterances if u.speaker in held]
    assert len(utts) >= 60  # every clip of the held-out speakers (71, 140 and 80)
    labels = [b.predict_clip(u.path).label for u in utts]
    top = max(labels.count(l) for l in set(labels))
    assert top / len(labels) < 0.5, labels
    assert np.mean([l == u.emotion for l, u in zip(labels, utts)]) > 0.3


@pytest.mark.parametrize("name", ["emodb", "emovo", "ravdess"])
def test_each_default_bundle_is_trained_and_quoted_as_shipped_says(name):
    """models/<corpus> holds the recipe and epoch cap of ser_core.training.recipes.SHIPPED (what
    train-defaults retrains), and its card's figure is that recipe's cross-validation at the
    same epochs, read from the report's JSON."""
    import json as _json
    from ser_core.models.bundle import REPO_ROOT
    from ser_core.config import record_key
    from ser_core.training.crossval import result_name
    from ser_core.training.recipes import SHIPPED, get_recipe
    recipe_name, epochs = SHIPPED[name]
    recipe = get_recipe(recipe_name, epochs)
    cfg = _json.loads((REPO_ROOT / "models" / name / "config.json").read_text())
    assert cfg["training"]["recipe"]["name"] == recipe.stored_name == recipe.to_dict()["name"]
    assert record_key(cfg["training"]["recipe"]) == recipe.key()  # the same run folder and checkpoint
    assert cfg["training"]["recipe"]["max_epochs"] == recipe.max_epochs == cfg["crossval"]["max_epochs"]
    assert bool(cfg["training"].get("cotrained_on")) == recipe.cotrain
    cv = _json.loads((REPO_ROOT / "reports" / "crossval" / f"{result_name(name, recipe)}.json").read_text())
    assert cfg["crossval"]["accuracy"] == cv["accuracy"] and cfg["crossval"]["n_speakers"] == cv["n_speakers"]


def test_model_card_of_a_pretrained_bundle_names_every_corpus_and_licence():
    """A model that also learned from other corpora says so, with their licences (RAVDESS's
    non-commercial share-alike licence then applies to the model)."""
    import json as _json
    from ser_core.models.card import render
    from ser_core.models.bundle import REPO_ROOT
    cfg = _json.loads((REPO_ROOT / "models" / "emodb" / "config.json").read_text())
    cfg["training"]["pretrained_on"] = {"corpora": ["emovo", "ravdess"], "emotions": ["fear", "anger"],
                                        "chunks": 2231, "epochs": 30, "cpu_seconds": 500.0}
    card = render(cfg)
    assert "license: cc-by-nc-sa-4.0" in card
    assert "every clip of emovo and ravdess (2231 chunks" in card
    assert "EMOVO Corpus" in card and "RAVDESS" in card and "CC BY-NC-SA 4.0" in card
    cfg["training"]["cotrained_on"] = {"ravdess": {"chunks": 900, "speakers": 24}}
    assert "the clips of its classes from ravdess (900 chunks, 24 speakers)" in render(cfg)
    del cfg["training"]["pretrained_on"]
    assert "license: cc-by-nc-sa-4.0" in render(cfg)  # co-training alone also brings RAVDESS's licence
    del cfg["training"]["cotrained_on"]
    assert "license: other" in render(cfg) and "Pre-training" not in render(cfg)


def test_train_defaults_trains_the_speaker_bundles_by_shipped_and_skips_finished_ones(tmp_path, monkeypatch):
    """train-defaults, speaker protocol: each corpus by its SHIPPED recipe and epochs (not the
    study's recipe), a bundle folder with a config already there skipped."""
    import argparse
    import types
    import ser_core.training.ship
    from export import defaults
    from ser_core.training.recipes import SHIPPED
    calls = []

    def fake(corpus, data_dir, out, recipe, weights_dtype, epochs, run_dir=None, command=""):
        calls.append((corpus, recipe, epochs, weights_dtype, command))
        return types.SimpleNamespace(config={"crossval": {"accuracy": 0.5}})
    monkeypatch.setattr(ser_core.training.ship, "train_shipped_bundle", fake)
    (tmp_path / "emodb").mkdir()
    (tmp_path / "emodb" / "config.json").write_text("{}")
    args = argparse.Namespace(data_root="DATA", models_dir=str(tmp_path), protocols="speaker",
                              corpora="emodb,emovo,ravdess", max_epochs=None, weights_dtype="int8")
    defaults.run(args)
    assert [c[:4] for c in calls] == [(c, *SHIPPED[c], "int8") for c in ("emovo", "ravdess")]
    assert "--recipe transfer --out" in calls[1][4] and "--max-epochs 160" in calls[1][4]
