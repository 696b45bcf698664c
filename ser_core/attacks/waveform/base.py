"""What waveform attacks share: their base class (`WaveformAttack`, the waveform domain of the
one `ser_core.attacks.base.Attack`), 16-bit sample arithmetic, the budget in SNR or 16-bit
units, the differentiable clip model (white-box) and the counted serving path (black-box).

Waveform attacks work on a whole decoded clip held as 16-bit sample values (floats on the
integer grid -32768..32767, full scale = 32768), because the adversarial audio is delivered as a
16-bit WAV and only the decision on that file counts. A clip's decision is the serving path's:
the mean of its chunks' probabilities (bundle.predict_clip). Every attack has two modes, set by
its `Objective`: untargeted, it moves the clip's decision away from its clean decision, scored by the
margin
  log p_clip[clean] - max_{j != clean} log p_clip[j]      (< 0 means flipped);
targeted, it moves the decision onto a chosen label t, scored by
  max_{j != t} log p_clip[j] - log p_clip[t]             (< 0 means the decision is t).
Both are `ser_core.attacks.base.logit_margin` on clip log-probabilities (negated for a target)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ser_core.attacks.base import Attack, Param, logit_margin
from ser_core.errors import ParameterError
from ser_core.audio.frontend import LogMelFrontEnd

PCM_SCALE = 32768.0
PCM_MIN, PCM_MAX = -32768.0, 32767.0
DEFAULT_SNR_DB = 40.0


def to_pcm(y: np.ndarray) -> np.ndarray:
    """Full-scale float audio -> 16-bit sample values (float64 on the integer grid), as a 16-bit
    WAV stores them (rounded, saturated)."""
    return np.clip(np.round(np.asarray(y, np.float64) * PCM_SCALE), PCM_MIN, PCM_MAX)


def from_pcm(pcm: np.ndarray) -> np.ndarray:
    """16-bit sample values -> float32 audio exactly as soundfile decodes a 16-bit file."""
    return (np.asarray(pcm, np.float64) / PCM_SCALE).astype(np.float32)


def snr_db(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """Signal-to-noise ratio of the perturbation over the whole clip, in dB (inf when unchanged)."""
    clean = np.asarray(clean, np.float64)
    noise = float(np.sum((np.asarray(adversarial, np.float64) - clean) ** 2))
    return math.inf if noise == 0 else 10.0 * math.log10(float(np.sum(clean ** 2)) / noise)


def samples_in_use(n_samples: int, index_map: np.ndarray) -> torch.Tensor:
    """(n_samples,) mask: 1 where some chunk reads the sample, 0 elsewhere (such samples stay
    clean: no chunk would hear a change there)."""
    used = torch.zeros(n_samples)
    used[torch.from_numpy(np.unique(index_map))] = 1.0
    return used


@dataclass(frozen=True)
class Objective:
    """What an attack is after: `label` is the clip's clean decision (class index); `target` None
    means any other decision (untargeted), an index means that decision (targeted). The margin
    is < 0 exactly when the goal is reached, on the model (torch) and on the serving path (numpy)."""

    label: int
    target: int | None = None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def margin(self, log_probs: torch.Tensor) -> torch.Tensor:
        """(batch, classes) clip log-probabilities of the clip model -> (batch,) margin."""
        if self.target is None:
            return logit_margin(log_probs, self.label)
        return -logit_margin(log_probs, self.target)

    def serving_margin(self, probs: np.ndarray) -> np.ndarray:
        """(batch, classes) clip probabilities from the serving path -> (batch,) margin."""
        logp = np.log(np.clip(probs, 1e-30, None))
        if self.target is None:
            return logit_margin(logp, self.label)
        return -logit_margin(logp, self.target)

    def reached(self, label: int) -> bool:
        return label != self.label if self.target is None else label == self.target


class WaveformRun(NamedTuple):
    """What a waveform attack's `run` returns. pcm: the adversarial clip as 16-bit sample values
    (possibly off the integer grid); queries: clip scorings spent (model forward passes and
    serving-path calls); extra: the attack's own figures."""

    pcm: np.ndarray
    queries: int
    extra: dict


