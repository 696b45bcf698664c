"""Our training loop (ser_core/training/loop.py) and pre-training: BatchNorm recalibration,
starting from pre-trained weights, weight averaging, folds without validation speakers, the
fine-tuning learning rate. Tests that train a model on the tiny EmoDB are marked slow."""
import os

import numpy as np
import pytest
import torch

from ser_core.data.folds import fold_split
from ser_core.errors import ParameterError
from tests.test_crossval import tiny_emodb


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, data_dir):
    return tiny_emodb(tmp_path_factory.mktemp("emodb-tiny"), data_dir)


def test_batchnorm_recalibration_sets_the_clean_rows_statistics():
    """After training on mixed-up, masked batches the running statistics lag behind clean input;
    recalibration makes them the clean rows' own (what eval mode then uses)."""
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.training.loop import recalibrate_batchnorm
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
    from ser_core.training.loop import start_from
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


@pytest.mark.slow
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
    recipe = dataclasses.replace(get_recipe("pretrained"), pretrain_epochs=1, max_epochs=1)
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


@pytest.mark.slow
def test_weight_averaging_gives_the_mean_of_the_last_epochs_weights(tiny_corpus, tmp_path):
    """swa_start: the model handed back is the average of the weights after each epoch from that
    fraction of max_epochs on (here epochs 2 and 3), read against a run stopped after epoch 2."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.data.folds import fold_split
    from ser_core.training.loop import train_recipe
    from ser_core.training.recipes import get_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    base = dataclasses.replace(get_recipe("swa"), schedule="constant", mixup_alpha=0.0)
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


@pytest.mark.slow
def test_a_fold_without_validation_trains_its_validation_speakers_and_runs_every_epoch(tiny_corpus, tmp_path):
    """hold_out_validation=False: the fold's validation speakers join its training side (never a
    test speaker), no epoch is selected and none is skipped; a recipe that would need to select
    an epoch on no validation is refused."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.training.crossval import train_fold
    from ser_core.data.dataset import build_table
    from ser_core.training.loop import train_recipe
    from ser_core.training.recipes import get_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    full = split.validation_trains(table)
    assert len(full.val) == 0 and np.array_equal(full.test, split.test)
    assert np.array_equal(np.sort(full.train), np.sort(np.concatenate([split.train, split.val])))
    assert not set(table.speakers[full.train]) & set(table.speakers[split.test])
    recipe = dataclasses.replace(get_recipe("transfer"), pretrain=False,
                                 max_epochs=3, patience=1, swa_start=0.34)
    rec = train_fold(table, 0, recipe, tmp_path / "all", precision="fp32")
    assert rec["epochs"] == 3 and rec["best_epoch"] == 3  # patience 1 did not stop it
    assert rec["split"]["speakers"]["val"] == [] and rec["split"]["rows"]["train"] == len(full.train)
    assert len(rec["clips"]) == len(set(table.utt[split.test]))
    with pytest.raises(ParameterError, match="must average weights"):
        train_recipe(table, full.train, full.val, dataclasses.replace(recipe, swa_start=0.0),
                     tmp_path / "none", precision="fp32")


@pytest.mark.slow
def test_weight_averaging_with_validation_speakers_runs_every_epoch_whatever_the_patience(tiny_corpus, tmp_path):
    """A shipped bundle keeps its validation speakers out while averaging weights: their figure
    must not stop training (a --max-epochs above the recipe's patience stopped the 160-epoch
    RAVDESS bundle at epoch 103). Learning rate 0: validation never improves after epoch 1."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.training.loop import train_recipe
    from ser_core.training.recipes import get_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    assert len(split.val)
    frozen = dataclasses.replace(get_recipe("swa"), learning_rate=0.0, max_epochs=4, patience=1)
    (tmp_path / "swa").mkdir(), (tmp_path / "sel").mkdir()
    res = train_recipe(table, split.train, split.val, frozen, tmp_path / "swa", precision="fp32")
    assert len(res.history) == 4 and res.best_epoch == 4
    assert len({r["val_uar"] for r in res.history}) == 1  # nothing improved: patience 1 was spent at epoch 2
    selecting = dataclasses.replace(frozen, swa_start=0.0)
    res = train_recipe(table, split.train, split.val, selecting, tmp_path / "sel", precision="fp32")
    assert len(res.history) == 2 and res.best_epoch == 1  # a recipe that selects an epoch still stops early


@pytest.mark.slow
def test_fine_tuning_learning_rate_applies_only_to_a_model_started_from_pre_trained_weights(tiny_corpus, tmp_path):
    """finetune_lr: a model started from pre-trained weights follows the cosine schedule from
    that peak; one trained from scratch keeps the recipe's learning_rate."""
    import dataclasses
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.data.folds import fold_split
    from ser_core.models.cnn_lstm import CNNLSTM
    from ser_core.training.pretrain import EMOTIONS
    from ser_core.training.loop import train_recipe
    from ser_core.training.recipes import get_recipe
    table = build_table(read_corpus("emodb", tiny_corpus), augmentation=False, progress=False)
    split = fold_split(table, 0)
    recipe = dataclasses.replace(get_recipe("transfer-low-lr"), max_epochs=2, patience=2)
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
