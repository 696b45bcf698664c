"""The study's constants in one frozen place (Facchinetti et al. 2024, ../shared/PAPER.md).

`FeatureConfig` fixes how audio becomes model input; `TrainConfig` how a model is trained.
Both are frozen dataclasses: a run records them in its bundle and the feature cache is keyed
by them, so a change of any constant yields a new cache entry and a new bundle config."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureConfig:
    """Preprocessing of the study, steps 1-5 of PAPER.md."""

    sample_rate: int = 16_000
    # librosa.effects.trim parameters
    trim_top_db: float = 30.0
    trim_frame_length: int = 512
    trim_hop_length: int = 64
    # 3 s windows
    window_seconds: float = 3.0
    # augmentation: nine versions of each clip (the original plus these eight)
    pitch_steps: tuple[float, ...] = (-3.0, -1.5, 1.5, 3.0)
    stretch_rates: tuple[float, ...] = (0.75, 0.9, 1.1, 1.25)
    # log-Mel
    n_fft: int = 368
    hop_length: int = 184
    n_mels: int = 128
    db_top_db: float = 80.0

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        # librosa centres frames: 1 + n // hop
        return 1 + self.window_samples // self.hop_length

    @property
    def input_shape(self) -> tuple[int, int]:
        """(frames, bands): 261 x 128 for the study."""
        return (self.n_frames, self.n_mels)

    def augmentations(self) -> list[tuple[str, float | None]]:
        """('none', None), ('pitch', steps)..., ('stretch', rate)... in a fixed order."""
        return ([("none", None)] + [("pitch", s) for s in self.pitch_steps]
                + [("stretch", r) for r in self.stretch_rates])

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureConfig":
        d = dict(d)
        for k in ("pitch_steps", "stretch_rates"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def key(self) -> str:
        return stable_hash(self.to_dict())


PAPER_FEATURES = FeatureConfig()


@dataclass(frozen=True)
class TrainConfig:
    """Training recipe of the study; the per-corpus values are its tuned hyperparameters."""

    dropout: float = 0.3
    lstm_input_dropout: float = 0.2
    learning_rate: float = 1e-3
    batch_size: int = 32
    max_epochs: int = 100
    validation_fraction: float = 0.2
    early_stopping_patience: int = 10
    lr_plateau_patience: int = 6
    lr_plateau_factor: float = 0.1
    lr_plateau_min_delta: float = 1e-4
    seed: int = 1938

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


PAPER_TRAIN = {
    "emodb": TrainConfig(dropout=0.3, lstm_input_dropout=0.2, learning_rate=1e-3, batch_size=32),
    "emovo": TrainConfig(dropout=0.3, lstm_input_dropout=0.0, learning_rate=1e-4, batch_size=8),
    "ravdess": TrainConfig(dropout=0.6, lstm_input_dropout=0.2, learning_rate=1e-3, batch_size=128),
}

PAPER_SEED = 1938
PAPER_TEST_FRACTION = 0.2


def stable_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
