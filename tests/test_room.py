"""The simulated rooms (ser_core/audio/room.py): seeded, within their stated ranges, the held-out
bank disjoint from the training bank, and the torch recording equal to the numpy one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from ser_core.audio.room import NOISE_SNR_RANGE, RT60_RANGE, held_out_rooms, training_rooms

pytest.importorskip("pyroomacoustics")


def test_same_seed_same_rooms_and_impulse_responses():
    a, b = training_rooms(8, seed=3), training_rooms(8, seed=3)
    assert [r.spec for r in a] == [r.spec for r in b]
    assert all(np.array_equal(x.h, y.h) for x, y in zip(a, b))


def test_another_seed_other_rooms():
    assert {r.spec for r in training_rooms(8, seed=0)}.isdisjoint({r.spec for r in training_rooms(8, seed=1)})


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_held_out_rooms_are_disjoint_from_training_rooms(seed):
    train, held = training_rooms(64, seed), held_out_rooms(16, seed)
    assert {r.spec.bank for r in train} == {"training"} and {r.spec.bank for r in held} == {"held-out"}
    assert {r.spec.size for r in train}.isdisjoint({r.spec.size for r in held})
    assert {r.spec.seed for r in train}.isdisjoint({r.spec.seed for r in held})
    trained = [r.h for r in train]
    for r in held[:4]:
        assert not any(len(h) == len(r.h) and np.allclose(h, r.h) for h in trained)


def test_rooms_stay_in_their_ranges():
    for r in training_rooms(32) + held_out_rooms(16):
        s = r.spec
        assert RT60_RANGE[0] <= s.rt60 <= RT60_RANGE[1]
        assert NOISE_SNR_RANGE[0] <= s.noise_snr_db <= NOISE_SNR_RANGE[1]
        assert 80 <= s.band_hz[0] < s.band_hz[1] <= 7600
        for p in (s.source, s.microphone):
            assert all(0 < c < d for c, d in zip(p, s.size))
        assert 0.5 <= np.linalg.norm(np.subtract(s.source, s.microphone)) <= 3.0
        assert np.isclose(np.linalg.norm(r.h), 1.0)


def test_reverberation_tail_follows_rt60():
    """The impulse response's energy decays by ~60 dB over the room's RT60 (Schroeder integral:
    the -5 to -25 dB slope extrapolated, within 25 %)."""
    pra = pytest.importorskip("pyroomacoustics")
    for r in held_out_rooms(4):
        measured = pra.experimental.measure_rt60(r.h, fs=r.sample_rate, decay_db=20)
        assert abs(measured - r.spec.rt60) < 0.25 * r.spec.rt60


def test_noise_is_at_the_rooms_snr_against_the_clean_recording():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(32000) * 0.1
    for r in held_out_rooms(3):
        wet = r.reverberate(x)
        noise = r.recording(x).astype(np.float64) - wet
        snr = 10 * np.log10(np.mean(wet ** 2) / np.mean(noise ** 2))
        assert snr == pytest.approx(r.spec.noise_snr_db, abs=0.01)
        # the noise is set against the clean clip, whatever is played
        assert np.allclose(r.recording(2 * x, clean=x) - r.reverberate(2 * x), noise, atol=1e-6)


def test_torch_recording_equals_numpy_recording():
    x = np.random.default_rng(1).standard_normal(20000) * 0.1
    for r in held_out_rooms(2):
        y = r.apply_torch(torch.from_numpy(x)[None], torch.from_numpy(r.noise(x)))[0].numpy()
        assert np.abs(y - r.recording(x)).max() < 1e-5
