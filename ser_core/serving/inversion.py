"""Attacked features -> a listening copy: audio you can play, made by inverting the features.

The study listened to its attacked spectrograms the same way (PAPER.md, last section): undo the
standardisation, turn dB back into power, and run Griffin-Lim Mel inversion (Griffin & Lim,
"Signal estimation from modified short-time Fourier transform", IEEE TASSP 1984, through
librosa: Mel -> linear magnitude, then `griffinlim` phase reconstruction). The copy is NOT what
the model saw: inversion loses phase and fine spectral detail, so a flip heard this way
is unverified. That is why `listening_copy` returns the copy's own prediction by the serving path
(written as 16-bit WAV, read back, decoded, featurised, scored with ONNX) beside the prediction of
the clean features inverted the same way, which measures what the inversion alone changes.

dB back to power needs the reference each chunk's features were computed with: `log_mel` uses
`amplitude_to_db(ref=np.min)` on the power Mel spectrogram, the chunk's own smallest Mel power, so the reference is recomputed
from the clip's chunks exactly as the serving path cuts them (trim, 3 s windows, looping)."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np

from ser_core.audio.chunks import chunks as to_chunks, trim, window_pieces
from ser_core.config import FeatureConfig, PAPER_FEATURES
from ser_core.audio.features import mel_power

# librosa.amplitude_to_db's floor (its amin): values below it were clamped before the log
AMIN = 1e-5
GRIFFIN_LIM_ITERATIONS = 32
LABEL = ("listening copy: Griffin-Lim inversion of the attacked log-Mel features; "
         "not the input the model was attacked on")


@dataclass
class ChunkLayout:
    """How the serving path cut a clip: the chunks (n, window) and, per chunk, how many of its
    samples are real audio before looping (the rest repeats them)."""

    chunks: np.ndarray
    piece_lengths: list[int]


def chunk_layout(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> ChunkLayout:
    """The same cut as `features.clip_features` (an all-silent trim falls back to the clip)."""
    trimmed = trim(y, cfg)
    if len(trimmed) == 0:
        trimmed = y
    pieces = window_pieces(trimmed, cfg)
    return ChunkLayout(to_chunks(trimmed, cfg), [min(len(p), cfg.window_samples) for p in pieces])


def db_references(chunks: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(n,) the power each chunk's dB values are relative to: its smallest Mel power."""
    return np.maximum(mel_power(chunks, cfg).min(axis=(1, 2)), AMIN)


def features_to_power(x_std: np.ndarray, standardizer, references: np.ndarray) -> np.ndarray:
    """Standardised (n, frames, bands) -> power Mel spectrograms (n, bands, frames).

    The features come from `amplitude_to_db` applied to the *power* Mel spectrogram (as the
    study's notebooks did), i.e. 20 log10(M / ref), so M = ref * 10 ** (dB / 20)."""
    db = standardizer.inverse(x_std).astype(np.float64)
    return (10.0 ** (db / 20.0) * references[:, None, None]).transpose(0, 2, 1)


