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


def attack_on(bundle, name, params, x, reference: bool, monkeypatch=None):
    """One attack call on the gradient model, or on the model it replaced (bundle.torch_model())."""
    from ser_core.attacks import get_attack
    if not reference:
        return get_attack(name, bundle, **params)(x)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bundle, "gradient_model", bundle.torch_model)
        return get_attack(name, bundle, **params)(x)


def assert_same_outputs(a, b, equal_share: float):
    """Same decisions on the serving path; the adversarial inputs equal but for the cells where
    float rounding of a near-zero gradient (FGSM/BIM: its sign) or a near tie decided otherwise."""
    assert (a.adv_pred == b.adv_pred).all()
    assert (a.x_adv == b.x_adv).mean() >= equal_share


def test_fgsm_outputs_unchanged_by_the_gradient_model(bundle, test_examples):
    x = test_examples[0][:8]
    assert_same_outputs(attack_on(bundle, "fgsm", {"eps": 0.5}, x, True),
                        attack_on(bundle, "fgsm", {"eps": 0.5}, x, False), 0.999)


@pytest.mark.slow
@pytest.mark.parametrize("name,params,n,share", [
    ("deepfool", {"max_iter": 5, "range_scaled_step": True}, 8, 0.0),
    ("jsma", {"theta": 1.0, "gamma": 1.0}, 2, 0.999),
    ("cw_l2", {"max_iter": 5, "binary_search_steps": 3}, 2, 0.0),
])
def test_white_box_outputs_unchanged_by_the_gradient_model(bundle, test_examples, name, params, n, share):
    """The same decisions; DeepFool's and C&W's continuous steps move every cell by rounding, so
    there the perturbation sizes are compared instead (relative 1e-3)."""
    x = test_examples[0][:n]
    a = attack_on(bundle, name, params, x, True)
    b = attack_on(bundle, name, params, x, False)
    assert_same_outputs(a, b, share)
    assert abs(a.l2.mean() - b.l2.mean()) <= 1e-3 * max(a.l2.mean(), 1e-6)


@pytest.mark.slow
def test_bim_figures_unchanged_by_the_gradient_model(bundle, test_examples):
    """BIM's signed steps are not continuous in the gradient: where rounding flips the sign of a
    near-zero gradient cell, the next iterate differs, and over many steps the trajectories part
    (the adversarial class of an example may differ). What the study reports stays: which
    examples flip, and the mean perturbation (within 2 %)."""
    x = test_examples[0][:8]
    params = {"eps": 0.25, "eps_step": 0.1, "max_iter": 20, "early_stop": False}
    a = attack_on(bundle, "bim", params, x, True)
    b = attack_on(bundle, "bim", params, x, False)
    assert (a.flipped == b.flipped).all()
    assert abs(a.mean_abs.mean() - b.mean_abs.mean()) <= 0.02 * a.mean_abs.mean()


def test_deepfool_published_variant_overshoots_every_step(bundle, test_examples):
    """The overshoot at every step (the authors' and torchattacks' DeepFool) flips in fewer
    steps than the study's variant, and at least as many examples."""
    from ser_core.attacks import get_attack
    x = test_examples[0][:4]
    study = get_attack("deepfool", bundle, max_iter=50, overshoot=0.02, nb_grads=10)(x)
    published = get_attack("deepfool", bundle, max_iter=50, overshoot=0.02, nb_grads=10,
                           overshoot_each_step=True)(x)
    assert published.flipped.sum() >= study.flipped.sum()
    assert published.extra["steps"].sum() < study.extra["steps"].sum()


def test_clean_inputs_are_scored_once_across_calls(bundle, test_examples, monkeypatch):
    from ser_core.attacks import get_attack
    x = test_examples[0][:3].copy()
    x[0, 0, 0] += 1e-3  # an input no other test has scored
    calls = []
    real = bundle.predict_features
    monkeypatch.setattr(bundle, "predict_features", lambda a: calls.append(len(a)) or real(a))
    first = get_attack("fgsm", bundle, eps=0.25)(x)
    second = get_attack("fgsm", bundle, eps=0.5)(x)
    assert calls == [3, 3, 3]  # clean once, then each call's adversarial inputs
    assert (first.clean_pred == second.clean_pred).all()
    x[1, 0, 0] += 1e-3
    get_attack("fgsm", bundle, eps=0.25)(x)
    assert calls[3:] == [3, 3]  # other inputs: scored again


def test_conv1_input_gradient_is_the_transposed_convolution():
    """The depthwise convolution with flipped kernels and the channel sum (fast._conv1_input_grad)
    equal torch's input-gradient of the one-channel conv1 within float rounding."""
    from ser_core.models.fast import _conv1_input_grad
    g = torch.Generator().manual_seed(4)
    w = torch.randn(16, 1, 5, 5, generator=g)
    gy = torch.randn(3, 16, 25, 124, generator=g).contiguous(memory_format=torch.channels_last)
    ref = torch.nn.grad.conv2d_input((3, 1, 29, 128), w.double(), gy.double().contiguous())[:, 0]
    got = _conv1_input_grad(gy, w.flip(-1, -2).contiguous(memory_format=torch.channels_last), 5, 5)
    assert got.shape == ref.shape
    assert float((got.double() - ref).abs().max()) <= 1e-5 * float(ref.abs().max())


def test_bim_iterates_follow_the_art_recurrence(bundle, test_examples):
    """The study's BIM (no early stop) is x_{t+1} = x + clamp(clip(x_t + step sign(grad)) - x,
    -eps, eps) on the gradient model, bit for bit, query counts one per step (the iterate is
    stepped as a whole tensor while every example iterates)."""
    import torch.nn.functional as F
    from ser_core.attacks import get_attack
    x = test_examples[0][:3]
    eps, step, iters = 0.25, 0.1, 4
    res = get_attack("bim", bundle, eps=eps, eps_step=step, max_iter=iters, early_stop=False)(x)
    model, lo, hi = bundle.gradient_model(), *map(float, bundle.clip_range)
    x0 = torch.from_numpy(x)
    y = torch.from_numpy(res.clean_pred.astype("int64"))
    xt = x0.clone()
    for _ in range(iters):
        xa = xt.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(xa), y, reduction="sum"), xa)
        with torch.no_grad():
            xt = x0 + ((xa + step * grad.sign()).clamp(lo, hi) - x0).clamp(-eps, eps)
    assert (res.x_adv == xt.numpy()).all()
    assert (res.queries == iters).all()
