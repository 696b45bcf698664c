"""Auto-PGD on the waveform, targeted mode, the masking threshold and held-out clip selection:
budgets kept, exact query counts, targets reached on the written WAV, lower margins than PGD
where PGD stalls, cooperative stopping."""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from ser_core.audio.decode import load_audio
from ser_core.control import run_control
from ser_core.errors import ParameterError
from ser_core.attacks import get_attack
from ser_core.attacks.clip import attack_clip
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.attacks.waveform.apgd import checkpoints, dlr
from ser_core.attacks.objective import Objective
from ser_core.attacks.waveform.base import PCM_MAX, PCM_MIN, ClipModel, ServingPath, from_pcm, to_pcm
from ser_core.audio.chunkmap import trim_guard
from ser_core.attacks.waveform.masking import MaskingThreshold


@pytest.fixture()
def own_bundle():
    """A bundle object of its own (the shipped emodb), so that no other test's use of the shared
    session bundle (sessions, threads, model state) can move these attack trajectories."""
    from ser_core.models.bundle import ModelBundle
    return ModelBundle.load("emodb")


def clip(data_dir, name):
    return data_dir / "emodb" / "wav" / name


def prepared(bundle, path):
    """(16-bit samples, clean label index, index map) of a clip, as attack_clip makes them for the waveform domain."""
    pcm = to_pcm(load_audio(path))
    label = bundle.labels.index(bundle.predict_clip(from_pcm(pcm), 16000).label)
    return pcm, label, chunk_index_map(from_pcm(pcm), bundle.feature_config)


def model_margin(bundle, pcm, objective, index_map) -> float:
    with torch.no_grad():
        return objective.margin(ClipModel(bundle, index_map)(torch.from_numpy(pcm).float()[None]))[0].item()


def test_checkpoints_follow_the_paper():
    # p = 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99, then the last step
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99, 100]
    assert checkpoints(10) == [2, 3, 4, 5, 6, 7, 8, 9, 10]


def test_objective_margins_agree_on_the_model_and_the_serving_path():
    probs = np.array([[0.5, 0.3, 0.1, 0.05, 0.05], [0.1, 0.2, 0.6, 0.05, 0.05]])
    lp = torch.log(torch.from_numpy(probs))
    for objective, reached in [(Objective([0]), [False, True]), (Objective([0], [2]), [False, True]),
                               (Objective([0], [1]), [False, False])]:
        torch_m = objective.margin(lp).numpy()
        assert np.allclose(torch_m, objective.serving_margin(probs))
        assert (torch_m < 0).tolist() == reached
        assert [objective.reached(int(p.argmax())) for p in probs] == reached


def test_dlr_is_negative_exactly_when_the_objective_is_reached():
    lp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.5, 0.1, -1.0], [0.0, 3.0, 0.5, 0.1, -1.0]]), 1)
    assert (dlr(lp, Objective([0])) < 0).tolist() == [False, True]
    assert (dlr(lp, Objective([0], [1])) < 0).tolist() == [False, True]
    assert (dlr(lp, Objective([1], [2])) < 0).tolist() == [False, False]


@pytest.mark.parametrize("params", [{"budget": "linf", "eps_16bit": 40}, {"budget": "linf", "snr_db": 35},
                                    {"snr_db": 35}, {"budget": "masking", "snr_db": 35}])
def test_apgd_never_leaves_its_budget_or_the_16_bit_range(bundle, data_dir, params):
    """A clip scaled to full scale (peaks at +-32767), so the 16-bit range binds too."""
    pcm, label, index_map = prepared(bundle, clip(data_dir, "12a01Lb.flac"))
    loud = np.round(pcm * (PCM_MAX / np.abs(pcm).max()))
    label = bundle.labels.index(bundle.predict_clip(from_pcm(loud), 16000).label)
    index_map = chunk_index_map(from_pcm(loud), bundle.feature_config)
    runner = get_attack("apgd", bundle, domain="waveform", **{**params, "steps": 6})
    adv, queries, extra = runner._attack_clip(loud, Objective([label]), index_map, lambda *a: None)
    assert np.array_equal(adv, np.round(adv)) and adv.min() >= PCM_MIN and adv.max() <= PCM_MAX
    diff = adv - loud
    if params.get("budget") == "linf":
        assert np.abs(diff).max() <= extra["eps_16bit"]
        if "eps_16bit" in params:
            assert extra["eps_16bit"] == 40
    if "snr_db" in params:
        snr = 10 * np.log10(np.sum(loud ** 2) / np.sum(diff ** 2))
        assert snr >= params["snr_db"]
    assert np.all(diff[trim_guard(from_pcm(loud))] == 0)  # trim bounds untouched
    assert extra["iterations"] <= 6