@functools.lru_cache(maxsize=4)
def mel_pseudo_inverse(cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """(frequency bins, bands) pseudo-inverse of the Mel filterbank the features used."""
    basis = librosa.filters.mel(sr=cfg.sample_rate, n_fft=cfg.n_fft, n_mels=cfg.n_mels)
    return np.linalg.pinv(basis).astype(np.float32)


def invert_power(mel: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES,
                 n_iter: int = GRIFFIN_LIM_ITERATIONS) -> np.ndarray:
    """(n, bands, frames) power Mel -> (n, window_samples) audio, all chunks in one batch.

    Mel -> linear magnitude by the filterbank's pseudo-inverse clipped at zero: on real clips it
    matches librosa's NNLS (`mel_to_stft`) to a correlation above 0.9999 at a hundredth of the
    cost, which keeps the listening copy inside the app's latency budget."""
    power = np.einsum("fm,nmt->nft", mel_pseudo_inverse(cfg), mel.astype(np.float32))
    magnitude = np.sqrt(np.maximum(power, 0.0))
    # seeded phase start: the same clip gives the same listening copy every time
    out = librosa.griffinlim(magnitude, n_iter=n_iter, hop_length=cfg.hop_length, n_fft=cfg.n_fft,
                             length=cfg.window_samples, random_state=0)
    return np.atleast_2d(out).astype(np.float32)


def stitch(chunk_audio: np.ndarray, layout: ChunkLayout) -> np.ndarray:
    """Chunks back into one clip: each chunk's real (unlooped) part, in order."""
    return np.concatenate([c[:n] for c, n in zip(chunk_audio, layout.piece_lengths)])


def invert_features(feature_sets: list[np.ndarray], y: np.ndarray, bundle,
                    n_iter: int = GRIFFIN_LIM_ITERATIONS) -> list[np.ndarray]:
    """Standardised feature sets of clip y (e.g. clean and attacked, each (n_chunks, frames,
    bands)) -> one clip each, inverted in a single Griffin-Lim batch and peak-matched to y.

    Matching the peak is harmless to the model: features are dB relative to each chunk's own
    minimum, so a gain does not change them (above librosa's floor)."""
    cfg = bundle.feature_config
    layout = chunk_layout(y, cfg)
    n = len(layout.chunks)
    for x in feature_sets:
        if len(x) != n:
            raise ValueError(f"{len(x)} feature chunks for a clip the serving path cuts into {n}")
    refs = db_references(layout.chunks, cfg)
    power = np.concatenate([features_to_power(x, bundle.standardizer, refs) for x in feature_sets])
    audio = invert_power(power, cfg, n_iter)
    target = min(float(np.abs(y).max()), 0.99)
    clips = []
    for i in range(len(feature_sets)):
        clip = stitch(audio[i * n:(i + 1) * n], layout)
        peak = float(np.abs(clip).max())
        clips.append((clip * (target / peak) if peak > 0 else clip).astype(np.float32))
    return clips


def write_wav(path, y: np.ndarray, sample_rate: int) -> Path:
    """16-bit PCM WAV, as a listener downloads it (and as the serving path reads it back)."""
    import soundfile as sf
    path = Path(path)
    sf.write(str(path), np.clip(y, -1.0, 1.0), sample_rate, subtype="PCM_16")
    return path


@dataclass
class ListeningCopy:
    path: Path             # the attacked features inverted, as 16-bit WAV
    clean_path: Path       # the clean features inverted the same way (the inversion's own loss)
    prediction: object     # ClipPrediction of the listening copy, by the serving path
    clean_prediction: object

    def to_dict(self, label_before: str) -> dict:
        return {"method": "griffin-lim mel inversion", "iterations": GRIFFIN_LIM_ITERATIONS,
                "note": LABEL, "label": self.prediction.label,
                "probabilities": self.prediction.probabilities,
                "flipped": self.prediction.label != label_before,
                "clean_inversion_label": self.clean_prediction.label,
                "clean_inversion_probabilities": self.clean_prediction.probabilities}


def listening_copy(bundle, y: np.ndarray, features: np.ndarray, adversarial_features: np.ndarray,
                   out_dir) -> ListeningCopy:
    """Invert clean and attacked features of clip y, write both as WAV, re-score both by the
    serving path (file -> decode -> features -> ONNX)."""
    out_dir = Path(out_dir)
    sr = bundle.feature_config.sample_rate
    clean_audio, adv_audio = invert_features([features, adversarial_features], y, bundle)
    adv = write_wav(out_dir / "attacked_listening_copy.wav", adv_audio, sr)
    clean = write_wav(out_dir / "clean_inverted.wav", clean_audio, sr)
    return ListeningCopy(adv, clean, bundle.predict_clip(adv), bundle.predict_clip(clean))
