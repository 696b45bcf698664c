"""The torch front-end computes the serving path's features (librosa log-Mel + standardiser)
within its stated tolerance, and passes gradients to the waveform."""
from __future__ import annotations

import numpy as np
import torch

from ser_core.audio.decode import load_audio
from ser_core.audio.chunks import chunks, trim
from ser_core.audio.features import log_mel
from ser_core.audio.frontend import DB_TOLERANCE, STANDARDISED_TOLERANCE, LogMelFrontEnd


def real_chunks(data_dir, n_clips=4):
    files = sorted((data_dir / "emodb").rglob("*.flac"))[::50][:n_clips]
    return np.concatenate([chunks(trim(load_audio(f))) for f in files])


def test_log_mel_matches_librosa_on_real_chunks(data_dir):
    x = real_chunks(data_dir)
    with torch.no_grad():
        ours = LogMelFrontEnd().log_mel(torch.from_numpy(x)).numpy()
    ref = log_mel(x)
    assert ours.shape == ref.shape == (len(x), 261, 128)
    assert np.abs(ours - ref).max() <= DB_TOLERANCE
    # dB relative to each chunk's own minimum (0 dB), floored at the chunk's maximum - 80 dB
    lo, hi = ours.min(axis=(1, 2)), ours.max(axis=(1, 2))
    assert np.allclose(lo, np.maximum(0.0, hi - 80.0), atol=DB_TOLERANCE)


def test_standardised_features_match_serving_path(bundle, data_dir):
    x = real_chunks(data_dir)
    with torch.no_grad():
        ours = LogMelFrontEnd.for_bundle(bundle)(torch.from_numpy(x)).numpy()
    assert np.abs(ours - bundle.standardizer.transform(log_mel(x))).max() <= STANDARDISED_TOLERANCE


def test_gradients_reach_the_waveform(bundle, data_dir):
    x = torch.from_numpy(real_chunks(data_dir, 1)[:1]).requires_grad_(True)
    logits = bundle.torch_model()(LogMelFrontEnd.for_bundle(bundle)(x))
    logits[0, 0].backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad != 0).sum() > 0.5 * x.numel()
