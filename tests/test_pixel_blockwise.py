"""Pixel scores a candidate through the model's ONNX graph in parts, re-running the CNN only on
the time blocks the candidate changed and the LSTM only from them (ser_core/attacks/features/
blockwise.py): the probabilities
are the whole graph's bit for bit, Pixel's outputs and query counts are unchanged, and a model
that normalises over the whole chunk (our speaker recipes) keeps the whole graph."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.attacks import get_attack
from ser_core.attacks.features.blockwise import BlockScorer


@pytest.fixture(scope="module")
def paper():
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load("emodb-paper")
    b.configure_onnx(threads=1)
    return b


def examples(bundle, n=2, seed=0):
    lo, hi = bundle.clip_range
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, 1, (n, *bundle.feature_config.input_shape)), lo, hi).astype(np.float32)


@pytest.mark.parametrize("name", ["emodb-paper", "emovo-paper", "ravdess-paper"])
def test_changed_blocks_give_the_whole_graphs_probabilities(name):
    """The CNN on changed blocks only and the LSTM's two directions resumed from the clean
    states at the first (forward) and last (backward) changed block: the whole graph's bit for bit."""
    from ser_core.models.bundle import ModelBundle
    paper = ModelBundle.load(name)
    paper.configure_onnx(threads=1)
    scorer = BlockScorer.for_bundle(paper)
    assert scorer is not None and scorer.n_blocks == 9 and scorer.lstm is not None
    x = examples(paper)
    rng = np.random.default_rng(1)
    owners = np.repeat([0, 1], 40)
    cand = x[owners].copy()
    for i in range(len(cand)):  # 0 to 12 cells changed: none, one block, many blocks
        k = i % 13
        cand[i, rng.integers(0, 261, k), rng.integers(0, 128, k)] = rng.uniform(*paper.clip_range, k)
    base = scorer.clean(x)
    assert np.array_equal(scorer(cand, owners, x, base), paper.predict_features(cand))


def test_a_model_normalising_the_whole_chunk_keeps_the_whole_graph():
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load("emodb")
    assert b.config["hyperparameters"].get("input_norm") == "global"
    assert BlockScorer.for_bundle(b) is None


@pytest.mark.parametrize("th", [1, 10])
def test_pixel_outputs_and_queries_do_not_depend_on_the_split(paper, th):
    x = examples(paper, seed=th)
    runs = []
    for blockwise in (False, True):
        attack = get_attack("pixel", paper, th=th, max_iter=1)
        attack.blockwise = blockwise
        runs.append(attack(x))
    whole, parts = runs
    assert np.array_equal(whole.x_adv, parts.x_adv) and np.array_equal(whole.adv_probs, parts.adv_probs)
    assert np.array_equal(whole.queries, parts.queries) and whole.queries.sum() > 0
    assert whole.extra == parts.extra
