"""The study's CNN-LSTM: parameter count, shapes, and what it refuses."""
import pytest
import torch

from ser_core.model import CNNLSTM, keras_parameter_count


def test_parameter_count_equals_the_study():
    assert keras_parameter_count(CNNLSTM()) == 3_960_389


def test_logits_shape_and_any_number_of_classes():
    m = CNNLSTM(n_classes=7).eval()
    with torch.no_grad():
        out = m.probabilities(torch.randn(3, 261, 128))
    assert out.shape == (3, 7) and torch.allclose(out.sum(1), torch.ones(3))


def test_input_must_split_into_nine_blocks():
    with pytest.raises(ValueError, match="9 equal blocks"):
        CNNLSTM(input_shape=(260, 128))
