"""Universal perturbations (ser_core/attacks/universal.py): applied at the stated SNR against the
speech on clips of any length, only on the speech span, stored and loaded, refused by name when
not shipped; crafting and the app's calls on the shipped emodb bundle (slow)."""
from __future__ import annotations

import numpy as np
import pytest

from ser_core.attacks.universal import (UniversalPerturbation, apply_universal, load_universal, speech_snr_db,
                                        speech_span)
from ser_core.errors import ParameterError

SR = 16_000


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Silence, a burst of modulated noise (the 'speech'), silence: a span trim finds."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    body = rng.standard_normal(n) * 0.05 * (1 + 0.5 * np.sin(np.arange(n) / 800))
    pad = np.zeros(SR // 4)
    return np.concatenate([pad, body, pad]).astype(np.float32)


@pytest.mark.parametrize("seconds", [0.7, 2.0, 3.0, 4.4, 9.1])
@pytest.mark.parametrize("snr", [20.0, 25.0, 30.0])
def test_applied_at_the_stated_snr_on_clips_shorter_and_longer_than_the_perturbation(seconds, snr):
    delta = np.random.default_rng(5).standard_normal(3 * SR).astype(np.float32)
    y = _speech_like(seconds)
    adv = apply_universal(y, delta, snr)
    assert adv.shape == y.shape and adv.dtype == np.float32
    assert speech_snr_db(y, adv) == pytest.approx(snr, abs=0.05)  # 16-bit rounding only


def test_only_the_speech_span_is_changed_and_the_tile_repeats():
    delta = np.random.default_rng(2).standard_normal(SR).astype(np.float32)
    y = _speech_like(2.5)
    a, b = speech_span(y)
    adv = apply_universal(y, delta, 20.0)
    assert np.abs(adv[:a]).max() == 0 and np.abs(adv[b:]).max() == 0
    d = adv[a:b].astype(np.float64) - y[a:b]
    # tiled: the second period repeats the first (up to 16-bit rounding of the sum)
    assert np.corrcoef(d[:SR], d[SR:2 * SR])[0, 1] > 0.999


def test_save_and_load_keep_the_shape_and_how_it_was_made(tmp_path):
    delta = np.random.default_rng(0).standard_normal(3 * SR).astype(np.float32)
    p = UniversalPerturbation(delta / np.sqrt(np.mean(delta ** 2)), 25.0, "sadness", {"seed": 4, "steps": 9})
    path = p.save(tmp_path)
    assert path.name == "universal-25db-sadness.npz" and path.stat().st_size < 200_000
    q = UniversalPerturbation.load(path)
    assert (q.snr_db, q.target, q.meta["seed"], q.meta["steps"]) == (25.0, "sadness", 4, 9)
    assert np.sqrt(np.mean(q.delta.astype(np.float64) ** 2)) == pytest.approx(1.0, abs=1e-4)
    assert np.corrcoef(q.delta, p.delta)[0, 1] > 0.9999


def test_a_perturbation_not_shipped_is_refused_with_those_shipped(tmp_path):
    class Folder:
        name, folder = "toy", tmp_path
    UniversalPerturbation(np.ones(10, np.float32), 25.0).save(tmp_path)
    with pytest.raises(ParameterError, match="shipped: 25 dB"):
        load_universal(Folder(), 20.0)
    assert load_universal(Folder(), 25.0).snr_db == 25.0


@pytest.mark.slow
def test_crafting_counts_steps_and_stays_unit_rms(bundle):
    from ser_core.attacks.universal import craft_universal
    logged = []
    p = craft_universal(bundle, [_speech_like(1.0, s) for s in range(3)], 25.0, steps=3, batch=2,
                        length=SR, log=lambda step, d: logged.append(step))
    assert p.meta["steps"] == 3 and len(p.delta) == SR and logged == [0]
    assert np.sqrt(np.mean(p.delta.astype(np.float64) ** 2)) == pytest.approx(1.0, abs=1e-4)


@pytest.mark.slow
def test_the_apps_universal_call_on_a_shipped_perturbation(bundle):
    from ser_core.attacks.over_the_air import universal_clip
    from ser_core.attacks.universal import shipped_universal
    shipped = shipped_universal(bundle)
    if not shipped:
        pytest.skip("no universal perturbation shipped with this bundle")
    s = shipped[0]
    y = _speech_like(2.0)
    r = universal_clip(bundle, y, s["snr_db"], s["target"], sample_rate=SR)
    d = r.to_dict()
    assert d["snr_db"] == pytest.approx(s["snr_db"], abs=0.05)
    assert set(d["probabilities_after"]) == set(bundle.labels) and d["flipped"] == (d["label_before"] != d["label_after"])


@pytest.mark.slow
def test_the_apps_room_call_is_seeded_and_reports_the_flip(bundle):
    from ser_core.attacks.over_the_air import through_room
    y = _speech_like(2.0)
    adv = apply_universal(y, np.random.default_rng(0).standard_normal(SR), 10.0)
    a = through_room(bundle, adv, SR, clean=y, seed=3)
    b = through_room(bundle, adv, SR, clean=y, seed=3)
    assert a.room == b.room and a.room["bank"] == "held-out" and np.array_equal(a.audio, b.audio)
    assert a.to_dict()["flip_survived"] == (a.recorded.label != a.clean_recorded.label)


def test_the_command_line_crafts_and_scores():
    from export.cli import build_parser
    a = build_parser().parse_args(["universal", "craft", "--model", "emodb", "--snr", "20", "--target", "neutral",
                                   "--eot-rooms", "8", "--schedule", "cosine"])
    assert (a.snr, a.target, a.eot_rooms, a.schedule, a.steps) == (20.0, "neutral", 8, "cosine", 300)
    b = build_parser().parse_args(["universal", "score", "--model", "emovo", "--corpus", "emodb", "--rooms"])
    assert (b.snr, b.corpus, b.rooms, b.target) == (25.0, "emodb", True, None)
