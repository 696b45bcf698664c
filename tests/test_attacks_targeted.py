"""Targeted mode of the feature attacks: every attack that declares one lands real test-speaker
examples on a chosen target, reports success as "decided as the target", and is unchanged
untargeted whether the objective is passed as `Objective()` or left out; an attack without one
(DeepFool) refuses a target by name."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.attacks import Objective, get_attack, registry
from ser_core.errors import ParameterError
from tests.helpers import slow_cases

TARGETED = sorted(n for n, c in registry("features").items() if c.targeted)
UNTARGETED_ONLY = sorted(n for n, c in registry("features").items() if not c.targeted)
K = 4  # examples attacked per targeted run: those nearest their runner-up class
# easy settings: enough iterations to reach the runner-up class, few enough for seconds (C&W L2
# starts its c where the study's schedule first flips EmoDB examples, see test_attacks_whitebox)
EASY = {"fgsm": {"eps": 1.0}, "bim": {"max_iter": 10}, "cw_linf": {"max_iter": 5},
        "cw_l2": {"initial_const": 5.0, "binary_search_steps": 1, "max_iter": 5},
        "jsma": {"max_iter": 20}, "boundary": {"max_iter": 5}, "pixel": {"th": 10, "max_iter": 1}}
# the untargeted comparison holds at any setting: the cheapest that still runs each loop
CHEAP = {**EASY, "cw_l2": {"binary_search_steps": 1, "max_iter": 2}, "cw_linf": {"max_iter": 2},
         "jsma": {"max_iter": 5}, "bim": {"max_iter": 5}, "pixel": {"th": 10, "max_iter": 0},
         "boundary": {"max_iter": 3, "init_size": 20}}
SLOW = ("pixel",)  # its population of 400 a generation: the slowest case, outside the fast lane


def nearest_runner_up(bundle, x, k):
    """The k examples whose runner-up class is closest to their decision, and that class."""
    p = bundle.predict_features(x)
    top2 = np.sort(p, 1)[:, -2:]
    idx = np.argsort(top2[:, 1] - top2[:, 0])[:k]
    return idx, np.argsort(p[idx], 1)[:, -2]


def test_every_feature_attack_but_deepfool_has_a_targeted_mode():
    assert UNTARGETED_ONLY == ["deepfool"]
    assert {"fgsm", "bim", "cw_l2", "cw_linf", "jsma", "boundary", "pixel"} <= set(TARGETED)


@pytest.mark.parametrize("name", slow_cases(TARGETED, *SLOW))
def test_targeted_attack_reaches_the_runner_up_class(bundle, test_examples, name):
    x = test_examples[0]
    idx, targets = nearest_runner_up(bundle, x, K)
    clean = bundle.predict_features(x[idx]).argmax(1)
    assert np.all(targets != clean)
    r = get_attack(name, bundle, **EASY.get(name, {}))(x[idx], Objective(targets=targets))
    assert r.targeted and np.array_equal(r.objective.targets, targets)
    assert np.array_equal(r.labels, clean)  # labels filled in with the clean decisions
    assert np.array_equal(r.success, r.adv_pred == targets)
    assert r.success.any(), f"{name} reached the target on none of {K} examples"
    assert np.all(r.flipped[r.success])  # every target differs from the clean decision
    lo, hi = bundle.clip_range
    assert np.all(r.x_adv >= lo - 1e-5) and np.all(r.x_adv <= hi + 1e-5)
    assert np.all(r.queries > 0)


@pytest.mark.parametrize("name", slow_cases(TARGETED, *SLOW))
def test_untargeted_call_is_the_same_with_an_explicit_empty_objective(bundle, test_examples, name):
    x = test_examples[0][:2]
    attack = get_attack(name, bundle, **CHEAP.get(name, {}))
    a, b = attack(x), attack(x, Objective())
    assert not a.targeted and not b.targeted
    assert np.array_equal(a.x_adv, b.x_adv) and np.array_equal(a.queries, b.queries)
    assert np.array_equal(a.success, a.flipped)
    assert a.extra.keys() == b.extra.keys()
    for k in a.extra:
        assert np.array_equal(np.asarray(a.extra[k]), np.asarray(b.extra[k])), k


@pytest.mark.parametrize("name", UNTARGETED_ONLY)
def test_attack_without_a_targeted_mode_refuses_a_target(bundle, test_examples, name):
    x = test_examples[0][:2]
    with pytest.raises(ParameterError, match=f"{name} has no targeted mode"):
        get_attack(name, bundle)(x, Objective(targets=np.zeros(len(x), np.int64)))
