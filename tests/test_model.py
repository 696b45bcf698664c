"""The study's CNN-LSTM: parameter count, shapes, and what it refuses."""
import pytest
import torch

from ser_core.models.cnn_lstm import CNNLSTM, keras_parameter_count


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


def test_unrolled_lstm_matches_torch_lstm_in_logits_and_input_gradients():
    """The attacks' unrolled LSTM is the same function as nn.LSTM (what training and ONNX use)."""
    torch.manual_seed(0)
    m = CNNLSTM(n_classes=5).eval()
    x = torch.randn(3, 261, 128)
    out = {}
    for unrolled in (False, True):
        m.unroll_lstm = unrolled
        xa = x.clone().requires_grad_(True)
        logits = m(xa)
        (grad,) = torch.autograd.grad(logits[:, 1].sum() - logits[:, 3].sum(), xa)
        out[unrolled] = (logits.detach(), grad)
    assert torch.allclose(out[False][0], out[True][0], atol=1e-5, rtol=0)
    assert torch.allclose(out[False][1], out[True][1], atol=1e-5 * float(out[False][1].abs().max()), rtol=0)


def test_channels_last_cnn_is_the_same_function():
    """The attacks' channels-last CNN gives the logits and input gradients of the default order.
    A max-pool window whose two largest values differ by float rounding may route its gradient
    to the other cell, so gradients are compared by direction and by the share of equal cells."""
    torch.manual_seed(1)
    m = CNNLSTM(n_classes=7).eval()
    x = torch.randn(4, 261, 128)
    out = {}
    for cl in (False, True):
        if cl:
            m.use_channels_last()
        xa = x.clone().requires_grad_(True)
        logits = m(xa)
        (grad,) = torch.autograd.grad(logits[:, 2].sum() - logits[:, 5].sum(), xa)
        out[cl] = (logits.detach(), grad)
    assert m.channels_last and m.cnn[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out[False][0], out[True][0], atol=1e-5, rtol=0)
    g0, g1 = out[False][1].flatten(), out[True][1].flatten()
    assert torch.nn.functional.cosine_similarity(g0, g1, dim=0) > 0.9999
    same = (g0 - g1).abs() <= 1e-5 * g0.abs().max()
    assert same.float().mean() > 0.999


def test_bundle_model_for_gradients_is_unrolled_and_onnx_export_is_not(bundle, tmp_path):
    """The shipped bundle hands attacks the unrolled LSTM and the channels-last CNN; its ONNX
    graph still holds an LSTM op."""
    import onnx
    from ser_core.models.onnx_export import export_onnx
    m = bundle.torch_model()
    assert m.unroll_lstm is True and m.channels_last is True
    path = export_onnx(m, tmp_path / "m.onnx", bundle.feature_config.input_shape)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "LSTM" in ops and m.unroll_lstm is True
