"""Over the air, simulated: a clip played in a room and recorded by a microphone.

A room is a `RoomSpec` drawn from a seeded generator: a shoebox of random size (3-10 x 3-8 x
2.4-3.5 m), a reverberation time RT60 uniform in 0.2-0.8 s, a source (the loudspeaker) and a
microphone at random positions (at least 0.5 m from the walls, 0.5-3 m apart), additive
background noise (pink, 20-35 dB below the received speech) and a band-limited microphone
(high-pass 80-300 Hz, low-pass 3.4-7.6 kHz, a linear-phase FIR).

Its impulse response is pyroomacoustics' image-source model (Allen & Berkley 1979) up to
50 ms after the direct sound, order at most 10 (deterministic), then a seeded exponentially
decaying Gaussian tail at the room's RT60 whose envelope starts at the early part's level there
(the usual ISM + stochastic tail hybrid; pyroomacoustics' own ray tracer is not seedable). The
microphone's band is convolved into it, so one FIR `h` and one noise signal describe the room.

Two fixed banks, both seeded and disjoint (`training_rooms`, `held_out_rooms`): attacks draw
their expectation over transformations (EOT) from the training rooms; every flip is scored after
held-out rooms the optimisation never saw. `Room.apply` (numpy, what a visitor hears) and
`Room.apply_torch` (differentiable, what an EOT attack's gradient goes through) compute the same
recording: y = (x * h)[:len(x)] + noise, the noise scaled to the room's SNR against the clean
clip's recording."""
from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

SAMPLE_RATE = 16_000
RT60_RANGE = (0.2, 0.8)
NOISE_SNR_RANGE = (20.0, 35.0)
EARLY_SECONDS = 0.05
MAX_ORDER = 10
FIR_TAPS = 255
# the two banks draw from disjoint branches of one seed sequence
TRAINING, HELD_OUT = 0, 1


@dataclass(frozen=True)
class RoomSpec:
    """One simulated room: size (m), RT60 (s), source and microphone positions (m), background
    noise SNR (dB, against the clean clip's recording), microphone band (Hz), and the seed of its
    noise and reverberation tail. bank/index: where it was drawn from (training or held-out)."""

    size: tuple[float, float, float]
    rt60: float
    source: tuple[float, float, float]
    microphone: tuple[float, float, float]
    noise_snr_db: float
    band_hz: tuple[float, float]
    seed: int
    bank: str = ""
    index: int = -1

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


def sample_room(rng: np.random.Generator, bank: str = "", index: int = -1) -> RoomSpec:
    """A random room drawn from rng (see the module docstring for the ranges)."""
    size = (rng.uniform(3, 10), rng.uniform(3, 8), rng.uniform(2.4, 3.5))
    rt60 = rng.uniform(*RT60_RANGE)

    def point():
        return tuple(float(rng.uniform(0.5, s - 0.5)) for s in size[:2]) + (float(rng.uniform(1.0, 1.8)),)
    source = point()
    for _ in range(100):
        mic = point()
        if 0.5 <= np.linalg.norm(np.subtract(mic, source)) <= 3.0:
            break
    return RoomSpec(tuple(float(s) for s in size), float(rt60), source, mic, float(rng.uniform(*NOISE_SNR_RANGE)),
                    (float(rng.uniform(80, 300)), float(rng.uniform(3400, 7600))),
                    int(rng.integers(2 ** 31 - 1)), bank, index)


def _bank(role: int, n: int, seed: int) -> list[RoomSpec]:
    name = ("training", "held-out")[role]
    children = np.random.SeedSequence(seed, spawn_key=(role,)).spawn(n)
    return [sample_room(np.random.default_rng(c), name, i) for i, c in enumerate(children)]


def training_rooms(n: int = 64, seed: int = 0) -> list[Room]:
    """The rooms attacks optimise over (EOT): n rooms from the training branch of `seed`."""
    return [Room(s) for s in _bank(TRAINING, n, seed)]


def held_out_rooms(n: int = 16, seed: int = 0) -> list[Room]:
    """The rooms flips are scored after, never seen by an optimisation: n rooms from the
    held-out branch of `seed` (a branch the training rooms never draw from)."""
    return [Room(s) for s in _bank(HELD_OUT, n, seed)]


