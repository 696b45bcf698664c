"""Audio file -> decoded clip: mono float32 at the feature sample rate, validated.

Every way audio enters the project (corpus readers, CLI, app, API) goes through
`load_audio` or `validate_waveform`, so bad input fails here with a typed error that names the
source and the problem."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ser_core.config import PAPER_FEATURES
from ser_core.errors import (EmptyAudioError, NonFiniteAudioError, SilentAudioError,
                     TooLongAudioError, TooShortAudioError, UnreadableAudioError)

MIN_SECONDS = 0.25
# Peak below this (full scale = 1.0) is treated as silence: -80 dBFS.
SILENCE_PEAK = 1e-4
ACCEPTED = "WAV, FLAC, OGG or MP3 files, mono or multi-channel, any sample rate"


def load_audio(path, sample_rate: int = PAPER_FEATURES.sample_rate,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode `path` to mono float32 at `sample_rate` (channels averaged, soxr_hq resampling)."""
    path = Path(path)
    if not path.is_file():
        raise UnreadableAudioError(path, "file does not exist", ACCEPTED)
    try:
        import soundfile as sf
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
        data = data.T  # (channels, samples)
    except Exception:  # formats libsndfile does not read (e.g. some MP3): let librosa try
        try:
            import librosa
            data, sr = librosa.load(str(path), sr=None, mono=False)
            data = np.atleast_2d(data).astype(np.float32)
        except Exception as exc:
            raise UnreadableAudioError(path, f"cannot be decoded as audio ({type(exc).__name__})",
                                       ACCEPTED) from None
    return validate_waveform(data, sr, source=path, sample_rate=sample_rate,
                             max_seconds=max_seconds)


def validate_waveform(data, sr: int, source="<array>",
                      sample_rate: int = PAPER_FEATURES.sample_rate,
                      max_seconds: float | None = None,
                      min_seconds: float = MIN_SECONDS) -> np.ndarray:
    """Check and normalise an in-memory waveform.

    data: (samples,), (channels, samples) or (samples, channels) when channels <= 8 is the
    smaller axis; integer PCM is scaled to [-1, 1]. Returns mono float32 at `sample_rate`."""
    a = np.asarray(data)
    if not isinstance(sr, (int, np.integer)) or not 1000 <= int(sr) <= 384_000:
        raise UnreadableAudioError(source, f"sample rate {sr!r} is not usable",
                                   "an integer rate between 1000 and 384000 Hz")
    if a.dtype.kind not in "iuf":
        raise UnreadableAudioError(source, f"samples of type {a.dtype} are not audio", ACCEPTED)
    if a.dtype.kind in "iu":
        info = np.iinfo(a.dtype)
        a = (a.astype(np.float64) - (info.max + info.min + 1) / 2) / (info.max + 1)
    if a.size == 0:
        raise EmptyAudioError(source, "no samples", f"at least {min_seconds} s of speech")
    if a.ndim == 2:
        if a.shape[0] > a.shape[1]:  # (samples, channels) as Gradio and soundfile give it
            a = a.T
        if a.shape[0] > 8:
            raise UnreadableAudioError(source, f"{a.shape[0]} channels", "1 to 8 channels")
        a = a.mean(axis=0)
    elif a.ndim != 1:
        raise UnreadableAudioError(source, f"array of shape {a.shape} is not a waveform",
                                   "1-D samples or 2-D (channels, samples)")
    if a.size == 0:
        raise EmptyAudioError(source, "no samples", f"at least {min_seconds} s of speech")
    if not np.all(np.isfinite(a)):
        raise NonFiniteAudioError(source, f"{int(np.sum(~np.isfinite(a)))} samples are NaN or "
                                  "infinite", "finite samples")
    seconds = a.size / int(sr)
    if seconds < min_seconds:
        raise TooShortAudioError(source, f"{seconds:.3f} s long", f"at least {min_seconds} s")
    if max_seconds is not None and seconds > max_seconds:
        raise TooLongAudioError(source, f"{seconds:.1f} s long", f"at most {max_seconds:g} s")
    if np.max(np.abs(a)) < SILENCE_PEAK:
        raise SilentAudioError(source, "silent (peak below -80 dBFS)", "audio with speech in it")
    a = a.astype(np.float32)
    if int(sr) != sample_rate:
        import librosa
        a = librosa.resample(a, orig_sr=int(sr), target_sr=sample_rate, res_type="soxr_hq")
    return np.ascontiguousarray(a, dtype=np.float32)
