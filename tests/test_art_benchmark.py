"""The ART comparison differentiates the same deterministic function as our attacks.

ART runs a model that holds an LSTM in training mode for its gradients; the benchmark's wrapper
must keep the CNN-LSTM in evaluation mode there, or the LSTM-input dropout makes ART's
gradients random (which once made ART look several times slower than it is)."""
import sys

import numpy as np
import pytest
import torch

from tests.conftest import REPO

art = pytest.importorskip("art")
sys.path.insert(0, str(REPO / "benchmarks"))
import art_compare  # noqa: E402


def test_art_gradients_are_deterministic_and_equal_ours(bundle):
    from art.estimators.classification import PyTorchClassifier
    clf = PyTorchClassifier(model=art_compare._ForART(bundle.torch_model()), loss=torch.nn.CrossEntropyLoss(),
                            input_shape=tuple(bundle.feature_config.input_shape), nb_classes=len(bundle.labels),
                            clip_values=tuple(map(float, bundle.clip_range)), device_type="cpu")
    x = np.random.default_rng(0).standard_normal((2, *bundle.feature_config.input_shape)).astype(np.float32)
    g1 = clf.class_gradient(x, label=1)[:, 0]
    g2 = clf.class_gradient(x, label=1)[:, 0]
    np.testing.assert_array_equal(g1, g2)
    model = bundle.torch_model()
    xa = torch.from_numpy(x).requires_grad_(True)
    (ours,) = torch.autograd.grad(model(xa)[:, 1].sum(), xa)
    assert model.training is False
    np.testing.assert_allclose(g1, ours.numpy(), atol=1e-5 * float(np.abs(g1).max()))
