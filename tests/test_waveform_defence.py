"""Adversarial training in the waveform domain (ser_core/training/waveform_adversarial.py through
ser_core/training/adversarial.py): the examples stay in the SNR ball and raise the loss, training
never reads the held-out speakers, frozen layers stay frozen, the recipe refuses what it cannot
do, and the bundle it writes stores only its trained layers and serves."""
from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ser_core.errors import ParameterError


@pytest.fixture(scope="module")
def table(bundle, data_dir):
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    name = bundle.config["corpus"]
    return build_table(read_corpus(name, data_dir / name, tuple(bundle.labels)), bundle.feature_config,
                       augmentation=False, progress=False)


@pytest.fixture(scope="module")
def chunks(table, bundle):
    """Two held-out chunks' samples (a male and a female speaker) and their labels."""
    from ser_core.training.waveform_adversarial import training_chunks
    held = bundle.held_out_speakers
    rows = np.array([np.flatnonzero(table.speakers == s)[0] for s in held[:2]])
    return torch.from_numpy(training_chunks(table, rows)), torch.from_numpy(table.labels[rows]).long()


def test_training_chunks_are_the_samples_behind_the_feature_rows(table, chunks, bundle):
    from ser_core.audio.features import log_mel
    x, _ = chunks
    held = bundle.held_out_speakers
    rows = np.array([np.flatnonzero(table.speakers == s)[0] for s in held[:2]])
    assert np.abs(log_mel(x.numpy(), bundle.feature_config) - table.features[rows]).max() < 1e-3


@pytest.mark.parametrize("method", ["pgd", "trades"])
def test_waveform_examples_stay_in_the_snr_ball_and_raise_the_loss(bundle, chunks, method):
    from ser_core.audio.frontend import LogMelFrontEnd
    from ser_core.training.waveform_adversarial import ball_radius, craft
    x, y = chunks
    model, frontend = bundle.torch_model(), LogMelFrontEnd.for_bundle(bundle)
    xa = craft(model, frontend, x, y, 30.0, 5, method, torch.Generator().manual_seed(0))
    delta = (xa - x).norm(dim=1)
    assert (delta <= ball_radius(x, 30.0)[:, 0] * (1 + 1e-4)).all() and (delta > 0).all()
    snr = 20 * torch.log10(x.norm(dim=1) / delta)
    assert (snr >= 30.0 - 1e-3).all()
    with torch.no_grad():
        clean, adv = model(frontend(x)), model(frontend(xa))
        if method == "pgd":
            assert F.cross_entropy(adv, y).item() > F.cross_entropy(clean, y).item()
        else:
            assert F.kl_div(F.log_softmax(adv, 1), torch.softmax(clean, 1), reduction="sum").item() > 1e-4


def test_a_defence_trains_on_the_recorded_training_speakers_only(bundle, table):
    from ser_core.training.adversarial import training_rows
    rows = training_rows(table, bundle.config, 1938)
    speakers = set(table.speakers[rows])
    assert speakers == set(bundle.config["split"]["speakers"]["train"])
    assert not speakers & set(bundle.held_out_speakers)
    assert len(rows) == bundle.config["split"]["rows"]["train"]


def test_frozen_layers_get_no_gradient_and_keep_their_batchnorm_statistics(bundle):
    import copy
    from ser_core.training.waveform_adversarial import freeze, parse_layers, train_mode
    model = copy.deepcopy(bundle.torch_model())
    trainable = freeze(model, parse_layers("dense"))
    assert {id(p) for p in trainable} == {id(p) for p in model.dense.parameters()}
    train_mode(model, parse_layers("dense"))
    assert model.dense.training and not model.cnn.training and not model.lstm.training
    with pytest.raises(ParameterError, match="layers"):
        parse_layers("cnn,conv9")


def test_the_recipe_refuses_what_a_domain_cannot_do():
    from ser_core.training.adversarial import DefenceConfig
    DefenceConfig(method="trades", domain="waveform").check()
    for bad in (dict(method="trades"), dict(method="fgsm", domain="waveform"), dict(domain="spectrum"),
                dict(domain="waveform", method="pgd", snr=0.0), dict(layers="")):
        with pytest.raises(ParameterError):
            DefenceConfig(**bad).check()


def test_the_rebuild_command_names_the_waveform_recipe():
    from ser_core.training.adversarial import DefenceConfig, defend_command
    d = dataclasses.asdict(DefenceConfig(method="trades", domain="waveform", snr=35.0, layers="cnn,dense",
                                         pgd_steps=10))
    cmd = defend_command(dict(d, method="trades-at", base="emodb", folder="models/emodb-trades"))
    assert cmd.startswith("python -m export defend --model emodb --method trades --domain waveform --snr 35")
    assert "--layers cnn,dense" in cmd and "--pgd-steps 10" in cmd and "--eps" not in cmd


@pytest.mark.slow  # trains (a few steps) and exports ONNX
def test_waveform_defence_writes_a_delta_bundle_that_serves(bundle, data_dir, tmp_path):
    from ser_core.models.bundle import ModelBundle
    from ser_core.training.adversarial import DefenceConfig, adversarial_train
    cfg = DefenceConfig(method="pgd", domain="waveform", snr=40.0, pgd_steps=2, layers="cnn,dense", epochs=1,
                        batch_size=8, max_steps=2, train_rows=16)
    out = tmp_path / "models-defended" / "emodb-pgd-wave"
    adversarial_train(bundle, out, cfg, data_dir, device="cpu", log=io.StringIO())
    d = ModelBundle.load(out)
    assert d.config["defence"]["domain"] == "waveform" and d.config["weights_from"]
    assert (out / "model.safetensors").stat().st_size < 100_000
    assert d.config["onnx_parity"]["same_decisions"]
    base, mine = bundle.torch_model().state_dict(), d.torch_model().state_dict()
    assert torch.equal(base["lstm.weight_hh_l0"], mine["lstm.weight_hh_l0"])  # frozen: read from the base
    assert not torch.equal(base["cnn.0.weight"], mine["cnn.0.weight"])  # trained
    y = (0.2 * np.sin(np.arange(32000) / 7.0) * np.hanning(32000)).astype(np.float32)
    p = d.predict_clip(y, 16000)
    assert abs(sum(p.probabilities.values()) - 1) < 1e-4
    card = (out / "README.md").read_text()
    assert "## Defence" in card and "waveform domain" in card and "smoke run" in card
    assert json.loads((out / "config.json").read_text())["defence"]["layers"] == "cnn,dense"


def test_a_study_recipe_recorded_before_the_waveform_fields_is_still_the_studys():
    from ser_core.training.adversarial import DefenceConfig, is_study_recipe
    old = {k: v for k, v in dataclasses.asdict(DefenceConfig()).items() if k not in ("domain", "snr", "beta", "layers")}
    assert is_study_recipe(dict(old, method="fgsm-at"))
    assert not is_study_recipe(dict(old, method="fgsm-at", domain="waveform"))
