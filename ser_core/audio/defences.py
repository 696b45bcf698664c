"""Cheap input defences on the waveform: transforms a bundle applies to a decoded clip before its
features (config["defence"]: `ModelBundle.features`, so /predict, the timeline, explanations and
every attack's verification on the written WAV go through them), and the torch views that a
white-box attacker differentiates.

  resample  down to `rate` Hz and back up (scipy.signal.resample_poly, its anti-alias FIR)
  quantise  `bits`-bit uniform quantisation of the samples (full scale 1; default 8)
  mp3       MP3 at VBR quality `quality` (0 best .. 10 worst) through pedalboard's LAME encoder
  lowpass   zero-phase low-pass at `cutoff` Hz (an FFT brick wall over the whole clip)
  noise     Gaussian noise of standard deviation `sigma` (full scale 1), the randomisation of
            randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019, arXiv 1902.02918)

A defence is a chain of these, applied in order (`Defence`; spec strings like
"resample:rate=8000+quantise:bits=8" or config lists of {"name": ..., params}). A random part
draws its noise from a generator seeded by the chain's `seed` and the clip's samples, so a
decision on a given WAV is reproducible while any change to the clip draws fresh noise.

How an attacker sees the chain (`Defence.view(mode)`, used by the white-box clip model,
ser_core/attacks/waveform/base.py `ClipModel`):
  ignore    the attacker differentiates the undefended model (a naive, transfer attack);
  through   the chain as implemented: lowpass and noise are torch operations with their true
            gradient, the numpy steps (resample, quantise, mp3) are detached: a zero gradient,
            what a careless white-box evaluation of a non-differentiable defence gets;
  adaptive  BPDA (Athalye, Carlini, Wagner, ICML 2018, arXiv 1802.00420): the forward value is
            the exact defence, the backward pass that of a differentiable approximation
            (resample: the FFT low-pass at rate / 2; quantise, mp3: the identity, straight
            through; lowpass, noise: exact), and EOT (Athalye et al. 2018, "Synthesizing robust
            adversarial examples", arXiv 1707.07397): the clip log-probability is the log of the
            mean probability over `eot` draws of a random part, from a seeded torch generator."""
from __future__ import annotations

import zlib
from typing import ClassVar

import numpy as np
import torch

from ser_core.errors import ParameterError

SAMPLE_RATE = 16000
MODES = ("ignore", "through", "adaptive")


