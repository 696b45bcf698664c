"""Adversarial training in the waveform domain: the adversarial share of each batch is crafted on
the samples of the 3 s chunks, through the differentiable log-Mel front-end
(ser_core/audio/frontend.py), inside the L2 ball of an SNR budget, as the waveform attacks
perturb a clip (ser_core/attacks/waveform/).

  pgd     PGD-AT (Madry et al., ICLR 2018, "Towards deep learning models resistant to
          adversarial attacks", arXiv 1706.06083) at an SNR budget: a random start in the ball,
          `pgd_steps` steps of 2.5 r / steps along the L2-normalised gradient of the
          cross-entropy, each projected back onto the ball; the batch is trained on cross-entropy.
  trades  TRADES (Zhang et al., ICML 2019, "Theoretically principled trade-off between
          robustness and accuracy", arXiv 1901.08573): the adversarial chunk maximises
          KL(p(x) || p(x')) in the same ball (small random start, same steps), and the loss is
          CE(x, y) + beta KL(p(x) || p(x')) over the batch.

The ball of a chunk x at S dB SNR is ||delta||_2 <= ||x||_2 10^(-S / 20): per 3 s chunk, the
model's unit (a clip's SNR is that of its chunks together). Crafting differentiates the
eval-mode model rewritten for fast input gradients (FastCNNLSTM, rebuilt from the training
weights before each batch, 0.02 CPU s), 0.010 CPU s a chunk and step on one thread (the plain
module: 0.017), so an epoch over EmoDB's 358 training chunks with 60 % adversarial at 10 steps
costs about 30 CPU s. The adversarial chunks are not rounded to 16 bits (the attacks' WAVs are;
at 30-40 dB the rounding is far below the budget).

`layers` freezes what is not named: fine-tuning only the CNN and the dense layer (26 k of the
3.96 M parameters; the LSTM stays the base's) lets the bundle store only those tensors as a delta
over its base's weights (ModelBundle.save(..., base=...))."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ser_core.audio.frontend import LogMelFrontEnd
from ser_core.models.fast import FastCNNLSTM

LAYERS = ("cnn", "lstm", "dense")  # the CNN-LSTM's top-level modules (ser_core/models/cnn_lstm.py)


def parse_layers(text: str) -> tuple[str, ...]:
    """'all' or a comma list of LAYERS -> the layer names, in LAYERS' order."""
    from ser_core.errors import ParameterError
    names = LAYERS if text == "all" else tuple(s.strip() for s in str(text).split(",") if s.strip())
    bad = [n for n in names if n not in LAYERS]
    if bad or not names:
        raise ParameterError(f"defence layers {text!r} (accepted: all, or a comma list of {', '.join(LAYERS)})")
    return tuple(n for n in LAYERS if n in names)


def freeze(model, layers: tuple[str, ...]) -> list:
    """Freeze the parameters of the layers not in `layers`; the trainable parameters."""
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".")[0] in layers)
    return [p for p in model.parameters() if p.requires_grad]


def train_mode(model, layers: tuple[str, ...]) -> None:
    """model.train(), with the frozen layers kept in eval mode (BatchNorm statistics unchanged)."""
    model.train()
    for name in LAYERS:
        if name not in layers:
            getattr(model, name).eval()


def training_chunks(table, rows: np.ndarray) -> np.ndarray:
    """(len(rows), window_samples) float32: the 3 s chunks of the samples behind the unaugmented
    table rows `rows` (decoded, trimmed, cut and looped as features.py does)."""
    out = np.empty((len(rows), table.cfg.window_samples), np.float32)
    cache: dict[int, np.ndarray] = {}
    for i, r in enumerate(rows):
        if table.aug[r] != 0:
            raise ValueError(f"row {r} is an augmented version: waveform training reads unaugmented rows")
        u = int(table.utt[r])
        if u not in cache:
            cache = {u: table.recorded_chunks(u)}
        out[i] = cache[u][int(table.piece[r])]
    return out


def ball_radius(x: torch.Tensor, snr_db: float) -> torch.Tensor:
    """(batch, 1) L2 radius of the S dB SNR ball around each chunk of x (batch, samples)."""
    return x.norm(dim=1, keepdim=True) * 10.0 ** (-snr_db / 20.0)


def _project(delta: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    norm = delta.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return delta * torch.clamp(radius / norm, max=1.0)


def _random_in_ball(x, radius, generator, scale=1.0):
    noise = torch.randn(x.shape, generator=generator).to(x.device)  # a CPU generator: the same draws on any device
    noise = noise / noise.norm(dim=1, keepdim=True).clamp_min(1e-12)
    u = torch.rand((len(x), 1), generator=generator).to(x.device)
    return noise * radius * scale * u


def craft(model, frontend: LogMelFrontEnd, x: torch.Tensor, y: torch.Tensor, snr_db: float, steps: int,
          method: str, generator: torch.Generator) -> torch.Tensor:
    """Adversarial chunks in the SNR ball of each chunk of x: PGD on the cross-entropy of labels
    y ('pgd') or on KL(p(x) || p(x')) ('trades'). `model`: the training CNN-LSTM (read, not
    changed: its eval-mode fast rewrite is differentiated)."""
    fast = FastCNNLSTM(model.eval())
    radius = ball_radius(x, snr_db)
    with torch.no_grad():
        p_clean = torch.softmax(fast(frontend(x)), 1) if method == "trades" else None
    delta = _random_in_ball(x, radius, generator, 1.0 if method == "pgd" else 0.001)
    step = 2.5 * radius / steps
    for _ in range(steps):
        delta = delta.detach().requires_grad_(True)
        logits = fast(frontend((x + delta).clamp(-1, 1)))
        if method == "trades":
            loss = F.kl_div(F.log_softmax(logits, 1), p_clean, reduction="sum")
        else:
            loss = F.cross_entropy(logits, y, reduction="sum")
        g = torch.autograd.grad(loss, delta)[0]
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)
        delta = _project(delta.detach() + step * g, radius)
    return (x + delta).clamp(-1, 1).detach()


def batch_loss(model, frontend, xb, yb, adv_idx, xa, method: str, beta: float):
    """(loss, logits of the batch as trained): PGD-AT: cross-entropy of the batch with the
    adversarial chunks in place; TRADES: CE of the clean batch + beta KL(p(x) || p(x')) over the
    adversarial share (averaged over the whole batch)."""
    if method == "trades":
        logits = model(frontend(xb))
        loss = F.cross_entropy(logits, yb)
        if xa is not None:
            kl = F.kl_div(F.log_softmax(model(frontend(xa)), 1), torch.softmax(logits[adv_idx], 1),
                          reduction="sum") / len(xb)
            loss = loss + beta * kl
        return loss, logits
    if xa is not None:
        xb = xb.clone()
        xb[adv_idx] = xa
    logits = model(frontend(xb))
    return F.cross_entropy(logits, yb), logits
