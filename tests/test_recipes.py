"""The training configuration: one type for the study's recipe and ours, recipes declared as a
parent plus the fields they change, named by what they are, their first names still accepted and
still the names their runs record (so committed reports, run folders and bundles keep loading)."""
import dataclasses
import json
from pathlib import Path

import pytest

from ser_core.config import PAPER_TRAIN, STUDY_FIELDS, STUDY_TRAIN, TrainConfig, record_key
from ser_core.errors import ParameterError
from ser_core.training.recipes import ALIASES, DEFAULT_RECIPE, RECIPES, SHIPPED, get_recipe, recipe_order

REPO = Path(__file__).resolve().parent.parent
NAMING = ("name", "describe", "stored_as", "declared_epochs")


def changed(child: TrainConfig, parent: TrainConfig) -> dict:
    return {f.name: getattr(child, f.name) for f in dataclasses.fields(TrainConfig)
            if f.name not in NAMING and getattr(child, f.name) != getattr(parent, f.name)}


@pytest.mark.parametrize("first,name", sorted(ALIASES.items()))
def test_a_first_name_resolves_to_the_same_recipe_and_stays_its_recorded_name(first, name):
    r = get_recipe(first)
    assert r is get_recipe(name) is RECIPES[name] and r.name == name
    assert r.stored_name == r.to_dict()["name"] == r.hyperparameters()["recipe"] == r.key()["name"] == first
    assert name not in ALIASES and first not in RECIPES


def test_recipes_are_named_by_what_they_are_and_declared_as_a_parent_plus_changes():
    assert changed(get_recipe("transfer"), get_recipe("pretrained-swa")) == {"hold_out_validation": False}
    assert changed(get_recipe("cotrain"), get_recipe("transfer")) == {"cotrain": True, "max_epochs": 30,
                                                                     "patience": 30}
    assert changed(get_recipe("cotrain-low-lr"), get_recipe("cotrain")) == {"finetune_lr": 1.5e-4}
    assert changed(get_recipe("pretrained-swa"), get_recipe("swa")) == {"pretrain": True}
    # the study's recipe on speaker folds is the study's configuration, run by our loop
    assert changed(get_recipe("study"), STUDY_TRAIN) == {"loop": "ours", "schedule": "constant",
                                                         "max_epochs": 80, "patience": 30}
    assert DEFAULT_RECIPE in RECIPES and all(name in RECIPES for name, _ in SHIPPED.values())
    assert all(len(name) <= 21 and "ours" not in name for name in RECIPES)


def test_the_study_configuration_records_what_its_bundles_always_recorded():
    """The paper protocol's bundles (models/<corpus>-paper) record the study's hyperparameters
    under their own keys; the per-corpus values are the study's (PAPER.md)."""
    for corpus, cfg in PAPER_TRAIN.items():
        hp = json.loads((REPO / "models" / f"{corpus}-paper" / "config.json").read_text())["hyperparameters"]
        assert list(cfg.to_dict()) == list(STUDY_FIELDS) and cfg.hyperparameters() == cfg.to_dict()
        assert {k: v for k, v in cfg.to_dict().items() if k != "max_epochs"} == \
            {k: v for k, v in hp.items() if k != "max_epochs"}  # the bundles were trained at a cap
    assert (PAPER_TRAIN["emovo"].learning_rate, PAPER_TRAIN["emovo"].batch_size) == (1e-4, 8)
    assert (PAPER_TRAIN["ravdess"].dropout, PAPER_TRAIN["ravdess"].batch_size) == (0.6, 128)
    assert STUDY_TRAIN.to_dict()["early_stopping_patience"] == STUDY_TRAIN.patience == 10


def test_each_loop_refuses_the_other_loops_configuration():
    from ser_core.training.loop import train_recipe
    from ser_core.training.study import train
    with pytest.raises(ParameterError, match="study's loop"):
        train_recipe(None, [], [], PAPER_TRAIN["emodb"])
    with pytest.raises(ParameterError, match="training/loop.py"):
        train(None, None, get_recipe("study"))