@pytest.mark.slow
def test_apgd_counts_every_forward_pass_and_serving_scoring(bundle, data_dir, tmp_path, monkeypatch):
    forwards, scored = [], []
    chunk_log_probs = ClipModel.chunk_log_probs
    monkeypatch.setattr(ClipModel, "chunk_log_probs", lambda self, x: forwards.append(1) or chunk_log_probs(self, x))
    serve = ServingPath.__call__
    monkeypatch.setattr(ServingPath, "__call__", lambda self, p: scored.append(len(np.atleast_2d(p))) or serve(self, p))
    for name, params in [("12b03Ta.flac", {"snr_db": 40, "steps": 8}),   # runs all its steps
                         ("13b10La.flac", {"snr_db": 30, "steps": 8})]:  # stops at a verified flip
        forwards.clear(), scored.clear()
        r = attack_clip(bundle, clip(data_dir, name), "apgd", params, out_dir=tmp_path, domain="waveform")
        # every clip the counted serving path scored (the clean clip's decision and the written
        # WAV's verification are not queries, and do not go through it)
        assert r.queries == len(forwards) + sum(scored)
        assert len(forwards) == r.extra["iterations"] <= 8
    assert r.flipped and len(forwards) < 8


@pytest.mark.slow
def test_apgd_reaches_a_lower_margin_than_pgd_where_pgd_stalls(own_bundle, data_dir):
    """The held-out EmoDB clip the shipped model is surest of (08b02Ff, happiness, margin 3.2):
    PGD's fixed step stalls near margin 0.9 at 30 dB SNR; APGD, held to the same SNR and the same
    40 gradient steps, gets far lower (to a flip, -0.01, when measured)."""
    pcm, label, index_map = prepared(own_bundle, clip(data_dir, "08b02Ff.flac"))
    objective = Objective([label])
    runs = {name: get_attack(name, own_bundle, domain="waveform", **params)._attack_clip(pcm, objective, index_map, lambda *a: None)
            for name, params in [("pgd", {"snr_db": 30, "steps": 40, "step_fraction": 0.1}),
                                 ("apgd", {"snr_db": 30, "steps": 40})]}
    margins = {}
    for name, (adv, queries, extra) in runs.items():
        assert extra["iterations"] == 40 if name == "pgd" else extra["iterations"] <= 40
        assert 10 * np.log10(np.sum(pcm ** 2) / np.sum((adv - pcm) ** 2)) >= 30
        margins[name] = model_margin(own_bundle, adv, objective, index_map)
    assert margins["pgd"] > 0.5
    assert margins["apgd"] < margins["pgd"] - 0.5
    assert margins["apgd"] == pytest.approx(runs["apgd"][2]["final_margin"], abs=1e-3)


def test_apgd_keeps_the_chunking_of_a_short_clip(bundle, data_dir, tmp_path):
    """12a01Lb (1.9 s, looped to 3 s): perturbing samples next to its trim bounds shifted the
    looping and lost the flip on the written WAV; APGD leaves them clean and its flip holds."""
    r = attack_clip(bundle, clip(data_dir, "12a01Lb.flac"), "apgd", {"snr_db": 40, "steps": 10},
                    out_dir=tmp_path, domain="waveform")
    assert r.chunking_unchanged and r.flipped and r.snr_db >= 40


@pytest.mark.parametrize("attack, params", [("apgd", {"snr_db": 15, "steps": 20}),
                                            ("pgd", {"snr_db": 15, "steps": 20, "step_fraction": 0.1})])
@pytest.mark.parametrize("target", ["sadness", "neutral"])
def test_targeted_attacks_land_on_the_target_on_the_written_wav(own_bundle, data_dir, tmp_path, attack, params, target):
    r = attack_clip(own_bundle, clip(data_dir, "08a07La.flac"), attack, params, out_dir=tmp_path, target=target, domain="waveform")
    assert r.label_before == "boredom"
    assert r.target == target and r.target_reached and r.label_after == target
    assert own_bundle.predict_clip(r.wav_path).label == target
    assert r.to_dict()["target_reached"] is True


