"""Waveform attacks: chunking as an index map, budgets kept, verified flips on written WAVs,
black-box attacks that never touch torch and count their queries exactly, bad parameters."""
from __future__ import annotations

import json

import numpy as np
import pytest

from export.cli import main as cli
from ser_core.audio.decode import load_audio
from ser_core.models.bundle import ModelBundle
from ser_core.audio.chunks import chunks, trim
from ser_core.errors import ParameterError
from ser_core.attacks.clip import attack_clip
from ser_core.attacks.waveform import snr_db
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.attacks.waveform.base import to_pcm


def predicted_by_cli(bundle, capsys, *paths) -> list[str]:
    """The labels `python -m export predict` prints for audio files, as a user would read them."""
    capsys.readouterr()
    assert cli(["predict", "--model", str(bundle.folder), *map(str, paths)]) == 0
    return [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]


@pytest.fixture(scope="module")
def test_clips(bundle, data_dir):
    """Clips of the bundle's held-out test speakers, shortest first (cheap to attack)."""
    speakers = tuple(bundle.held_out_speakers)
    files = [f for f in sorted((data_dir / "emodb").rglob("*.flac")) if f.name.startswith(speakers)]
    return sorted(files, key=lambda f: f.stat().st_size)


def test_index_map_reproduces_the_serving_chunks(data_dir):
    files = sorted((data_dir / "emodb").rglob("*.flac"))
    long_ones = sorted(files, key=lambda f: -f.stat().st_size)[:2]  # split into pieces, re-trimmed
    for f in files[::60] + long_ones:
        y = load_audio(f)
        m = chunk_index_map(y)
        assert np.array_equal(y[m], chunks(trim(y)))
    assert chunk_index_map(load_audio(long_ones[0])).shape[0] >= 2


def test_pgd_keeps_its_budget_and_its_flip_is_verified(bundle, test_clips, tmp_path, capsys):
    flips = 0
    for f in test_clips[:3]:
        r = attack_clip(bundle, f, "pgd", {"snr_db": 15, "steps": 4, "step_fraction": 0.5},
                        out_dir=tmp_path, domain="waveform")
        assert r.snr_db >= 15.0
        assert r.extra["eps_16bit"] >= r.linf_16bit > 0
        clean = to_pcm(load_audio(f))
        assert np.abs(to_pcm(r.adversarial_audio) - clean).max() == r.linf_16bit
        assert snr_db(clean / 32768, r.adversarial_audio) == pytest.approx(r.snr_db)
        # the written WAV, read back by `export predict`, carries label_after; the clean file label_before
        assert predicted_by_cli(bundle, capsys, f, r.wav_path) == [r.label_before, r.label_after]
        flips += r.flipped
        if flips:
            break
    assert flips >= 1
    d = r.to_dict()
    assert {"model", "attack", "params", "label_before", "probabilities_before", "label_after",
            "probabilities_after", "verified_flipped", "flipped_before_quantisation", "snr_db",
            "linf_16bit", "l2", "queries", "seconds", "wav_path"} <= set(d)


def test_pgd_budget_in_16bit_units(bundle, test_clips, tmp_path):
    r = attack_clip(bundle, test_clips[0], "pgd", {"eps_16bit": 3, "steps": 1}, out_dir=tmp_path, domain="waveform")
    assert r.linf_16bit <= 3
    # one forward pass of the clip model, and one serving-path scoring if the model saw a flip
    assert r.extra["iterations"] == 1 and r.queries == 1 + int(r.extra["model_flipped"])
    assert r.sample_rate == 16000
    assert r.adversarial_audio.dtype == np.float32


def test_black_box_attack_never_loads_torch_and_counts_queries(test_clips, tmp_path, monkeypatch):
    import os
    fresh = ModelBundle.load(os.environ.get("SER_TEST_MODEL", "emodb"))
    scored = []
    features = fresh.features
    monkeypatch.setattr(fresh, "features", lambda y: scored.append(1) or features(y))
    r = attack_clip(fresh, test_clips[0], "square",
                    {"eps_16bit": 200, "max_queries": 9, "population": 4}, out_dir=tmp_path, domain="waveform")
    assert fresh._torch is None
    # every clip the serving path scored, once: the clean one and the attack's queries (the
    # written WAV holds a scored candidate's samples, whose features verify.serving_features kept)
    assert len(scored) == r.queries + 1
    assert 1 <= r.queries <= 9
    assert r.linf_16bit <= 200


def test_square_flips_a_clip_querying_only_the_serving_path(data_dir, tmp_path, monkeypatch):
    """A held-out EmoDB clip (speaker 13, boredom) that the black-box search flips within
    20 dB SNR; every serving-path scoring is one counted query."""
    import os
    fresh = ModelBundle.load(os.environ.get("SER_TEST_MODEL", "emodb"))
    scored = []
    features = fresh.features
    monkeypatch.setattr(fresh, "features", lambda y: scored.append(1) or features(y))
    r = attack_clip(fresh, data_dir / "emodb" / "wav" / "13b10La.flac", "square",
                    {"snr_db": 20, "max_queries": 300}, out_dir=tmp_path, domain="waveform")
    assert fresh._torch is None
    assert len(scored) == r.queries + 1 and r.queries < 300  # stopped at its first flip (the WAV: a kept candidate)
    assert r.flipped and r.label_after != r.label_before
    assert fresh.predict_clip(r.wav_path).label == r.label_after
    assert r.snr_db >= 20.0 and r.linf_16bit == r.extra["eps_16bit"]  # on the vertices of the ball
    assert r.extra["final_margin"] < 0
    json.dumps(r.to_dict())  # JSON-ready, as the CLI and the evaluation write it


def test_square_windows_hold_the_clips_own_signs_in_one_band():
    from ser_core.attacks.waveform.square import band_signs
    sr = 16000
    tone = np.sin(2 * np.pi * 1000 * np.arange(sr) / sr)
    signs = band_signs(tone, sr, 8)
    assert signs.shape == (8, sr) and set(np.unique(signs)) <= {-1.0, 1.0}
    agree = (signs == np.where(tone < 0, -1.0, 1.0)).mean(1)
    assert (agree > 0.99).sum() == 1  # the band holding 1 kHz; the others carry no tone


def test_waveform_input_needs_its_sample_rate(bundle):
    with pytest.raises(ParameterError, match="sample_rate"):
        attack_clip(bundle, np.zeros(16000, np.float32), "pgd", domain="waveform")


@pytest.mark.parametrize("attack, params, message", [
    ("fgsm", {}, r"fgsm is a features attack, not a waveform one"),
    ("pgd", {"snr_db": 120}, "snr_db"),
    ("pgd", {"eps_16bit": 0}, "eps_16bit"),
    ("pgd", {"snr_db": 30, "eps_16bit": 8}, "not both"),
    ("pgd", {"epsilon": 0.1}, "unknown parameters"),
    ("square", {"max_queries": 0}, "max_queries"),
    ("cw", {"binary_steps": "many"}, "binary_steps"),
])
def test_bad_parameters_raise(bundle, attack, params, message):
    with pytest.raises(ParameterError, match=message):
        attack_clip(bundle, "does-not-matter.wav", attack, params, domain="waveform")
