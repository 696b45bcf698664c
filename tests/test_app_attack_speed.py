"""The app's default attack without repeated work, and with the same outputs: the masking
threshold vectorised (within 1e-9 dB of the per-frame model, the same reports) and computed once
per clip; the Mel product on one BLAS thread (the same features); the serving path's features
of a clip computed once (verification and the app's images reuse the attack's). Work is counted,
never timed (latency: benchmarks/app_attack_cpu.py)."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.attacks.waveform import masking
from ser_core.attacks.waveform.base import to_pcm
from ser_core.attacks.waveform.masking import MaskingThreshold
from ser_core.audio.decode import load_audio

from tests.conftest import REPO

EXAMPLES = sorted((REPO / "examples").glob("*.wav"))


def per_frame(pcm, sr=16_000) -> np.ndarray:
    """The threshold written frame by frame (masking._frame_threshold), the specification."""
    p = masking.psd_db(pcm)
    p = p + masking.PEAK_DB - float(p.max())
    freqs = np.fft.rfftfreq(masking.N_FFT, 1.0 / sr)
    b, ath = masking.bark(freqs), masking.absolute_threshold(freqs)
    return np.stack([masking._frame_threshold(p[:, t], b, ath) for t in range(p.shape[1])], axis=1)


def clips(data_dir=None):
    paths = list(EXAMPLES)
    if data_dir is not None:
        for corpus in ("emodb", "emovo", "ravdess"):
            paths += sorted((data_dir / corpus).rglob("*.flac"))[:3] + sorted((data_dir / corpus).rglob("*.wav"))[:3]
    return [to_pcm(load_audio(p)) for p in paths]


@pytest.mark.parametrize("block", [masking.MASKERS_PER_BLOCK, 7])  # 7: frames spread over many blocks
def test_vectorised_threshold_matches_the_per_frame_model(block, monkeypatch):
    monkeypatch.setattr(masking, "MASKERS_PER_BLOCK", block)
    rng = np.random.default_rng(0)
    for pcm in clips():
        ref = per_frame(pcm)
        new = MaskingThreshold._compute(pcm, 16_000)
        assert new.threshold_db.shape == ref.shape
        assert np.abs(new.threshold_db - ref).max() < 1e-9
        old = MaskingThreshold(ref, new.offset_db)
        for snr in (20, 30, 40):  # reports of perturbations at the grid's SNRs: identical
            noise = rng.standard_normal(len(pcm))
            noise *= np.sqrt(np.sum(pcm ** 2) / np.sum(noise ** 2)) * 10 ** (-snr / 20)
            assert new.report(np.round(noise)) == old.report(np.round(noise))


def test_vectorised_threshold_on_corpus_clips(data_dir):
    for pcm in clips(data_dir)[len(EXAMPLES):]:
        assert np.abs(MaskingThreshold._compute(pcm, 16_000).threshold_db - per_frame(pcm)).max() < 1e-9


def test_threshold_of_silence_and_of_a_tone_match_the_per_frame_model():
    sr = 16_000
    silence = np.zeros(sr)
    silence[::4000] = 1.0  # a few clicks: frames without maskers beside frames with
    tone = np.round(8000 * np.sin(2 * np.pi * 1000 * np.arange(sr) / sr))
    for pcm in (silence, tone):
        assert np.abs(MaskingThreshold._compute(pcm, sr).threshold_db - per_frame(pcm)).max() < 1e-9


def test_threshold_is_computed_once_per_clip(monkeypatch):
    calls = []
    compute = MaskingThreshold._compute.__func__
    monkeypatch.setattr(MaskingThreshold, "_compute",
                        classmethod(lambda cls, pcm, sr: calls.append(1) or compute(cls, pcm, sr)))
    a, b = clips()[:2]
    first = MaskingThreshold.of(a.copy())
    again = MaskingThreshold.of(a.copy())  # the same samples in another array
    other = MaskingThreshold.of(b)
    assert again is first and other is not first
    assert not first.threshold_db.flags.writeable
    assert len(calls) <= 2  # at most a and b (either may already be cached by another test)


def test_features_on_one_blas_thread_equal_librosa():
    import librosa
    from ser_core.audio.features import mel_power
    from ser_core.config import PAPER_FEATURES as cfg
    chunks = np.random.default_rng(1).normal(0, 0.1, (3, 48_000)).astype(np.float32)
    ref = librosa.feature.melspectrogram(y=chunks, sr=cfg.sample_rate, n_fft=cfg.n_fft,
                                         hop_length=cfg.hop_length, n_mels=cfg.n_mels)
    assert np.array_equal(mel_power(chunks, cfg), ref)


def test_serving_features_are_computed_once_per_clip(bundle, monkeypatch):
    """A default app attack computes each clip's features once: the written WAV's (the last
    candidate's samples) and the clean clip's are reused by verification and the images."""
    from ser_core.attacks.clip import attack_clip
    from ser_core.attacks.waveform.verify import serving_features
    bundle.onnx_session()  # built first: a fresh clone's parity check scores the example clips too
    seen = []
    features = bundle.features
    monkeypatch.setattr(bundle, "features", lambda y: seen.append(y.tobytes()) or features(y))
    r = attack_clip(bundle, EXAMPLES[1], "apgd", {"snr_db": 30.0, "steps": 40})
    assert len(seen) == len(set(seen))  # no clip's features computed twice
    n = len(seen)
    clean = load_audio(EXAMPLES[1])
    assert np.array_equal(serving_features(bundle, clean), features(clean))
    assert np.array_equal(serving_features(bundle, r.adversarial_audio), features(r.adversarial_audio))
    assert len(seen) == n  # both were the attack's own


def test_serving_features_are_read_only_copies_of_the_bundles(bundle):
    from ser_core.attacks.waveform.verify import serving_features
    y = load_audio(EXAMPLES[0])
    x = serving_features(bundle, y)
    assert not x.flags.writeable and np.array_equal(x, bundle.features(y))