class WaveformAttack(Attack):
    """An attack on the 16-bit samples of one clip. Subclasses set what every `Attack` sets
    and implement `run`; `ser_core.attacks.clip.attack_clip(..., domain="waveform")` runs one on
    a clip and verifies its flip on the written WAV."""

    domain = "waveform"

    def run(self, pcm: np.ndarray, objective: Objective, index_map: np.ndarray, progress) -> WaveformRun:
        """pcm: clean clip as 16-bit sample values; objective: its clean decision and the target,
        if any; index_map: its chunks (chunkmap). ser_core.attacks.clip writes the result as a
        16-bit WAV and verifies it."""
        raise NotImplementedError

    def white_box(self, pcm: np.ndarray, index_map: np.ndarray):
        """What a white-box attack starts from: (the clip model with this chunking held fixed,
        the counted serving path that verifies its candidates, the (samples,) mask of samples
        some chunk reads, the clean clip as a float32 tensor)."""
        return (ClipModel(self.bundle, index_map), ServingPath(self.bundle), samples_in_use(len(pcm), index_map),
                torch.from_numpy(pcm).float())


class LinfBudget:
    """Mixin for attacks bounded in Linf: the budget is `eps_16bit` (16-bit units) or `snr_db`.

    From snr_db the budget is the largest whole number of 16-bit steps that guarantees the SNR:
    a perturbation bounded by eps on the k samples the chunks use has energy at most k eps^2, so
    eps = floor(sqrt(clip energy / k) * 10^(-snr_db / 20))."""

    budget_params = {
        "snr_db": Param(None, float, 0.0, 100.0, help="budget as the lowest SNR allowed, dB "
                        f"(default {DEFAULT_SNR_DB:g} when eps_16bit is not given)"),
        "eps_16bit": Param(None, int, 1, 32767, help="budget as the largest change of a sample, "
                           "in 16-bit units (full scale 32768)"),
    }

    def _validate(self):
        if self.settings["snr_db"] is not None and self.settings["eps_16bit"] is not None:
            raise ParameterError(f"{self.name}: give the budget as snr_db or eps_16bit, not both")

    def epsilon(self, pcm: np.ndarray, index_map: np.ndarray) -> int:
        if self.settings["eps_16bit"] is not None:
            return int(self.settings["eps_16bit"])
        snr = self.settings["snr_db"] if self.settings["snr_db"] is not None else DEFAULT_SNR_DB
        k = len(np.unique(index_map))
        eps = math.floor(math.sqrt(float(np.sum(pcm ** 2)) / k) * 10 ** (-snr / 20))
        if eps < 1:
            raise ParameterError(f"{self.name}: snr_db={snr:g} leaves less than one 16-bit step "
                                 f"for this clip (accepted: a lower snr_db, or eps_16bit >= 1)")
        return eps


class ClipModel(nn.Module):
    """White-box view of the serving path with the chunking held fixed: (batch, samples) clips in
    16-bit units -> (batch, classes) clip log-probabilities (log of the mean chunk probability)."""

    def __init__(self, bundle, index_map: np.ndarray):
        super().__init__()
        self.frontend = LogMelFrontEnd.for_bundle(bundle)
        self.model = bundle.torch_model()
        self.register_buffer("index", torch.from_numpy(np.ascontiguousarray(index_map)))

    def chunk_log_probs(self, pcm: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, n_chunks, classes) log-probabilities of each chunk."""
        b = pcm.shape[0]
        chunks = (pcm / PCM_SCALE)[:, self.index]  # (batch, n_chunks, samples): a gather
        feats = self.frontend(chunks.reshape(-1, chunks.shape[-1]).float())
        return torch.log_softmax(self.model(feats), dim=1).reshape(b, self.index.shape[0], -1)

    @staticmethod
    def clip_log_probs(chunk_log_probs: torch.Tensor) -> torch.Tensor:
        """(batch, n_chunks, classes) -> (batch, classes) log of the mean chunk probability."""
        n = chunk_log_probs.shape[1]
        return torch.logsumexp(chunk_log_probs, dim=1) - math.log(n)

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        return self.clip_log_probs(self.chunk_log_probs(pcm))


class ServingPath:
    """Black-box access: clips (16-bit sample values) -> clip probabilities through the serving
    path (bundle.features: trim, chunks, librosa log-Mel, standardiser; then ONNX Runtime), one
    ONNX call per batch of clips. `count` is the number of clips scored."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.count = 0

    def __call__(self, pcm_batch: np.ndarray) -> np.ndarray:
        feats = [self.bundle.features(from_pcm(p)) for p in np.atleast_2d(pcm_batch)]
        self.count += len(feats)
        probs = self.bundle.predict_features(np.concatenate(feats))
        bounds = np.cumsum([0] + [len(f) for f in feats])
        return np.stack([probs[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
