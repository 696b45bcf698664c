"""Speaker-fold cross-validation: the folds, the metrics, the baseline and a tiny run that resumes."""
import json
import os
import shutil

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


def test_clip_metrics_match_scikit_learn_and_bracket_the_estimate():
    from sklearn.metrics import balanced_accuracy_score, f1_score
    from ser_core.training.crossval import clip_metrics
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
    from ser_core.models.bundle import _make_session
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.models.onnx_export import check_parity, export_onnx
    torch.manual_seed(0)
    model = CNNLSTM(5, input_norm="utterance").eval()
    path = export_onnx(model, tmp_path / "m.onnx", (261, 128))
    x = np.random.default_rng(0).normal(0, 1, (3, 261, 128)).astype(np.float32) + 2.0
    assert check_parity(model, _make_session(path), x)["same_decisions"]


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
    s2 = run_crossval("emodb", tiny_corpus, "ours", max_epochs=1, out_dir=out, run_root=runs)
    assert {k: (run_dir / f"fold-{k}.json").stat().st_mtime_ns for k in kept} == kept  # not retrained
    assert (run_dir / "fold-2.json").is_file() and s2["n_clips"] == n
    base = json.loads((out / "emodb-baselines.json").read_text())
    assert base["egemaps-svm"]["n_clips"] == n and 0 <= base["egemaps-svm"]["accuracy"] <= 1
    report = (out / "README.md").read_text()
    assert "eGeMAPSv02" in report and "recipe `ours`" in report and "chance" in report


def test_egemaps_features_are_the_88_functionals(tiny_corpus):
    from ser_core.training.baseline import egemaps
    from ser_core.data.corpora import read_corpus
    x = egemaps(read_corpus("emodb", tiny_corpus), progress=False)
    assert x.shape == (len(list(tiny_corpus.iterdir())), 88) and np.isfinite(x).all() and x.std(0).max() > 0


SHIPPED = [("emodb", "emodb"), ("emovo", "emovo"), ("ravdess", "ravdess")]


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
    from ser_core.training.crossval import result_name
    from ser_core.training.recipes import SHIPPED, get_recipe
    recipe_name, epochs = SHIPPED[name]
    recipe = get_recipe(recipe_name, **({"max_epochs": epochs} if epochs else {}))
    cfg = _json.loads((REPO_ROOT / "models" / name / "config.json").read_text())
    assert cfg["training"]["recipe"]["name"] == recipe.name
    assert cfg["training"]["recipe"]["max_epochs"] == recipe.max_epochs == cfg["crossval"]["max_epochs"]
    assert bool(cfg["training"].get("cotrained_on")) == recipe.cotrain
    cv = _json.loads((REPO_ROOT / "reports" / "crossval" / f"{result_name(name, recipe)}.json").read_text())
    assert cfg["crossval"]["accuracy"] == cv["accuracy"] and cfg["crossval"]["n_speakers"] == cv["n_speakers"]


def test_batchnorm_recalibration_sets_the_clean_rows_statistics():
    """After training on mixed-up, masked batches the running statistics lag behind clean input;
    recalibration makes them the clean rows' own (what eval mode then uses)."""
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.training.recipes import recalibrate_batchnorm
    torch.manual_seed(0)
    model = CNNLSTM(5, input_norm="global").eval()
    bn = model.cnn[2]
    bn.running_mean.fill_(0.0), bn.running_var.fill_(1.0)
    x = torch.randn(12, 261, 128) * 2 + 1
    with torch.no_grad():
        z = model.cnn[:2](model.blocks(x))
    recalibrate_batchnorm(model, x, batch=12)  # one batch: exactly its statistics
    assert torch.allclose(bn.running_mean, z.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, z.var((0, 2, 3)), rtol=1e-3)
    assert bn.momentum == 0.01 and not bn.training
    recalibrate_batchnorm(model, x, batch=4)  # the average of three batches' statistics
    assert torch.allclose(bn.running_mean, z.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, z.var((0, 2, 3)), rtol=0.1)


def test_pretrained_weights_start_each_class_from_the_same_emotion():
    """Every layer copied; the output row of each class from the same emotion's row; a class the
    other corpora lack keeps its fresh initialisation."""
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.training.pretrain import EMOTIONS
    from ser_core.training.recipes import start_from
    torch.manual_seed(0)
    pre = CNNLSTM(len(EMOTIONS), input_norm="global")
    init = {"model": pre.state_dict(), "outputs": list(EMOTIONS),
            "classes": [e for e in EMOTIONS if e != "boredom"]}
    torch.manual_seed(1)
    model = CNNLSTM(5, input_norm="global")
    fresh = model.dense.weight[0].detach().clone()
    classes = ("boredom", "disgust", "happiness", "sadness", "neutral")
    start_from(model, init, classes)
    for i, c in enumerate(classes[1:], 1):
        j = EMOTIONS.index(c)
        assert torch.equal(model.dense.weight[i], pre.dense.weight[j])
        assert torch.equal(model.dense.bias[i], pre.dense.bias[j])
    assert torch.equal(model.dense.weight[0], fresh)  # boredom: only EmoDB has it
    assert torch.equal(model.cnn[0].weight, pre.cnn[0].weight)
    with pytest.raises(ParameterError, match="do not fit"):
        start_from(CNNLSTM(5, lstm_units=128, input_norm="global"), init, classes)


