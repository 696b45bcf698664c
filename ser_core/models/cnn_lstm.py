"""Standardised features -> class logits: the study's CNN-LSTM (PAPER.md "Model").

The 261 x 128 input is cut along time into 9 blocks of 29 frames; one CNN (shared weights, as
Keras TimeDistributed) maps each block to 1664 values; dropout; a bidirectional LSTM (256 per
direction, dropout on its inputs); the last states of both directions; a dense layer. The
softmax is left to the caller (`probabilities`) so attacks get logits. `input_norm="utterance"`
(our speaker recipes, not the study's) removes each chunk's per-band mean over time before the
stack, `input_norm="global"` each chunk's mean over all cells: a parameter-free step, exported to ONNX with the rest, so serving, attacks and training
see the same function.

Parameter count: Keras counts 3,960,389 including BatchNorm's moving statistics and one LSTM
bias per gate. torch's LSTM carries two biases (b_ih + b_hh); b_hh is fixed at zero and frozen,
so `keras_parameter_count` (trainable parameters + BatchNorm statistics) equals the study's.

Two implementations of the same LSTM: `nn.LSTM` (training, ONNX export) and an unrolled one
(`unroll_lstm = True`, what `ModelBundle.torch_model()` hands to the attacks). On CPU, torch's
oneDNN LSTM spends most of a batch-1 forward and backward in the 9-step recurrence (about 0.5 s
per backward here); the unrolled one computes the input projections of all steps and both
directions in one matrix product and the recurrence as 9 small batched products, several
times faster at small batches, the same numbers within 1e-5 (tested). ONNX export always uses
`nn.LSTM`.

`use_channels_last()` (also set by `ModelBundle.torch_model()`) stores the CNN's weights and
runs its blocks in channels-last memory order. oneDNN's pooling and convolutions are faster in
that order on CPU: a forward and input-gradient pass of 1, 8 or 32 clips takes about 0.7 of
the time (benchmarks/model_speed.py, one thread). The values are the same up to float rounding (tested); ONNX
export is unaffected, as ONNX has no memory order.

The white-box attacks differentiate neither this module nor its options directly but its exact
rewrite for speed, `ser_core/models/fast.py` (`ModelBundle.gradient_model()`)."""
from __future__ import annotations

import torch
from torch import nn


INPUT_NORMS = ("none", "utterance", "global")