def test_a_field_outside_its_accepted_values_is_refused_when_declared():
    with pytest.raises(ParameterError, match="standardizer='utterance' .accepted: band, cell, global"):
        dataclasses.replace(get_recipe("augment"), standardizer="utterance")
    with pytest.raises(ParameterError, match="unknown recipe 'ours-gloabl'.*transfer.*ours-global"):
        get_recipe("ours-gloabl")


def test_an_epoch_cap_names_the_result_but_keeps_the_recipe():
    from ser_core.training.crossval import result_name
    r = get_recipe("transfer", 160)
    assert r.max_epochs == 160 and r.declared_epochs == 60 and r.name == "transfer"
    assert result_name("ravdess", r) == "ravdess-ours-global-pre-swa-all-e160"
    assert result_name("emodb", get_recipe("ours-global-pre-swa-all")) == "emodb-ours-global-pre-swa-all"
    assert result_name("emodb", TrainConfig(name="new-recipe")) == "emodb-new-recipe"  # no first name


def test_every_committed_result_resolves_by_the_name_it_records():
    """reports/crossval/<corpus>-<recipe>.json: its recorded recipe resolves (by the name and
    epoch cap it records) to a recipe whose result file is that file and whose run key is the
    one it ran under, except the study row, run before its recipe got its final cap and
    patience."""
    for path in sorted((REPO / "reports" / "crossval").glob("*.json")):
        if path.name.endswith("-baselines.json") or path.name == "emodb-study.json":
            continue
        from ser_core.training.crossval import result_name
        rec = json.loads(path.read_text())["recipe"]
        r = get_recipe(rec["name"], rec["max_epochs"])
        assert result_name(path.name.split("-")[0], r) == path.stem
        assert record_key(rec) == r.key(), path.name


def test_the_report_lists_recipes_in_the_ladder_order_whatever_name_they_record():
    assert [recipe_order(n) for n in ("study", "norm", "ours", "global-norm", "ours-global-aug")] == \
        [0, 1, 3, 4, 16]
    assert recipe_order("not-a-recipe") == 99


def test_the_crossval_command_accepts_first_names_and_new_names():
    from export.cli import build_parser
    for name in ("ours-global-pre-swa-all-co", "cotrain"):
        args = build_parser().parse_args(["crossval", "--corpus", "emovo", "--data-dir", "x",
                                          "--recipe", name])
        assert get_recipe(args.recipe) is RECIPES["cotrain"]
    assert build_parser().parse_args(["crossval", "--corpus", "emovo", "--data-dir", "x"]).recipe == DEFAULT_RECIPE


def test_recipe_key_keeps_runs_made_before_a_field_was_added():
    """A run folder is named by the recipe's non-default fields: a recipe saved before a field
    (with a default that keeps the old behaviour) existed names the same folder; a real change
    does not."""
    r = get_recipe("ours-global")
    old = {k: v for k, v in r.to_dict().items()
           if k not in ("swa_start", "pretrain", "pretrain_epochs", "offline_augmentation")}
    assert record_key(old) == r.key()
    assert dataclasses.replace(r, swa_start=0.5).key() != r.key()
    assert dataclasses.replace(r, describe="reworded").key() == r.key()
    assert r.key()["standardizer"] == "global" and "mixup_alpha" not in r.key()


def test_recipes_that_differ_only_in_fine_tuning_share_one_pre_training(tmp_path):
    from ser_core.training.pretrain import pretrain_path
    paths = {pretrain_path("emodb", get_recipe(r), [], tmp_path)
             for r in ("pretrained", "pretrained-swa", "transfer", "transfer-low-lr", "cotrain")}
    assert len(paths) == 1
    other = dataclasses.replace(get_recipe("pretrained"), dropout=0.5)
    assert pretrain_path("emodb", other, [], tmp_path) not in paths
