"""The gradient model: an exact, faster rewrite of an eval-mode CNN-LSTM for the white-box attacks.

`FastCNNLSTM(m)` computes the same function as `m.eval()` (logits and input gradients equal up to
float rounding; tests/test_fast_model.py checks both against the training model on real chunks)
and is what `ModelBundle.gradient_model()` hands to every white-box attack of both domains.
Training, ONNX export and `state_dict` keep using `ModelBundle.torch_model()`. The rewrites:

  - BatchNorm (after conv1's ReLU, before the first max-pool) is an affine map a * y + b per
    channel; with a >= 0 it commutes with the max-pool, and the affine map then folds into
    conv2's weights and bias (conv2 has no padding, so the border sees no zeros). A model with a
    negative BatchNorm scale keeps the layer as it is (`folded` False), checked per model.
  - ReLU and max-pool commute (max(relu(y)) = relu(max(y)), both exact in float), so each ReLU
    runs after its pool, on 1/4 (conv1: 4x4 windows, stride 2, 25 x 124 -> 11 x 61), 1/2 or
    ~1/1 of the cells.
  - conv1 and its pool run CHUNK blocks at a time (`_Conv1Pool`): conv1's output (the largest
    activation, 16 x 25 x 124 a block) stays in cache and only the pool's argmax indices are
    kept for the backward; conv1 takes oneDNN's channels-last path, and its input-gradient (which
    oneDNN computes ~11x slower than the forward) is a depthwise convolution of the cotangent
    with the flipped kernels and a sum over channels (`_conv1_input_grad`). Without a gradient to build, the whole CNN runs in slices and the pool computes values
    only (`_max_pool_values`).
  - The LSTM's two directions' input weights are concatenated once, here, not at every call;
    the recurrence of both directions is one autograd function with its backward written out
    (`_Recurrence`), and its first step skips the product of zero states.
  - Every weight is a buffer (no parameter gradients are ever built).

Why: on one CPU core about 65 % of the training model's forward was memory-bound passes over
conv1's output (conv1, max-pool, BatchNorm, ReLU). benchmarks/fastpath_steps.py measures the
result against the model it replaced (reports/benchmarks/speed-fastpath.md)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ser_core.models.cnn_lstm import CNNLSTM


CHUNK = 16  # CNN blocks per slice of conv1 + pool: its 16 x 25 x 124 outputs stay in cache


class _Conv1Pool(torch.autograd.Function):
    """max_pool(conv1(x)) for one-channel blocks x (n, 1, h, w), CHUNK blocks at a time, so conv1's
    large output never leaves the cache and is never stored: backward keeps the pool's argmax
    indices only. conv1's output is channels-last (what oneDNN returns for channels-last blocks,
    the order in which torch's max-pool is vectorised, ~4x faster). Its input-gradient is a
    depthwise convolution and a channel sum (`_conv1_input_grad`), not oneDNN's backward-data
    convolution (~11x slower than its forward)."""

    @staticmethod
    def forward(ctx, x, weight, bias, w_flip, kernel, stride):
        n, _, h, w = x.shape
        kh, kw = weight.shape[-2:]
        c = weight.shape[0]
        ph, pw = (h - kh + 1 - kernel) // stride + 1, (w - kw + 1 - kernel) // stride + 1
        cl = dict(memory_format=torch.channels_last, device=x.device)
        out = torch.empty((n, c, ph, pw), dtype=x.dtype, **cl)
        idx = torch.empty((n, c, ph, pw) if ctx.needs_input_grad[0] else (0, 0, 0, 0), dtype=torch.int64, **cl)
        pool = [[kernel] * 2, [stride] * 2, [0, 0], [1, 1], False]
        grad = ctx.needs_input_grad[0]
        for i in range(0, n, CHUNK):
            y = _conv1(x[i:i + CHUNK], weight, bias)
            if grad:
                torch.ops.aten.max_pool2d_with_indices.out(y, *pool, out=out[i:i + CHUNK], indices=idx[i:i + CHUNK])
            else:
                out[i:i + CHUNK] = _max_pool_values(y, kernel, stride)
        ctx.geometry = (n, h, w, kh, kw, pool)
        if grad:
            ctx.save_for_backward(idx, w_flip)
        return out

    @staticmethod
    def backward(ctx, grad):
        idx, w_flip = ctx.saved_tensors
        n, h, w, kh, kw, pool = ctx.geometry
        c = grad.shape[1]
        grad = grad.contiguous(memory_format=torch.channels_last)
        out = grad.new_empty(n, h, w)
        # one buffer for every slice's conv1 cotangent (fresh ones cost page faults on each
        # zeroing), and the pool's input stand-in, of which its backward reads shape and order only
        spec = dict(dtype=grad.dtype, device=grad.device, memory_format=torch.channels_last)
        gy_all = torch.empty((min(n, CHUNK), c, h - kh + 1, w - kw + 1), **spec)
        like_all = torch.empty_like(gy_all)
        for i in range(0, n, CHUNK):
            g = grad[i:i + CHUNK]
            gy, like = gy_all[:len(g)], like_all[:len(g)]
            torch.ops.aten.max_pool2d_with_indices_backward.grad_input(g, like, *pool, idx[i:i + CHUNK], grad_input=gy)
            _conv1_input_grad(gy, w_flip, kh, kw, out=out[i:i + CHUNK])
        return out[:, None], None, None, None, None, None


def _conv1(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """conv1 on one-channel blocks, its output channels-last (a no-op where oneDNN returns that)."""
    return F.conv2d(x, weight, bias).contiguous(memory_format=torch.channels_last)


def _max_pool_values(y: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """max_pool2d's values (no argmax, for passes without a gradient): a window of 2 * stride is
    the maximum of two neighbouring blocks of stride x stride, so one non-overlapping block max
    and one max of neighbours, elementwise over channels-last memory (~2x torch's kernel)."""
    if kernel != 2 * stride:
        return F.max_pool2d(y, kernel, stride)
    oh, ow = (y.shape[2] - kernel) // stride + 1, (y.shape[3] - kernel) // stride + 1
    s = stride
    a = y[:, :, :s * (oh + 1), :s * (ow + 1)]
    r = a[:, :, 0::s]
    for k in range(1, s):
        r = torch.maximum(r, a[:, :, k::s])  # block maxima over rows: (n, c, oh + 1, ...)
    r = torch.maximum(r[:, :, :-1], r[:, :, 1:])
    q = r[..., 0::s]
    for k in range(1, s):
        q = torch.maximum(q, r[..., k::s])
    return torch.maximum(q[..., :-1], q[..., 1:])


def _conv1_input_grad(gy: torch.Tensor, w_flip: torch.Tensor, kh: int, kw: int, out=None) -> torch.Tensor:
    """Input-gradient of the one-channel conv1 from its channels-last output cotangent gy
    (m, c, oh, ow): a depthwise (groups = c) full convolution of each channel with its own
    flipped kernel, then the sum over channels (a product with a vector of ones over the
    channels-last memory, ~0.75x the time of torch.sum). oneDNN vectorises the depthwise
    convolution over the 16 channels (one AVX-512 register); its backward-data convolution of the
    one-channel layer is ~11x slower than the forward, and a tile-matrix product with shifted adds
    (the previous way) ~1.8x slower than this. out: (m, h, w) to write into."""
    per_channel = F.conv2d(gy, w_flip, padding=(kh - 1, kw - 1), groups=gy.shape[1])
    return torch.matmul(per_channel.permute(0, 2, 3, 1), gy.new_ones(gy.shape[1]), out=out)


class _Recurrence(torch.autograd.Function):
    """The LSTM recurrence of both directions at once, gate order i, f, g, o, from zero states:
    gates (steps, 2, b, 4H) of the inputs, w_hh (2, H, 4H) -> the last hidden states (2, b, H).
    c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c'). Backward is written out
    (backpropagation through time to the input gates only), a few fused tensor operations a
    step instead of autograd's graph of ~20 nodes a step: at small batches those dominate."""

    @staticmethod
    def forward(ctx, gates, w_hh):
        steps = gates.shape[0]
        hid = w_hh.shape[1]
        h = c = None
        acts, cells = [], []
        for t in range(steps):
            a = gates[t] if h is None else torch.baddbmm(gates[t], h, w_hh)
            a = a.clone() if h is None else a
            a[..., :2 * hid].sigmoid_()
            a[..., 2 * hid:3 * hid].tanh_()
            a[..., 3 * hid:].sigmoid_()
            i, f, g, o = a.split(hid, dim=2)
            c = i * g if c is None else torch.addcmul(i * g, f, c)
            h = o * torch.tanh(c)
            acts.append(a)
            cells.append(c)
        ctx.save_for_backward(torch.stack(acts), torch.stack(cells), w_hh)
        return h

    @staticmethod
    def backward(ctx, dh):
        acts, cells, w_hh = ctx.saved_tensors
        steps, hid = acts.shape[0], w_hh.shape[1]
        w_t = w_hh.transpose(1, 2)  # (2, 4H, H)
        # every step's local derivatives at once (a few operations over all steps, not ~20 a
        # step): the gate cotangents are dc * fac[:3] (i, f, g) and dh * fac[3] (o), and
        # dc gains dh * fo at each step
        i, f, g, o = acts.split(hid, dim=3)
        tc = torch.tanh(cells)
        fac = torch.empty_like(acts)
        fi, ff, fg, fo_gate = fac.split(hid, dim=3)
        torch.mul(g, i * (1 - i), out=fi)
        ff[0].zero_()  # the first step's cell state is zero: no gradient to its forget gate
        torch.mul(cells[:-1], f[1:] * (1 - f[1:]), out=ff[1:])
        torch.mul(i, 1 - g * g, out=fg)
        torch.mul(tc, o * (1 - o), out=fo_gate)
        fo = o * (1 - tc * tc)
        fac3 = fac[..., :3 * hid].unflatten(-1, (3, hid))
        d_gates = torch.empty_like(acts)
        d3 = d_gates[..., :3 * hid].unflatten(-1, (3, hid))
        dc = None
        for t in range(steps - 1, -1, -1):
            dc = dh * fo[t] if dc is None else torch.addcmul(dc, dh, fo[t])
            torch.mul(fac3[t], dc[:, :, None], out=d3[t])
            torch.mul(fo_gate[t], dh, out=d_gates[t, ..., 3 * hid:])
            if t > 0:
                dh = torch.bmm(d_gates[t], w_t)
                dc = dc * f[t]
        return d_gates, None


class FastCNNLSTM(nn.Module):
    """The eval-mode CNN-LSTM rewritten for fast input gradients (see the module docstring):
    x (batch, 261, 128) standardised log-Mel -> (batch, n_classes) logits."""

    def __init__(self, model: CNNLSTM):
        super().__init__()
        conv1, _, bn, pool1, conv2, _, pool2, conv3, _, pool3, _ = model.cnn
        self.input_norm = model.input_norm
        self.n_blocks, self.block_frames = model.n_blocks, model.block_frames
        self.pools = [(p.kernel_size, p.stride) for p in (pool1, pool2, pool3)]
        f32 = dict(dtype=torch.float32)
        with torch.no_grad():
            w1 = conv1.weight.detach().to(**f32)
            self.register_buffer("w1", w1.contiguous(memory_format=torch.channels_last))
            self.register_buffer("b1", conv1.bias.detach().to(**f32).clone())
            # conv1's kernels flipped, one per channel: its input-gradient (_conv1_input_grad)
            self.register_buffer("w1_flip", w1.flip(-1, -2).contiguous(memory_format=torch.channels_last))
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            self.folded = bool((scale >= 0).all())
            w2, b2 = conv2.weight.detach().to(**f32), conv2.bias.detach().to(**f32)
            if self.folded:
                b2 = b2 + (w2 * shift[None, :, None, None]).sum((1, 2, 3))
                w2 = w2 * scale[None, :, None, None]
            self.register_buffer("bn_scale", scale.reshape(1, -1, 1, 1).clone())
            self.register_buffer("bn_shift", shift.reshape(1, -1, 1, 1).clone())
            self.register_buffer("w2", w2.contiguous(memory_format=torch.channels_last))
            self.register_buffer("b2", b2.clone())
            self.register_buffer("w3", conv3.weight.detach().to(**f32).contiguous(memory_format=torch.channels_last))
            self.register_buffer("b3", conv3.bias.detach().to(**f32).clone())
            lstm = model.lstm
            self.hidden = lstm.hidden_size
            self.register_buffer("w_ih", torch.cat([lstm.weight_ih_l0, lstm.weight_ih_l0_reverse]).detach().clone())
            self.register_buffer("b_ih", torch.cat([lstm.bias_ih_l0 + lstm.bias_hh_l0,
                                                    lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse]).detach().clone())
            self.register_buffer("w_hh", torch.stack([lstm.weight_hh_l0, lstm.weight_hh_l0_reverse])
                                 .transpose(1, 2).detach().contiguous())  # (2, H, 4H)
            self.register_buffer("w_out", model.dense.weight.detach().clone())
            self.register_buffer("b_out", model.dense.bias.detach().clone())
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.w1.device

    def cnn(self, blocks: torch.Tensor) -> torch.Tensor:
        """(n, 1, 29, 128) blocks -> (n, 1664) features, as model.cnn in eval mode. Without a
        gradient to build, CHUNK blocks at a time so every activation stays in cache; with one,
        conv2 and conv3 take the whole batch (their oneDNN backward is slower in slices)."""
        blocks = blocks.contiguous(memory_format=torch.channels_last)
        if torch.is_grad_enabled() and blocks.requires_grad:
            return self._cnn(blocks)
        with torch.no_grad():
            return torch.cat([self._cnn(blocks[i:i + CHUNK]) for i in range(0, len(blocks), CHUNK)])

    def _cnn(self, blocks: torch.Tensor) -> torch.Tensor:
        (k1, s1), (k2, s2), (k3, s3) = self.pools
        if self.folded and not (torch.is_grad_enabled() and blocks.requires_grad):  # a slice, no gradient
            z = F.relu(_max_pool_values(_conv1(blocks, self.w1, self.b1), k1, s1))
        elif self.folded:  # conv1 and its pool CHUNK blocks at a time (_Conv1Pool)
            z = F.relu(_Conv1Pool.apply(blocks, self.w1, self.b1, self.w1_flip, k1, s1))
        else:  # a negative BatchNorm scale does not commute with the max-pool: the layers as they are
            z = F.relu(F.conv2d(blocks, self.w1, self.b1)) * self.bn_scale + self.bn_shift
            z = F.max_pool2d(z, k1, s1)
        z = F.relu(F.max_pool2d(F.conv2d(z, self.w2, self.b2), k2, s2))
        z = F.relu(F.max_pool2d(F.conv2d(z, self.w3, self.b3), k3, s3))
        return z.contiguous().flatten(1)  # channel-major flatten, as nn.Flatten on NCHW

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm == "utterance":
            x = x - x.mean(dim=1, keepdim=True)
        elif self.input_norm == "global":
            x = x - x.mean(dim=(1, 2), keepdim=True)
        b = x.shape[0]
        z = self.cnn(x.reshape(b * self.n_blocks, 1, self.block_frames, x.shape[-1]))
        z = z.reshape(b, self.n_blocks, -1)
        h_fwd, h_bwd = self._bilstm(z)
        return F.linear(torch.cat([h_fwd, h_bwd], dim=1), self.w_out, self.b_out)

    def _bilstm(self, z: torch.Tensor):
        """Last hidden state of each direction (cnn_lstm.bilstm_last_states, weights cached)."""
        b, steps, _ = z.shape
        gates_in = F.linear(z, self.w_ih, self.b_ih).reshape(b, steps, 2, -1)
        # (steps, 2, b, 4H): the forward direction reads step t, the backward one step steps-1-t
        g = torch.stack([gates_in[:, :, 0], gates_in[:, :, 1].flip(1)]).transpose(0, 2)
        h = _Recurrence.apply(g.transpose(1, 2).contiguous(), self.w_hh)
        return h[0], h[1]

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=1)