def test_pretraining_on_the_other_corpora_then_a_fold_from_it(tiny_corpus, tmp_path, data_dir):
    """Pre-training reads only the two other corpora (every class), resumes from its file, and
    a fold trained from it differs from one trained from scratch."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.training.crossval import train_fold
    from ser_core.data.dataset import build_table
    from ser_core.training.pretrain import EMOTIONS, pretrain
    from ser_core.training.recipes import get_recipe
    root = tmp_path / "data"
    (root / "emodb").mkdir(parents=True)
    for corpus, pattern, n in (("emovo", "*/*.flac", 14), ("ravdess", "*/*.flac", 16)):
        files = sorted((data_dir / corpus).glob(pattern))[::37][:n]
        for f in files:
            (root / corpus / f.parent.name).mkdir(parents=True, exist_ok=True)
            os.symlink(f, root / corpus / f.parent.name / f.name)
    recipe = dataclasses.replace(get_recipe("ours-global-pre"), pretrain_epochs=1, max_epochs=1)
    lines = []

    class Log:
        def write(self, s):
            lines.append(s)

        def flush(self):
            pass
    init = pretrain("emodb", root, recipe, tmp_path / "runs", precision="fp32", log=Log())
    assert init["corpora"] == ["emovo", "ravdess"] and init["epochs"] == 1
    assert init["chunks"] >= 30 and init["model"]["dense.weight"].shape[0] == len(EMOTIONS)
    assert "boredom" not in init["classes"] and set(init["classes"]) <= set(EMOTIONS)
    again = pretrain("emodb", root, recipe, tmp_path / "runs", precision="fp32", log=Log())
    assert torch.equal(again["model"]["dense.weight"], init["model"]["dense.weight"])
    assert sum("epoch 1/1" in s for s in lines) == 1  # the second call loaded the file
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    # co-training rows: the other corpora's chunks of EmoDB's classes, labelled in EmoDB's order
    from ser_core.training.pretrain import cotrain_rows, pretrain_tables
    x, y, counts = cotrain_rows("emodb", table.corpus.classes, root, recipe)
    want = {t.corpus.name: [t.corpus.classes[k] for k in t.labels] for t in pretrain_tables("emodb", root)}
    kept = {n: [e for e in v if e in table.corpus.classes] for n, v in want.items()}
    assert {n: c["chunks"] for n, c in counts.items()} == {n: len(v) for n, v in kept.items() if v}
    assert len(x) == len(y) == sum(len(v) for v in kept.values()) > 0
    assert sorted(table.corpus.classes[k] for k in y.tolist()) == sorted(sum(kept.values(), []))
    assert x.shape[1:] == table.features.shape[1:] and abs(float(x.mean())) < 0.5
    a = train_fold(table, 0, recipe, tmp_path / "a", precision="fp32", init=init)
    b = train_fold(table, 0, recipe, tmp_path / "b", precision="fp32")
    assert len(a["clips"]) == len(b["clips"]) > 0
    assert [c["probs"] for c in a["clips"]] != [c["probs"] for c in b["clips"]]


def test_weight_averaging_gives_the_mean_of_the_last_epochs_weights(tiny_corpus, tmp_path):
    """swa_start: the model handed back is the average of the weights after each epoch from that
    fraction of max_epochs on (here epochs 2 and 3), read against a run stopped after epoch 2."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.data.folds import fold_split
    from ser_core.training.recipes import get_recipe, train_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    base = dataclasses.replace(get_recipe("ours-global-swa"), schedule="constant", mixup_alpha=0.0)
    swa = dataclasses.replace(base, max_epochs=3, patience=3, swa_start=0.34)
    (tmp_path / "swa").mkdir(), (tmp_path / "two").mkdir()
    res = train_recipe(table, split.train, split.val, swa, tmp_path / "swa", precision="fp32")
    w3 = torch.load(tmp_path / "swa" / "checkpoint.pt", weights_only=False)["model"]
    two = dataclasses.replace(base, max_epochs=2, patience=2, swa_start=0.0)
    train_recipe(table, split.train, split.val, two, tmp_path / "two", precision="fp32")
    w2 = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=False)["model"]
    for name, p in res.model.named_parameters():
        assert torch.allclose(p, (w2[name] + w3[name]) / 2, atol=1e-6), name
    assert not torch.allclose(res.model.dense.weight, w3["dense.weight"])


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


def test_recipe_key_keeps_runs_made_before_a_field_was_added():
    """A run folder is named by the recipe's non-default fields: a recipe saved before a field
    (with a default that keeps the old behaviour) existed names the same folder; a real change
    does not."""
    import dataclasses
    from ser_core.training.recipes import Recipe, get_recipe
    r = get_recipe("ours-global")
    old = {k: v for k, v in r.to_dict().items()
           if k not in ("swa_start", "pretrain", "pretrain_epochs", "offline_augmentation")}
    assert Recipe(**old).key() == r.key()
    assert dataclasses.replace(r, swa_start=0.5).key() != r.key()
    assert dataclasses.replace(r, describe="reworded").key() == r.key()
    assert r.key()["standardizer"] == "global" and "mixup_alpha" not in r.key()


