"""Trim, 3 s windows, looping, augmentation and log-Mel, as PAPER.md steps 2-5 describe them."""
import numpy as np
import pytest

from ser_core.audio.augment import augment, augmented_length
from ser_core.audio.chunks import chunks, n_windows, trim
from ser_core.config import PAPER_FEATURES as C
from ser_core.audio.features import clip_features, log_mel
from tests.helpers import voiced


@pytest.mark.parametrize("seconds,expected", [(1.2, 1), (3.0, 1), (3.2, 2), (7.0, 3), (9.0, 3)])
def test_windows_split_keep_every_remainder_and_loop(seconds, expected):
    y = voiced(seconds, pad=0)[: int(seconds * C.sample_rate)]
    c = chunks(y)
    assert c.shape == (expected, 48000) and n_windows(len(y)) == expected


def test_short_clip_is_tiled_to_exactly_three_seconds():
    y = voiced(1.0, pad=0)
    c = chunks(y)[0]
    assert np.array_equal(c[: len(y)], y) and np.array_equal(c[len(y): 2 * len(y)], y)


def test_trim_removes_leading_and_trailing_silence():
    y = voiced(1.0, pad=0.5)
    t = trim(y)
    assert 0.95 * 16000 < len(t) < 1.2 * 16000


def test_augmentation_lengths():
    y = voiced(2.0, pad=0)
    for kind, value in C.augmentations():
        out = augment(y, kind, value)
        assert len(out) == augmented_length(len(y), kind, value)
    assert len(augment(y, "stretch", 0.75)) == round(len(y) / 0.75)


def test_log_mel_shape_and_db_relative_to_minimum():
    f = log_mel(chunks(voiced(2.0)))
    assert f.shape == (1, 261, 128) and f.dtype == np.float32
    # ref is the spectrogram's own minimum, top_db 80 clamps the floor at max - 80
    assert f.min() >= -1e-4 and f.max() - f.min() <= 80 + 1e-3
    assert clip_features(voiced(7.0)).shape == (3, 261, 128)