@functools.lru_cache(maxsize=256)
def impulse_response(spec: RoomSpec, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The room's FIR (float64): early image-source part, seeded RT60 tail, microphone band;
    scaled to unit energy (the level the microphone records at is not what is studied)."""
    import pyroomacoustics as pra
    from scipy.signal import fftconvolve, firwin
    e_abs, order = pra.inverse_sabine(spec.rt60, list(spec.size))
    room = pra.ShoeBox(list(spec.size), fs=sample_rate, materials=pra.Material(e_abs),
                       max_order=int(min(order, MAX_ORDER)))
    room.add_source(list(spec.source))
    room.add_microphone(list(spec.microphone))
    room.compute_rir()
    early = np.asarray(room.rir[0][0], np.float64)
    direct = int(np.argmax(np.abs(early)))
    cut = direct + int(EARLY_SECONDS * sample_rate)
    early = np.pad(early, (0, max(0, cut - len(early))))[:cut]
    # tail envelope starts at the early part's RMS over its last 10 ms, decays 60 dB in RT60
    level = np.sqrt(np.mean(early[-sample_rate // 100:] ** 2))
    n_tail = int(spec.rt60 * sample_rate)
    t = np.arange(n_tail) / sample_rate
    rng = np.random.default_rng(spec.seed)
    tail = rng.standard_normal(n_tail) * level * 10 ** (-3 * t / spec.rt60)
    h = np.concatenate([early, tail])
    band = firwin(FIR_TAPS, list(spec.band_hz), pass_zero=False, fs=sample_rate)
    h = fftconvolve(h, band)[FIR_TAPS // 2:]  # the linear-phase FIR's delay removed
    return h / np.linalg.norm(h)


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of unit-RMS pink (1/f power) noise."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spec), dtype=np.float64)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    y = np.fft.irfft(spec, n)
    return y / max(np.sqrt(np.mean(y ** 2)), 1e-30)


class Room:
    """One room, applied to clips. `recording(x)` (numpy) and `apply_torch(x, clean)` (torch,
    differentiable in x) give y = (x * h)[:len(x)] + noise, where the noise is pink, seeded by
    the room, and scaled to the room's SNR against the recording of the *clean* clip, so that an
    attack cannot lower the noise by raising its own level."""

    def __init__(self, spec: RoomSpec, sample_rate: int = SAMPLE_RATE):
        self.spec, self.sample_rate = spec, sample_rate

    def __repr__(self):
        s = self.spec
        return f"Room({s.bank} #{s.index}: {s.size[0]:.1f}x{s.size[1]:.1f}x{s.size[2]:.1f} m, RT60 {s.rt60:.2f} s)"

    @property
    def h(self) -> np.ndarray:
        return impulse_response(self.spec, self.sample_rate)

    def reverberate(self, x: np.ndarray) -> np.ndarray:
        from scipy.signal import fftconvolve
        return fftconvolve(np.asarray(x, np.float64), self.h)[:len(x)]

    def noise(self, clean: np.ndarray) -> np.ndarray:
        """The room's background noise for a clip whose clean version is `clean` (same length)."""
        wet = self.reverberate(clean)
        power = float(np.mean(wet ** 2))
        rng = np.random.default_rng([self.spec.seed, len(clean)])
        return pink_noise(len(clean), rng) * np.sqrt(power * 10 ** (-self.spec.noise_snr_db / 10))

    def recording(self, x: np.ndarray, clean: np.ndarray | None = None) -> np.ndarray:
        """What the microphone records when x is played (float32, same length as x). clean: the
        clip the noise level is set against (default x itself)."""
        clean = x if clean is None else clean
        return (self.reverberate(x) + self.noise(np.asarray(clean, np.float64))).astype(np.float32)

    def apply_torch(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> the same recording, differentiable in x: FFT convolution with h,
        truncated to the input's length, plus `noise` (this room's `noise(clean)`, fixed)."""
        n = x.shape[-1]
        h = torch.as_tensor(self.h, dtype=x.dtype)
        size = n + len(h) - 1
        y = torch.fft.irfft(torch.fft.rfft(x, size) * torch.fft.rfft(h, size), size)[..., :n]
        return y + noise.to(x.dtype)
