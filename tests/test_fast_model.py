"""The gradient model (ser_core/models/fast.py) is the training model's function: the same logits
and input gradients within float rounding, on real chunks and on random models of every option."""
import pytest
import torch

from ser_core.models.cnn_lstm import CNNLSTM
from ser_core.models.fast import FastCNNLSTM


def logits_and_vjp(model, x, cotangent):
    """Logits of x and the input-gradient of <cotangent, logits> (any loss's gradient is one)."""
    xa = x.clone().requires_grad_(True)
    logits = model(xa)
    (grad,) = torch.autograd.grad((logits * cotangent).sum(), xa)
    return logits.detach(), grad


def training_order(model: CNNLSTM) -> CNNLSTM:
    """The reference: nn.LSTM, default memory order, eval mode (what training and ONNX run)."""
    import copy
    ref = copy.deepcopy(model).eval()
    ref.cnn.to(memory_format=torch.contiguous_format)
    ref.channels_last = ref.unroll_lstm = False
    return ref


def assert_same_function(ref, fast, x, seed=0):
    cot = torch.randn(len(x), ref.dense.out_features, generator=torch.Generator().manual_seed(seed))
    l0, g0 = logits_and_vjp(ref, x, cot)
    l1, g1 = logits_and_vjp(fast, x, cot)
    assert torch.allclose(l0, l1, atol=1e-4, rtol=0), float((l0 - l1).abs().max())
    # a max-pool window whose two largest values differ by rounding may route its gradient to the
    # other cell: compared by direction, by the share of equal cells and by the largest difference
    g0, g1 = g0.flatten(), g1.flatten()
    assert torch.nn.functional.cosine_similarity(g0, g1, dim=0) > 0.9999
    same = (g0 - g1).abs() <= 1e-4 * g0.abs().max()
    assert same.float().mean() > 0.999
    with torch.no_grad():
        assert torch.equal(fast(x).argmax(1), l1.argmax(1))  # the no-gradient path, chunked


def test_gradient_model_matches_the_training_model_on_real_chunks(bundle, test_examples):
    x = torch.from_numpy(test_examples[0][:20])  # 180 CNN blocks: more than one chunk of blocks
    fast = bundle.gradient_model()
    assert fast.folded, "every shipped model's BatchNorm scales are non-negative"
    assert_same_function(training_order(bundle.torch_model()), fast, x)
    # and the attack model of before (unrolled LSTM, channels-last CNN)
    assert_same_function(bundle.torch_model(), fast, x[:3], seed=1)


def test_no_gradient_path_gives_the_logits_of_the_gradient_path(bundle, test_examples):
    x = torch.from_numpy(test_examples[0][:8])
    fast = bundle.gradient_model()
    with torch.no_grad():
        plain = fast(x)
    assert torch.allclose(plain, fast(x.clone().requires_grad_(True)).detach(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("input_norm", ["none", "utterance", "global"])
def test_every_input_norm(input_norm):
    torch.manual_seed(2)
    m = CNNLSTM(n_classes=7, input_norm=input_norm).eval()
    with torch.no_grad():  # BatchNorm statistics as after training, scales positive
        bn = m.cnn[2]
        bn.running_mean.uniform_(0.0, 1.0)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    fast = FastCNNLSTM(m)
    assert fast.folded
    assert_same_function(training_order(m), fast, torch.randn(3, 261, 128))


def test_a_negative_batchnorm_scale_keeps_the_layer_unfolded():
    """a < 0 does not commute with the max-pool: the rewrite keeps BatchNorm where it is."""
    torch.manual_seed(3)
    m = CNNLSTM(n_classes=5).eval()
    with torch.no_grad():
        m.cnn[2].weight[3] = -0.7
        m.cnn[2].running_var.fill_(1.3)
    fast = FastCNNLSTM(m)
    assert not fast.folded
    assert_same_function(training_order(m), fast, torch.randn(2, 261, 128))


def test_attacks_differentiate_the_gradient_model(bundle):
    from ser_core.attacks import get_attack
    for name in ("fgsm", "apgd"):
        assert get_attack(name, bundle).model() is bundle.gradient_model()
    assert all(not t.requires_grad for t in bundle.gradient_model().buffers())
    assert list(bundle.gradient_model().parameters()) == []