class CNNLSTM(nn.Module):
    def __init__(self, n_classes: int = 5, dropout: float = 0.3, lstm_input_dropout: float = 0.2,
                 input_shape: tuple[int, int] = (261, 128), n_blocks: int = 9, lstm_units: int = 256,
                 input_norm: str = "none"):
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm {input_norm!r} (accepted: {', '.join(INPUT_NORMS)})")
        self.input_norm = input_norm
        frames, bands = input_shape
        if frames % n_blocks:
            raise ValueError(f"{frames} frames do not split into {n_blocks} equal blocks")
        self.input_shape = tuple(input_shape)
        self.n_blocks = n_blocks
        self.block_frames = frames // n_blocks
        self.cnn = nn.Sequential(
            nn.Conv2d(1, 16, 5), nn.ReLU(), nn.BatchNorm2d(16, eps=1e-3, momentum=0.01),
            nn.MaxPool2d(4, stride=2),
            nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2, stride=2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2, stride=1),
            nn.Flatten(),
        )
        with torch.no_grad():
            block_features = self.cnn(torch.zeros(1, 1, self.block_frames, bands)).shape[1]
        self.dropout = nn.Dropout(dropout)
        self.lstm_input_dropout = lstm_input_dropout
        self.lstm = nn.LSTM(block_features, lstm_units, batch_first=True, bidirectional=True)
        self.dense = nn.Linear(2 * lstm_units, n_classes)
        self.unroll_lstm = False  # see the module docstring
        self.channels_last = False  # see the module docstring
        self._keras_init()

    def _keras_init(self):
        """Keras defaults: Glorot-uniform kernels, orthogonal recurrent kernels, zero biases,
        forget-gate bias 1."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        h = self.lstm.hidden_size
        for name, p in self.lstm.named_parameters():
            if name.startswith("weight_ih"):
                for g in range(4):
                    nn.init.xavier_uniform_(p.data[g * h:(g + 1) * h])
            elif name.startswith("weight_hh"):
                for g in range(4):
                    nn.init.orthogonal_(p.data[g * h:(g + 1) * h])
            elif name.startswith("bias_ih"):
                nn.init.zeros_(p)
                p.data[h:2 * h] = 1.0
            elif name.startswith("bias_hh"):
                nn.init.zeros_(p)
                p.requires_grad_(False)

    def blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, 261, 128) standardised log-Mel -> (batch * 9, 1, 29, 128) CNN input blocks,
        after the input normalisation of our recipes."""
        if self.input_norm == "utterance":
            # per-chunk mean of each band over time removed: a recording's level, noise floor
            # (the dB reference is the chunk's own minimum) and channel colour no longer shift
            # the input (our speaker recipe, ser_core/training/recipes.py; the study's model has "none")
            x = x - x.mean(dim=1, keepdim=True)
        elif self.input_norm == "global":
            # one offset per chunk: level and noise floor go, the spectral shape stays
            x = x - x.mean(dim=(1, 2), keepdim=True)
        blocks = x.reshape(x.shape[0] * self.n_blocks, 1, self.block_frames, x.shape[-1])
        if self.channels_last and not torch.onnx.is_in_onnx_export():
            blocks = blocks.contiguous(memory_format=torch.channels_last)
        return blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (batch, 261, 128) standardised log-Mel -> (batch, n_classes) logits."""
        b = x.shape[0]
        z = self.cnn(self.blocks(x)).reshape(b, self.n_blocks, -1)
        z = self.dropout(z)
        if self.training and self.lstm_input_dropout > 0:
            # one input mask per sequence, reused at every step, as Keras's LSTM(dropout=...)
            keep = 1 - self.lstm_input_dropout
            z = z * torch.bernoulli(torch.full((b, 1, z.shape[-1]), keep, device=z.device)) / keep
        if self.unroll_lstm and not torch.onnx.is_in_onnx_export():
            h_fwd, h_bwd = bilstm_last_states(self.lstm, z)
        else:
            _, (h_n, _) = self.lstm(z)
            h_fwd, h_bwd = h_n[0], h_n[1]
        return self.dense(torch.cat([h_fwd, h_bwd], dim=1))

    def use_channels_last(self) -> "CNNLSTM":
        """Keep the CNN in channels-last memory order (faster on CPU; see the module docstring)."""
        self.cnn.to(memory_format=torch.channels_last)
        self.channels_last = True
        return self

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def bilstm_last_states(lstm: nn.LSTM, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last hidden state of each direction of a one-layer bidirectional `lstm` (batch_first)
    on z (batch, steps, features), unrolled with torch's gate order i, f, g, o:
    c' = sigmoid(f) c + sigmoid(i) tanh(g), h' = sigmoid(o) tanh(c')."""
    b, steps, _ = z.shape
    hidden = lstm.hidden_size
    w_ih = torch.cat([lstm.weight_ih_l0, lstm.weight_ih_l0_reverse])
    bias = torch.cat([lstm.bias_ih_l0 + lstm.bias_hh_l0, lstm.bias_ih_l0_reverse + lstm.bias_hh_l0_reverse])
    gates_in = nn.functional.linear(z, w_ih, bias).reshape(b, steps, 2, 4 * hidden)
    w_hh = torch.stack([lstm.weight_hh_l0, lstm.weight_hh_l0_reverse]).transpose(1, 2)  # (2, H, 4H)
    h = z.new_zeros(2, b, hidden)
    c = z.new_zeros(2, b, hidden)
    for t in range(steps):
        # the forward direction reads step t, the backward one step steps-1-t
        g = torch.stack([gates_in[:, t, 0], gates_in[:, steps - 1 - t, 1]]) + torch.bmm(h, w_hh)
        i, f, gg, o = g.chunk(4, dim=2)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
        h = torch.sigmoid(o) * torch.tanh(c)
    return h[0], h[1]


def keras_parameter_count(model: nn.Module) -> int:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    bn_stats = sum(m.running_mean.numel() + m.running_var.numel()
                   for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    return trainable + bn_stats
