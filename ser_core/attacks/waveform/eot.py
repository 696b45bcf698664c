"""Expectation over transformations (EOT; Athalye et al., "Synthesizing Robust Adversarial
Examples", ICML 2018, arXiv 1707.07397) for white-box waveform attacks: the loss, and so its
gradient, is the average over transformations of the clip sampled afresh at every step, so the
perturbation found works across them and not only on the digital file.

  EOT_PARAMS     the parameters an attack declares to offer EOT: eot (transformations sampled a
                 step; 0: off), eot_space (what is sampled), eot_seed (the sampler's seed)
  SPACES         eot_space name -> a seeded sampler of waveform transforms
  EOTClipModel   the clip model of waveform/base.py under EOT: (1, samples) 16-bit clip ->
                 (eot, classes) clip log-probabilities, one row per sampled transform

A transform here is anything with `prepare(clean) -> state` (computed once per transform from
the clean clip, 16-bit units: e.g. a room's noise and the chunking of its recording) and
`apply_torch(x, state) -> x'` (differentiable in x); its chunking is that of the transformed
clean clip, held fixed as the digital attack holds its own. Spaces: "room", a training room of
ser_core/audio/room.py (reverberation, background noise, microphone band); flips are scored after
held-out rooms (`ser_core.attacks.over_the_air`), never the ones sampled here."""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ser_core.attacks.objective import Objective
from ser_core.attacks.params import Param
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.audio.frontend import LogMelFrontEnd
from ser_core.audio.room import training_rooms

PCM_SCALE = 32768.0
TRAINING_ROOMS = 64

EOT_PARAMS = {
    "eot": Param(0, int, 0, 64, help="expectation over transformations: transforms sampled each step, "
                                     "loss and gradient averaged over them (0: off)"),
    "eot_space": Param("room", str, choices=("room", "room+digital"),
                       help="what EOT samples: room (one of 64 seeded training rooms: reverberation, "
                            "noise, microphone band); room+digital: the digital clip as one row of every "
                            "step and eot - 1 rooms"),
    "eot_seed": Param(0, int, 0, 2 ** 31 - 1, help="seed of the EOT sampler"),
    "eot_confidence": Param(2.0, float, 0.0, 20.0, help="EOT: a candidate counts once its clip margin is below "
                            "-eot_confidence in every sampled transform (log-probability units)"),
}


class RoomTransform:
    """A training room as an EOT transform (ser_core/audio/room.py)."""

    def __init__(self, room, cfg):
        self.room, self.cfg = room, cfg
        self.key = ("room", room.spec.index)

    def prepare(self, clean_pcm: np.ndarray):
        clean = np.asarray(clean_pcm, np.float64)
        noise = self.room.noise(clean)
        index = chunk_index_map(self.room.recording(clean / PCM_SCALE), self.cfg)
        return torch.from_numpy(noise.astype(np.float32)), torch.from_numpy(index)

    def apply_torch(self, x: torch.Tensor, state) -> torch.Tensor:
        return self.room.apply_torch(x, state[0])


class Identity:
    """The digital clip itself, as a transform (its chunking is the clean clip's)."""

    key = ("digital",)

    def __init__(self, cfg):
        self.cfg = cfg

    def prepare(self, clean_pcm: np.ndarray):
        return None, torch.from_numpy(chunk_index_map(np.asarray(clean_pcm, np.float64) / PCM_SCALE, self.cfg))

    def apply_torch(self, x: torch.Tensor, state) -> torch.Tensor:
        return x


class Sampler:
    """A seeded sampler over a fixed list of transforms: `draw(k)` returns k of them (with
    replacement; `always`, when given, first and k - 1 drawn), the same sequence for the same seed."""

    def __init__(self, transforms: list, seed: int, always=None):
        self.transforms, self.always = transforms, always
        self.rng = np.random.default_rng(seed)

    def draw(self, k: int) -> list:
        first = [self.always] if self.always is not None else []
        return first + [self.transforms[i] for i in self.rng.integers(len(self.transforms), size=k - len(first))]


def room_sampler(bundle, seed: int, digital: bool = False) -> Sampler:
    cfg = bundle.feature_config
    return Sampler([RoomTransform(r, cfg) for r in training_rooms(TRAINING_ROOMS)], seed,
                   Identity(cfg) if digital else None)


SPACES = {"room": room_sampler, "room+digital": lambda bundle, seed: room_sampler(bundle, seed, digital=True)}


class EOTClipModel(nn.Module):
    """(1, samples) clip in 16-bit units -> (k, classes): the clip log-probabilities (log of the
    mean chunk probability, as waveform/base.py's ClipModel) of k transformed copies, the
    transforms drawn from `sampler` at every call. A loss averaged over the rows has as gradient
    the average of the per-transform gradients. `drawn` keeps the keys of the last call's draws."""

    def __init__(self, bundle, clean_pcm: np.ndarray, sampler: Sampler, k: int):
        super().__init__()
        self.frontend = LogMelFrontEnd.for_bundle(bundle)
        self.model = bundle.torch_model()
        self.clean, self.sampler, self.k = clean_pcm, sampler, k
        self._state, self.drawn = {}, []

    def state(self, t):
        """(transform's state, the clean clip's decision after the transform), once per transform."""
        if t.key not in self._state:
            st = t.prepare(self.clean)
            with torch.no_grad():
                lp = self._log_probs([t], [st], torch.from_numpy(np.asarray(self.clean, np.float32))[None])
            self._state[t.key] = (st, int(lp[0].argmax()))
        return self._state[t.key]

    def _log_probs(self, draws, states, pcm):
        chunks, counts = [], []
        for t, st in zip(draws, states):
            y = t.apply_torch(pcm, st)[0] / PCM_SCALE
            chunks.append(y[st[1]])
            counts.append(len(st[1]))
        lp = torch.log_softmax(self.model(self.frontend(torch.cat(chunks).float())), dim=1)
        return torch.stack([torch.logsumexp(p, 0) - math.log(len(p)) for p in torch.split(lp, counts)])

    def objective_for(self, objective):
        """Untargeted: away from the clean clip's decision *after each drawn transform* (a room
        alone often changes it; a flip is scored against the clean recording of the same room).
        Targeted: onto the target in every row."""
        if objective.targeted:
            return objective
        return Objective(np.array([self._state[k][1] for k in self.drawn], np.int64))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        draws = self.sampler.draw(self.k)
        self.drawn = [t.key for t in draws]
        return self._log_probs(draws, [self.state(t)[0] for t in draws], pcm)


def eot_model(attack, pcm: np.ndarray):
    """The EOT clip model of a white-box waveform attack whose settings ask for it, else None."""
    k = attack.settings.get("eot") or 0
    if not k:
        return None
    sampler = SPACES[attack.settings["eot_space"]](attack.bundle, attack.settings["eot_seed"])
    return EOTClipModel(attack.bundle, pcm, sampler, k)