class InputTransform:
    """One defence step. `params`: name -> (default, type, low, high). `apply` is the serving
    (numpy) version on float32 audio at SAMPLE_RATE; `exact` a torch version with its true
    gradient where one exists (None otherwise); `approx` the differentiable approximation BPDA
    back-propagates through (identity unless overridden)."""

    name: ClassVar[str] = ""
    random: ClassVar[bool] = False
    params: ClassVar[dict] = {}

    def __init__(self, **kwargs):
        unknown = set(kwargs) - set(self.params)
        if unknown:
            raise ParameterError(f"defence {self.name}: unknown parameter(s) {sorted(unknown)} "
                                 f"(accepted: {', '.join(self.params) or 'none'})")
        self.settings = {}
        for k, (default, kind, low, high) in self.params.items():
            v = kwargs.get(k, default)
            try:
                v = kind(v)
            except (TypeError, ValueError):
                raise ParameterError(f"defence {self.name}: {k}={v!r} is not a {kind.__name__}") from None
            if not low <= v <= high:
                raise ParameterError(f"defence {self.name}: {k}={v} (accepted: {low} .. {high})")
            self.settings[k] = v

    def spec(self) -> dict:
        return {"name": self.name, **self.settings}

    def apply(self, y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def exact(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
        return None

    def approx(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        return x


def _fft_lowpass(x, cutoff: float):
    """Zero-phase brick-wall low-pass over the last axis (numpy or torch, differentiable)."""
    n = x.shape[-1]
    if isinstance(x, torch.Tensor):
        keep = (torch.fft.rfftfreq(n, 1.0 / SAMPLE_RATE) < cutoff).to(x.dtype)
        return torch.fft.irfft(torch.fft.rfft(x) * keep, n)
    keep = np.fft.rfftfreq(n, 1.0 / SAMPLE_RATE) < cutoff
    return np.fft.irfft(np.fft.rfft(np.asarray(x, np.float64)) * keep, n).astype(np.float32)


class Resample(InputTransform):
    name = "resample"
    params = {"rate": (8000, int, 1000, 15999)}

    def apply(self, y, rng):
        from math import gcd
        from scipy.signal import resample_poly
        r = self.settings["rate"]
        k = gcd(r, SAMPLE_RATE)
        down = resample_poly(np.asarray(y, np.float64), r // k, SAMPLE_RATE // k)
        return resample_poly(down, SAMPLE_RATE // k, r // k)[:len(y)].astype(np.float32)

    def approx(self, x, g):
        return _fft_lowpass(x, self.settings["rate"] / 2)


class Quantise(InputTransform):
    name = "quantise"
    params = {"bits": (8, int, 2, 15)}

    def apply(self, y, rng):
        levels = 2 ** (self.settings["bits"] - 1)
        return (np.clip(np.round(np.asarray(y, np.float64) * levels), -levels, levels - 1) / levels).astype(np.float32)


class MP3(InputTransform):
    name = "mp3"
    params = {"quality": (2.0, float, 0.0, 10.0)}

    def apply(self, y, rng):
        try:
            import pedalboard
        except ImportError:
            raise ParameterError("defence mp3 needs pedalboard (pip install pedalboard==0.9.26)") from None
        out = pedalboard.MP3Compressor(vbr_quality=self.settings["quality"])(np.asarray(y, np.float32), SAMPLE_RATE)
        return np.asarray(out, np.float32).reshape(-1)[:len(y)]


class LowPass(InputTransform):
    name = "lowpass"
    params = {"cutoff": (4000.0, float, 100.0, 7999.0)}

    def apply(self, y, rng):
        return _fft_lowpass(y, self.settings["cutoff"])

    def exact(self, x, g):
        return _fft_lowpass(x, self.settings["cutoff"])

    approx = exact


class Noise(InputTransform):
    name = "noise"
    random = True
    params = {"sigma": (0.002, float, 1e-6, 1.0)}

    def apply(self, y, rng):
        return (np.asarray(y, np.float32) + self.settings["sigma"] * rng.standard_normal(len(y))).astype(np.float32)

    def exact(self, x, g):
        return x + self.settings["sigma"] * torch.randn(x.shape, generator=g, dtype=x.dtype)

    approx = exact


TRANSFORMS = {c.name: c for c in (Resample, Quantise, MP3, LowPass, Noise)}


def _exact(x: torch.Tensor, step: InputTransform, rng) -> torch.Tensor:
    """The numpy defence step of each row, as a constant (no gradient)."""
    out = np.stack([step.apply(r, rng) for r in x.detach().cpu().numpy()])
    return torch.from_numpy(out).to(x.dtype)


class Defence:
    """A chain of input transforms with the seed of its random parts."""

    def __init__(self, parts: list[InputTransform], seed: int = 0):
        if not parts:
            raise ParameterError("defence: an empty chain (accepted: one or more of "
                                 f"{', '.join(TRANSFORMS)})")
        self.parts, self.seed = list(parts), int(seed)

    @property
    def random(self) -> bool:
        return any(p.random for p in self.parts)

    @property
    def name(self) -> str:
        return "+".join(p.name for p in self.parts)

    def spec(self) -> list[dict]:
        return [p.spec() for p in self.parts]

    def to_config(self) -> dict:
        return {"chain": self.spec(), "seed": self.seed}

    def __call__(self, y: np.ndarray) -> np.ndarray:
        """The serving path's defence of a decoded clip (float32, SAMPLE_RATE)."""
        y = np.asarray(y, np.float32)
        rng = np.random.default_rng([self.seed, zlib.crc32(y.tobytes())])
        for p in self.parts:
            y = p.apply(y, rng)
        return y

    def view(self, mode: str, eot: int = 1, seed: int = 0) -> "DefenceView | None":
        if mode not in MODES:
            raise ParameterError(f"defence view {mode!r} (accepted: {', '.join(MODES)})")
        return None if mode == "ignore" else DefenceView(self, mode, eot, seed)


class DefenceView:
    """What a white-box attacker differentiates of a defence (see the module docstring):
    (batch, samples) audio at full scale 1 -> defended audio, and `expect`, the EOT average."""

    def __init__(self, defence: Defence, mode: str, eot: int = 1, seed: int = 0):
        if eot < 1:
            raise ParameterError(f"eot={eot} (accepted: an integer >= 1)")
        self.defence, self.mode = defence, mode
        self.eot = eot if defence.random else 1
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for p in self.defence.parts:
            exact = p.exact(x, self.generator)
            if exact is not None:
                x = exact
            elif self.mode == "through":  # a numpy step in a torch graph: a zero gradient
                x = x * 0.0 + _exact(x, p, self.rng)
            else:  # BPDA: the exact value, the approximation's gradient
                a = p.approx(x, self.generator)
                x = a + (_exact(x, p, self.rng) - a).detach()
        return x

    def expect(self, pcm: torch.Tensor, clip_log_probs, scale: float) -> torch.Tensor:
        """(batch, samples) 16-bit units -> (batch, classes) log of the mean clip probability
        over `eot` draws of the defence (one draw when the chain is deterministic)."""
        b = pcm.shape[0]
        x = self(pcm.repeat_interleave(self.eot, 0) / scale) * scale
        lp = clip_log_probs(x).reshape(b, self.eot, -1)
        return torch.logsumexp(lp, dim=1) - float(np.log(self.eot))


def parse_defence(spec, seed: int = 0) -> Defence | None:
    """None / "" / "none" -> None; "name[:k=v,...]+name..." or a config entry ({"chain": [...],
    "seed": s}, or a list of {"name": ..., params}) -> Defence."""
    if spec is None or spec == "" or spec == "none":
        return None
    if isinstance(spec, dict):
        return parse_defence(spec.get("chain"), spec.get("seed", seed))
    parts = []
    items = spec.split("+") if isinstance(spec, str) else list(spec)
    for item in items:
        if isinstance(item, str):
            name, _, rest = item.partition(":")
            kwargs = dict(kv.split("=", 1) for kv in rest.split(",") if kv) if rest else {}
        else:
            kwargs = {k: v for k, v in item.items() if k != "name"}
            name = item.get("name")
        if name not in TRANSFORMS:
            raise ParameterError(f"defence {name!r} (accepted: {', '.join(TRANSFORMS)}, joined by '+')")
        parts.append(TRANSFORMS[name](**kwargs))
    return Defence(parts, seed)
