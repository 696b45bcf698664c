"""Black-box attacks (Pixel, Boundary): they lower accuracy, use only ONNX Runtime queries,
count those queries exactly, and check their parameters."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.attacks import get_attack, registry
from ser_core.models.bundle import ModelBundle
from ser_core.errors import ParameterError
from tests.helpers import slow_cases


@pytest.fixture()
def blackbox_bundle(bundle, monkeypatch):
    """A fresh bundle of the same model whose torch model cannot be loaded, with every row
    scored by predict_features counted."""
    fresh = ModelBundle.from_folder(bundle.folder)

    def no_torch():
        raise AssertionError("a black-box attack asked for the torch model")

    monkeypatch.setattr(fresh, "torch_model", no_torch)
    scored = {"rows": 0}
    predict = fresh.predict_features

    def counting(x):
        scored["rows"] += len(x)
        return predict(x)

    monkeypatch.setattr(fresh, "predict_features", counting)
    fresh.scored = scored
    return fresh


def correct_low_margin(bundle, x, labels, k):
    """The k correctly classified examples closest to the decision boundary."""
    p = bundle.predict_features(x)
    top2 = np.sort(p, 1)[:, -2:]
    margin = np.where(p.argmax(1) == labels, top2[:, 1] - top2[:, 0], np.inf)
    idx = np.argsort(margin)[:k]
    assert np.isfinite(margin[idx]).all(), "too few correctly classified test examples"
    return idx


@pytest.mark.parametrize("name, params, k", slow_cases([
    ("pixel", {"th": 10, "max_iter": 1}, 3),
    ("boundary", {"max_iter": 5}, 8),
], "pixel"))
def test_blackbox_attack_lowers_accuracy_with_onnx_queries_only(blackbox_bundle, test_examples, name, params, k):
    x, labels, _ = test_examples
    idx = correct_low_margin(blackbox_bundle, x, labels, k)
    blackbox_bundle.scored["rows"] = 0
    r = get_attack(name, blackbox_bundle, **params)(x[idx], labels[idx])  # untargeted, away from the labels
    assert registry()[name].kind == "black-box"
    assert blackbox_bundle._torch is None
    clean_acc = (r.clean_pred == labels[idx]).mean()
    adv_acc = (r.adv_pred == labels[idx]).mean()
    assert clean_acc == 1.0 and adv_acc < clean_acc
    # every scored row is counted, except the base class's clean and final scoring of x and x_adv
    assert r.queries.sum() == blackbox_bundle.scored["rows"] - 2 * len(idx)
    assert (r.queries > 0).all()
    assert r.x_adv.min() >= blackbox_bundle.clip_range[0] and r.x_adv.max() <= blackbox_bundle.clip_range[1]
    if name == "pixel":
        assert (r.changed_cells <= params["th"]).all()
        assert (r.changed_cells[~r.flipped] == 0).all()  # as ART: an unflipped example comes back as is
    else:
        # a minimisation attack walks only from adversarial starts; an example for which no
        # uniform-noise draw was adversarial (a model that hears all noise as its class) comes
        # back unchanged, as in ART
        started = np.array(r.extra["started"])
        assert r.flipped[started].all() and started.mean() >= 0.75
        assert (r.x_adv[~started] == x[idx][~started]).all()


def test_boundary_binary_searched_start_is_closer(bundle, test_examples):
    x, _, _ = test_examples
    x = x[:6]
    plain = get_attack("boundary", bundle, max_iter=0, init_steps=0)(x)
    searched = get_attack("boundary", bundle, max_iter=0, init_steps=8)(x)
    started = np.array(plain.extra["started"])
    assert started.sum() >= 4 and started.tolist() == searched.extra["started"]
    assert plain.flipped[started].all() and searched.flipped[started].all()
    assert (searched.l2[started] < plain.l2[started]).all()


@pytest.mark.slow
def test_pixel_is_seeded(bundle, test_examples):
    x, _, _ = test_examples
    a = get_attack("pixel", bundle, th=1, max_iter=0, seed=3)(x[:2])
    b = get_attack("pixel", bundle, th=1, max_iter=0, seed=3)(x[:2])
    np.testing.assert_array_equal(a.x_adv, b.x_adv)
    assert (a.queries == 399).all()  # ART's population for th 1: 133 members x 3 genes, scored once


@pytest.mark.slow
def test_pixel_evolution_is_seeded_not_only_its_start(bundle, test_examples):
    """After several generations the same seed gives the same population's best, another seed
    another; every generation scores the whole population (399 queries for th 1) until a flip."""
    x, _, _ = test_examples
    runs = [get_attack("pixel", bundle, th=1, max_iter=2, seed=s)(x[:1]) for s in (3, 3, 4)]
    same, again, other = (r.extra["best_true_class_probability"] for r in runs)
    assert same == again and same != other
    np.testing.assert_array_equal(runs[0].x_adv, runs[1].x_adv)
    assert not any(r.flipped[0] for r in runs)  # so no run stopped early:
    assert all(r.queries[0] == 399 * 3 for r in runs)  # the start and two generations


@pytest.mark.parametrize("name, params", [
    ("pixel", {"th": 0}),
    ("pixel", {"max_iter": -1}),
    ("pixel", {"population": 10}),
    ("boundary", {"step_adapt": 1.5}),
    ("boundary", {"delta": 0.0}),
    ("boundary", {"sample_size": "many"}),
])
def test_invalid_parameters_raise(bundle, name, params):
    with pytest.raises(ParameterError, match=name):
        get_attack(name, bundle, **params)