def test_a_fold_without_validation_trains_its_validation_speakers_and_runs_every_epoch(tiny_corpus, tmp_path):
    """hold_out_validation=False: the fold's validation speakers join its training side (never a
    test speaker), no epoch is selected and none is skipped; a recipe that would need to select
    an epoch on no validation is refused."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.training.crossval import train_fold
    from ser_core.data.dataset import build_table
    from ser_core.training.recipes import get_recipe, train_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    full = split.validation_trains(table)
    assert len(full.val) == 0 and np.array_equal(full.test, split.test)
    assert np.array_equal(np.sort(full.train), np.sort(np.concatenate([split.train, split.val])))
    assert not set(table.speakers[full.train]) & set(table.speakers[split.test])
    recipe = dataclasses.replace(get_recipe("ours-global-pre-swa-all"), pretrain=False,
                                 max_epochs=3, patience=1, swa_start=0.34)
    rec = train_fold(table, 0, recipe, tmp_path / "all", precision="fp32")
    assert rec["epochs"] == 3 and rec["best_epoch"] == 3  # patience 1 did not stop it
    assert rec["split"]["speakers"]["val"] == [] and rec["split"]["rows"]["train"] == len(full.train)
    assert len(rec["clips"]) == len(set(table.utt[split.test]))
    with pytest.raises(ParameterError, match="must average weights"):
        train_recipe(table, full.train, full.val, dataclasses.replace(recipe, swa_start=0.0),
                     tmp_path / "none", precision="fp32")


def test_weight_averaging_with_validation_speakers_runs_every_epoch_whatever_the_patience(tiny_corpus, tmp_path):
    """A shipped bundle keeps its validation speakers out while averaging weights: their figure
    must not stop training (a --max-epochs above the recipe's patience stopped the 160-epoch
    RAVDESS bundle at epoch 103). Learning rate 0: validation never improves after epoch 1."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.training.recipes import get_recipe, train_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    assert len(split.val)
    frozen = dataclasses.replace(get_recipe("ours-global-swa"), learning_rate=0.0, max_epochs=4, patience=1)
    (tmp_path / "swa").mkdir(), (tmp_path / "sel").mkdir()
    res = train_recipe(table, split.train, split.val, frozen, tmp_path / "swa", precision="fp32")
    assert len(res.history) == 4 and res.best_epoch == 4
    assert len({r["val_uar"] for r in res.history}) == 1  # nothing improved: patience 1 was spent at epoch 2
    selecting = dataclasses.replace(frozen, swa_start=0.0)
    res = train_recipe(table, split.train, split.val, selecting, tmp_path / "sel", precision="fp32")
    assert len(res.history) == 2 and res.best_epoch == 1  # a recipe that selects an epoch still stops early


def test_recipes_that_differ_only_in_fine_tuning_share_one_pre_training(tmp_path):
    from ser_core.training.pretrain import pretrain_path
    from ser_core.training.recipes import get_recipe
    paths = {pretrain_path("emodb", get_recipe(r), [], tmp_path)
             for r in ("ours-global-pre", "ours-global-pre-swa", "ours-global-pre-swa-all",
                       "ours-global-pre-swa-all-ft")}
    assert len(paths) == 1
    import dataclasses
    other = dataclasses.replace(get_recipe("ours-global-pre"), dropout=0.5)
    assert pretrain_path("emodb", other, [], tmp_path) not in paths


def test_fine_tuning_learning_rate_applies_only_to_a_model_started_from_pre_trained_weights(tiny_corpus, tmp_path):
    """finetune_lr: a model started from pre-trained weights follows the cosine schedule from
    that peak; one trained from scratch keeps the recipe's learning_rate."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.data.folds import fold_split
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.training.pretrain import EMOTIONS
    from ser_core.training.recipes import get_recipe, train_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    recipe = dataclasses.replace(get_recipe("ours-global-pre-swa-all-ft"), max_epochs=2, patience=2)
    assert recipe.finetune_lr == 1.5e-4 and recipe.learning_rate == 5e-4
    torch.manual_seed(0)
    pre = CNNLSTM(len(EMOTIONS), input_norm="global")
    init = {"model": pre.state_dict(), "classes": ["happiness", "sadness"], "outputs": list(EMOTIONS)}
    (tmp_path / "tuned").mkdir(), (tmp_path / "scratch").mkdir()
    tuned = train_recipe(table, split.train, split.val, recipe, tmp_path / "tuned", precision="fp32",
                         init=init)
    scratch = train_recipe(table, split.train, split.val, recipe, tmp_path / "scratch", precision="fp32")
    for a, b in zip(tuned.history, scratch.history):
        assert a["lr"] > 0 and a["lr"] / b["lr"] == pytest.approx(1.5e-4 / 5e-4)


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
    assert "--recipe ours-global-pre-swa-all --out" in calls[1][4] and "--max-epochs 160" in calls[1][4]
