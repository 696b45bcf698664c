"""One call for every attack (ser_core/attacks/base.py): each registered attack, feature or
waveform, white- or black-box, is made by name and called as `attack(inputs, objective)`, returns
one AttackResult shape, declares one contract, and refuses a targeted objective it cannot meet in
one place."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ser_core.attacks import (AttackResult, FixedBudgetAttack, MinimisationAttack, Objective, attack_class,
                              get_attack, registry)
from ser_core.audio.decode import load_audio
from ser_core.errors import ParameterError

REPO_EXAMPLE = "examples/ravdess-happiness-actor01m.wav"
# a few steps each: the shape of the call and of the result is under test, not the attack's strength
CHEAP = {"fgsm": {"eps": 0.5}, "bim": {"max_iter": 2}, "deepfool": {"max_iter": 2}, "jsma": {"max_iter": 3},
         "cw_l2": {"binary_search_steps": 1, "max_iter": 2}, "cw_linf": {"max_iter": 2},
         "boundary": {"max_iter": 1, "init_size": 10, "num_trial": 1}, "pixel": {"max_iter": 1, "th": 1},
         "apgd": {"steps": 2, "snr_db": 30}, "pgd": {"steps": 2, "snr_db": 30}, "cw": {"steps": 2, "binary_steps": 1},
         "square": {"max_queries": 4, "snr_db": 30}}


@pytest.fixture(scope="module")
def inputs(bundle, test_examples):
    """Two feature examples and one short clip, by domain."""
    x, labels, _ = test_examples
    clip = load_audio(Path(__file__).resolve().parents[1] / REPO_EXAMPLE, 16_000)
    return {"features": (x[:2], labels[:2]), "waveform": ([clip], None)}


def test_every_registered_attack_has_cheap_settings_here():
    assert set(CHEAP) == set(registry())


def test_names_are_unique_across_domains_and_each_attack_has_one_contract():
    for name, cls in registry().items():
        assert attack_class(name) is cls
        assert issubclass(cls, FixedBudgetAttack) != issubclass(cls, MinimisationAttack), name
        assert cls.goal == ("fixed-budget" if issubclass(cls, FixedBudgetAttack) else "minimisation")


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_one_call_one_result_shape(bundle, inputs, name):
    attack = get_attack(name, bundle, **CHEAP[name])
    x, labels = inputs[attack.domain]
    r = attack(x)  # untargeted, away from the clean decisions
    assert isinstance(r, AttackResult) and r.domain == attack.domain and r.attack == name
    n = len(x)
    for field in (r.clean_pred, r.adv_pred, r.queries, r.flipped, r.success, r.mean_abs, r.l2, r.linf):
        assert np.shape(field) == (n,)
    assert r.clean_probs.shape == r.adv_probs.shape == (n, len(bundle.labels))
    assert np.array_equal(r.objective.labels, r.clean_pred)  # the clean decisions filled in
    assert np.array_equal(r.flipped, r.success) and np.array_equal(r.flipped, r.adv_pred != r.clean_pred)
    assert len(r.x_adv) == n and all(np.shape(a) == np.shape(b) for a, b in zip(r.x, r.x_adv))
    assert r.summary()["examples"] == n and r.summary()["targeted"] is False


@pytest.mark.parametrize("name", sorted(n for n, c in registry().items() if not c.targeted))
def test_a_targeted_objective_is_refused_where_the_attack_has_no_targeted_mode(bundle, inputs, name):
    attack = get_attack(name, bundle, **CHEAP[name])
    x, _ = inputs[attack.domain]
    with pytest.raises(ParameterError, match=f"{name} has no targeted mode"):
        attack(x, Objective(targets=np.zeros(len(x), np.int64)))


@pytest.mark.parametrize("name", ["fgsm", "apgd"])
def test_a_targeted_call_reports_success_as_reaching_the_target(bundle, inputs, name):
    attack = get_attack(name, bundle, **CHEAP[name])
    x, _ = inputs[attack.domain]
    clean = attack(x).clean_pred
    targets = (clean + 1) % len(bundle.labels)
    r = attack(x, Objective(targets=targets))
    assert r.targeted and np.array_equal(r.success, r.adv_pred == targets)
    assert np.array_equal(r.objective.labels, clean)


def test_objectives_are_checked_against_the_inputs_and_the_classes(bundle, inputs):
    x, _ = inputs["features"]
    attack = get_attack("fgsm", bundle)
    with pytest.raises(ParameterError, match="1 labels for 2 examples"):
        attack(x, np.array([0]))
    with pytest.raises(ParameterError, match="outside the model's"):
        attack(x, Objective(targets=np.array([0, len(bundle.labels)])))


def test_a_domain_given_must_be_the_attacks(bundle):
    assert get_attack("apgd", bundle, domain="waveform").domain == "waveform"
    with pytest.raises(ParameterError, match="apgd is a waveform attack, not a features one"):
        get_attack("apgd", bundle, domain="features")
    with pytest.raises(ParameterError, match="unknown attack 'nope'"):
        get_attack("nope", bundle)