def test_a_clip_already_on_the_target_is_returned_unchanged(bundle, data_dir, tmp_path):
    r = attack_clip(bundle, clip(data_dir, "08a07La.flac"), "apgd", {"snr_db": 30},
                    out_dir=tmp_path, target="boredom", domain="waveform")
    assert r.target_reached and not r.flipped and r.queries == 0 and r.snr_db == np.inf


def test_an_unknown_target_is_refused_with_the_accepted_ones(bundle):
    with pytest.raises(ParameterError, match="accepted: boredom, disgust, happiness, sadness, neutral"):
        attack_clip(bundle, "does-not-matter.wav", "apgd", {}, target="anger", domain="waveform")


def test_apgd_stops_when_cancelled_and_returns_its_best_clip(bundle, data_dir):
    pcm, label, index_map = prepared(bundle, clip(data_dir, "12b03Ta.flac"))
    cancel = threading.Event()
    cancel.set()
    with run_control(cancel=cancel):
        adv, queries, extra = get_attack("apgd", bundle, domain="waveform", snr_db=40, steps=40) \
            ._attack_clip(pcm, Objective([label]), index_map, lambda *a: None)
    assert extra["stopped"] == "cancelled" and extra["iterations"] == 1 and adv.shape == pcm.shape


@pytest.mark.parametrize("params, message", [
    ({"budget": "l2", "eps_16bit": 8}, "eps_16bit bounds the linf budget"),
    ({"budget": "masking", "eps_16bit": 8}, "eps_16bit bounds the linf budget"),
    ({"budget": "l1"}, "accepted: l2, linf, masking"),
    ({"loss": "hinge"}, "accepted: margin, dlr, ce"),
    ({"steps": 0}, "steps"),
])
def test_bad_apgd_parameters_raise(bundle, params, message):
    with pytest.raises(ParameterError, match=message):
        get_attack("apgd", bundle, domain="waveform", **params)


def test_masking_threshold_is_highest_around_a_tone_and_reports_a_perturbation():
    sr = 16000
    t = np.arange(sr) / sr
    tone = np.round(8000 * np.sin(2 * np.pi * 1000 * t))
    mask = MaskingThreshold.of(tone, sr)
    th = mask.threshold_db[:, 5:-5].mean(1)
    bin_1k = round(1000 * 2048 / sr)
    assert th.argmax() in range(bin_1k - 3, bin_1k + 4)
    assert th[bin_1k] > th[round(4000 * 2048 / sr)] + 20  # 4 kHz is far above the tone's spread
    assert mask.report(np.zeros_like(tone))["mask_exceeded_fraction"] == 0.0
    rng = np.random.default_rng(0)
    loud = mask.report(rng.normal(0, 2000, sr))
    quiet = mask.report(rng.normal(0, 2, sr))
    assert loud["mask_exceeded_fraction"] > 0.5 and loud["pmr_p95_db"] > 0
    assert quiet["pmr_p95_db"] < loud["pmr_p95_db"] - 50  # 60 dB less noise power


def test_held_out_clips_are_unseen_speakers_balanced_and_seeded(bundle, data_dir):
    from ser_core.data.held_out import held_out_clips
    clips = held_out_clips(bundle, 20, seed=3, data_dir=data_dir)
    trained = set(bundle.config["split"]["speakers"]["train"])
    assert len(clips) == 20 and not {u.speaker for u in clips} & trained
    # as balanced as the (gender, class) cells allow: no cell more than one clip ahead of a cell
    # that still had clips to give (emodb's held-out speaker 08 recorded no disgust, 03 one)
    from ser_core.data.corpora import read_corpus
    pool = Counter((u.gender, u.emotion) for u in read_corpus("emodb", data_dir / "emodb").utterances
                   if u.speaker not in trained)
    cells = Counter((u.gender, u.emotion) for u in clips)
    open_cells = [c for c in pool if cells[c] < pool[c]]  # cells with clips left to take
    assert max(cells.values()) - min(cells[c] for c in open_cells) <= 1
    assert abs(Counter(u.gender for u in clips)["male"] - 10) <= 1
    assert [u.path for u in held_out_clips(bundle, 20, seed=3, data_dir=data_dir)] == [u.path for u in clips]
    assert len({u.path for u in clips}) == 20
