"""Adversarial training (ser_core/training/adversarial.py), the defence whose bundles the grid
also attacks: its examples, the bundle it writes, resuming, and the command that rebuilds it."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ser_core.errors import ParameterError
from ser_core.data.held_out import HeldOutSet


@pytest.fixture(scope="module")
def four(test_examples):
    """4 real test-speaker examples, 2 male and 2 female."""
    x, labels, genders = test_examples
    idx = np.concatenate([np.flatnonzero(genders == g)[:2] for g in ("male", "female")])
    return HeldOutSet(x[idx], labels[idx], genders[idx], idx)


def test_defence_examples_stay_in_the_ball_and_raise_the_loss(bundle, four):
    from ser_core.training.adversarial import fgsm_examples, pgd_examples
    model = bundle.torch_model()
    x, y = torch.from_numpy(four.x[1:3]), torch.from_numpy(four.labels[1:3]).long()  # a male and a female
    lo, hi = bundle.clip_range
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
    for xa in (fgsm_examples(model, x, y, 0.5, lo, hi),
               pgd_examples(model, x, y, 0.5, lo, hi, 2, torch.Generator().manual_seed(0))):
        assert (xa - x).abs().max().item() <= 0.5 + 1e-5 and xa.min() >= lo and xa.max() <= hi
        with torch.no_grad():
            assert F.cross_entropy(model(xa), y).item() > clean


@pytest.mark.slow  # trains
def test_defence_writes_a_bundle_that_records_its_recipe(bundle, tmp_path, data_dir):
    from ser_core.models.bundle import ModelBundle
    from ser_core.training.adversarial import DefenceConfig, adversarial_train
    with pytest.raises(ParameterError):
        DefenceConfig(adversarial_fraction=1.5).check()
    out = adversarial_train(bundle, tmp_path / "defended", DefenceConfig("fgsm", batch_size=8, max_steps=1, train_rows=8),
                            data_dir=data_dir)
    again = ModelBundle.load(out.folder)
    d = again.config["defence"]
    assert d["method"] == "fgsm-at" and d["base"] == bundle.name and d["eps"] == 1.25
    assert d["adversarial_fraction"] == 0.6 and again.config["training"]["steps"] == 1
    assert again.config["retrain_command"] == (f"python -m export defend --model {bundle.name} --method fgsm "
                                               f"--batch-size 8 --out {tmp_path / 'defended'}")
    assert again.config["onnx_parity"]["same_decisions"]
    before = bundle.torch_model().state_dict()
    after = again.torch_model().state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


class _StopAfterFirstEpoch(io.StringIO):
    """A log that interrupts training when the first epoch's row is written."""

    def write(self, text):
        if '"epoch": 1,' in text:
            raise KeyboardInterrupt("simulated interruption")
        return super().write(text)


@pytest.mark.slow  # trains
def test_defence_resumes_after_interruption_to_the_same_weights(bundle, tmp_path, data_dir):
    from ser_core.training.adversarial import CHECKPOINT, DefenceConfig, adversarial_train
    cfg = DefenceConfig("fgsm", epochs=2, batch_size=8, train_rows=16)
    straight = adversarial_train(bundle, tmp_path / "straight", cfg, data_dir=data_dir, log=io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        adversarial_train(bundle, tmp_path / "resumed", cfg, data_dir=data_dir, log=_StopAfterFirstEpoch())
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    with pytest.raises(ParameterError, match="eps"):  # another recipe does not pick it up
        adversarial_train(bundle, tmp_path / "resumed", dataclasses.replace(cfg, eps=0.5), data_dir=data_dir,
                          log=io.StringIO())
    log = io.StringIO()
    resumed = adversarial_train(bundle, tmp_path / "resumed", cfg, data_dir=data_dir, log=log)
    lines = [json.loads(l) for l in log.getvalue().splitlines()]
    assert lines[0]["epochs_done"] == 1 and [l["epoch"] for l in lines[1:]] == [2]
    assert not (tmp_path / "resumed" / CHECKPOINT).exists()
    h0, h1 = straight.config["training"]["history"], resumed.config["training"]["history"]
    assert [r["loss"] for r in h0] == [r["loss"] for r in h1] and h1[-1]["steps"] == 4
    a, b = straight.torch_model().state_dict(), resumed.torch_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], bundle.torch_model().state_dict()[k]) for k in a if a[k].is_floating_point())


def test_defend_command_reproduces_the_study_recipe_with_no_flags():
    from ser_core.training.adversarial import DefenceConfig, defend_command
    d = {**dataclasses.asdict(DefenceConfig()), "method": "fgsm-at", "base": "emodb-paper", "folder": "models-defended/x"}
    assert defend_command(d) == "python -m export defend --model emodb-paper --method fgsm --out models-defended/x"


def test_defend_options_and_the_rebuild_command_come_from_the_one_recipe():
    """`export defend` parses its options into DefenceConfig, and the report's rebuild command
    of that recipe parses back into the same DefenceConfig (both read DefenceConfig's fields)."""
    from export.cli import build_parser
    from ser_core.training.adversarial import config_from_arguments, defend_command
    argv = ["defend", "--model", "emodb-paper", "--method", "pgd", "--eps", "0.5", "--fraction", "0.5",
            "--epochs", "3", "--lr", "0.001", "--batch-size", "64", "--pgd-steps", "3", "--out", "models-defended/x"]
    cfg = config_from_arguments(build_parser().parse_args(argv))
    assert (cfg.method, cfg.eps, cfg.adversarial_fraction, cfg.epochs, cfg.learning_rate, cfg.batch_size,
            cfg.pgd_steps, cfg.max_steps) == ("pgd", 0.5, 0.5, 3, 0.001, 64, 3, None)
    command = defend_command({**dataclasses.asdict(cfg), "base": "emodb-paper", "folder": "models-defended/x"})
    again = build_parser().parse_args(command.split()[3:])
    assert config_from_arguments(again) == cfg
