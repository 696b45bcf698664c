"""Decoding and validation: every kind of bad audio gets its own typed error naming the file."""
import numpy as np
import pytest

from ser_core.audio.decode import load_audio, validate_waveform
from ser_core.errors import (EmptyAudioError, NonFiniteAudioError, SilentAudioError,
                             TooLongAudioError, TooShortAudioError, UnreadableAudioError)
from tests.helpers import voiced, write


def test_stereo_48k_int16_becomes_mono_16k_float(tmp_path):
    y = voiced(1.0, sr=48000)
    p = write(tmp_path / "s.wav", np.stack([y, y * 0.5], axis=1), sr=48000)
    out = load_audio(p)
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - len(y) / 3) <= 2
    assert np.isclose(np.abs(out).max(), 0.75 * np.abs(y).max(), rtol=0.05)


def test_int16_arrays_are_scaled_to_unit_range():
    y = (voiced(1.0) * 32767).astype(np.int16)
    out = validate_waveform(y, 16000)
    assert np.isclose(out.max(), y.max() / 32768, atol=1e-6)


@pytest.mark.parametrize("make,error,words", [
    (lambda p: p.write_text("hello"), UnreadableAudioError, "cannot be decoded"),
    (lambda p: write(p, np.zeros(0, np.float32)), EmptyAudioError, "no samples"),
    (lambda p: write(p, np.zeros(16000, np.float32)), SilentAudioError, "silent"),
    (lambda p: write(p, voiced(0.05, pad=0)), TooShortAudioError, "0.050 s"),
])
def test_bad_files_raise_typed_errors_naming_the_file(tmp_path, make, error, words):
    p = tmp_path / "bad.wav"
    make(p)
    with pytest.raises(error, match=words) as exc:
        load_audio(p)
    assert str(p) in str(exc.value) and "accepted" in str(exc.value)


def test_missing_file_nonfinite_and_too_long():
    with pytest.raises(UnreadableAudioError, match="does not exist"):
        load_audio("/no/such/file.wav")
    y = voiced(1.0)
    y[100] = np.nan
    with pytest.raises(NonFiniteAudioError, match="1 samples"):
        validate_waveform(y, 16000, source="upload")
    with pytest.raises(TooLongAudioError, match="at most 0.5 s"):
        validate_waveform(voiced(1.0), 16000, max_seconds=0.5)
    with pytest.raises(UnreadableAudioError, match="sample rate"):
        validate_waveform(voiced(1.0), 0)
