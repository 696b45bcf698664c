"""`python -m export attacks` / `attack` and `attack_clip`: listing, a real clip attacked end to
end, files written, bad input refused with exit code 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from export.cli import main
from ser_core.attacks import registry
from ser_core.audio.decode import load_audio
from ser_core.attacks.clip import attack_clip
from ser_core.attacks.waveform.base import to_pcm

REPO = Path(__file__).resolve().parent.parent

SMALL = ["--set", "max_iter=3", "--set", "init_steps=4"]  # a quick Boundary run


@pytest.fixture(scope="module")
def clip(data_dir):
    """A real EmoDB utterance of 5.1 s, so it has two chunks."""
    return data_dir / "emodb" / "wav" / "03b02Tb.flac"


def test_attacks_lists_every_registered_attack_of_both_domains_with_its_parameters(capsys):
    assert main(["attacks"]) == 0
    listed = {a["name"]: a for a in json.loads(capsys.readouterr().out)}
    both = {**registry("features"), **registry("waveform")}
    assert set(listed) == set(both) and {"fgsm", "pixel", "apgd", "square"} <= set(listed)
    for name, cls in both.items():
        assert listed[name]["domain"] == cls.domain
        assert set(listed[name]["params"]) == set(cls.params)
        assert listed[name]["kind"] in ("white-box", "black-box")
        for p, spec in listed[name]["params"].items():
            assert spec["default"] == cls.params[p].default
    assert listed["pixel"]["paper_settings"] == [{"th": t, "max_iter": 20} for t in (1, 5, 10)]


def test_attack_prints_the_result_and_writes_features(bundle, clip, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["attack", "--model", str(bundle.folder), "--attack", "boundary", *SMALL,
                 "--out", str(out), str(clip)]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("model", "attack", "params", "label_before", "label_after", "probabilities_before",
                "probabilities_after", "flipped", "chunks", "chunks_flipped", "mean_perturbation",
                "l2", "linf", "changed_cells", "queries", "seconds"):
        assert key in d
    assert d["attack"] == "boundary" and d["params"]["max_iter"] == 3
    assert d["label_before"] == bundle.predict_clip(clip).label
    assert set(d["probabilities_after"]) == set(bundle.labels)
    clean, adv = np.load(out / "clean.npy"), np.load(out / "adversarial.npy")
    assert clean.shape == adv.shape == (d["chunks"], 261, 128)
    probs = bundle.predict_features(adv).mean(0)
    assert bundle.labels[int(probs.argmax())] == d["label_after"]
    # Boundary returns adversarial chunks, and a chunk without an adversarial start unchanged
    changed = np.abs(adv - clean).reshape(len(adv), -1).max(1) > 0
    assert d["chunks_flipped"] == int(changed.sum()) >= 1
    assert d["mean_perturbation"] == pytest.approx(np.abs(adv - clean).mean(), rel=1e-4)
    assert json.loads((out / "result.json").read_text())["label_after"] == d["label_after"]


def test_waveform_attack_writes_the_wav_and_prints_the_serving_paths_decision_on_it(bundle, tmp_path, capsys):
    # a 1.9 s example clip (no corpus needed) that PGD flips on emodb within 30 dB SNR (the
    # default emodb weights 2da91868 flip 5 of the 6 example clips; not ravdess-disgust-actor02f)
    clip = REPO / "examples" / "ravdess-happiness-actor02f.wav"
    out = tmp_path / "wave"
    assert main(["attack", "--model", str(bundle.folder), "--attack", "pgd", "--domain", "waveform",
                 "--set", "snr_db=30", "--set", "steps=40", "--set", "step_fraction=0.1",
                 "--out", str(out), str(clip)]) == 0
    d = json.loads(capsys.readouterr().out)
    wav = Path(d["wav_path"])
    assert wav.parent == out and wav.is_file() and sf.info(str(wav)).subtype == "PCM_16"
    reread = bundle.predict_clip(wav)  # the serving path on the file as written
    assert d["label_after"] == reread.label
    assert d["probabilities_after"] == pytest.approx(reread.probabilities, abs=1e-6)
    assert d["label_before"] == bundle.predict_clip(clip).label
    assert d["verified_flipped"] is True and d["label_after"] != d["label_before"]
    written, _ = sf.read(str(wav), dtype="int16")
    noise = written.astype(np.int64) - to_pcm(load_audio(clip)).astype(np.int64)
    assert 0 < np.abs(noise).max() == d["linf_16bit"] <= d["extra"]["eps_16bit"]
    assert d["snr_db"] >= 30.0 and d["params"]["steps"] == 40
    assert json.loads((out / "result.json").read_text())["label_after"] == d["label_after"]


@pytest.mark.parametrize("args, message", [
    (["--attack", "nope"], "unknown attack 'nope' (accepted: apgd, bim, boundary"),
    (["--attack", "apgd", "--domain", "features"], "apgd is a waveform attack, not a features one"),
    (["--attack", "deepfool", "--target", "sadness"], "deepfool has no targeted mode"),
    (["--attack", "pixel", "--set", "th=0"], "th=0 is outside [1, 1000]"),
    (["--attack", "pixel", "--set", "th"], "NAME=VALUE"),
    (["--attack", "boundary", "--set", "persist=maybe"], "accepted: true, false"),
    (["--attack", "pgd", "--eot", "4"], "--eot: pgd has no EOT (accepted: apgd)"),
    (["--attack", "apgd", "--eot", "4", "--set", "eot=2"], "disagree"),
    (["--attack", "apgd", "--eot", "99"], "eot=99 is outside [0, 64]"),
])
def test_bad_attack_arguments_exit_2_with_a_message(bundle, clip, capsys, args, message):
    assert main(["attack", "--model", str(bundle.folder), *args, str(clip)]) == 2
    err = json.loads(capsys.readouterr().err)
    assert err["error"] == "ParameterError" and message in err["message"]


def test_attack_clip_on_a_waveform_array(bundle, clip):
    y = load_audio(clip)
    stereo_int16 = (np.stack([y, y], 1) * 20000).astype(np.int16)  # (samples, channels) as Gradio gives
    res = attack_clip(bundle, stereo_int16, "boundary", {"max_iter": 2, "init_steps": 4}, sample_rate=16000)
    assert res.features.shape[0] == res.adversarial_features.shape[0] == len(bundle.features(y))
    assert res.before.label == bundle.predict_clip(clip).label
    assert res.flipped == (res.before.label != res.after.label)
    d = res.to_dict()
    assert d["chunks"] == len(res.features) and d["queries"] == int(res.chunk_result.queries.sum()) > 0
    json.dumps(d)  # JSON-ready


def test_waveform_attack_lands_on_a_target_emotion(bundle, tmp_path, capsys):
    clip = REPO / "examples" / "ravdess-disgust-actor02f.wav"
    probs = bundle.predict_clip(clip).probabilities
    target = sorted(probs, key=probs.get)[-2]  # the runner-up: the nearest target
    assert main(["attack", "--model", str(bundle.folder), "--attack", "apgd", "--domain", "waveform",
                 "--set", "snr_db=20", "--target", target, "--out", str(tmp_path), str(clip)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["target"] == target and d["target_reached"] is True
    assert bundle.predict_clip(d["wav_path"]).label == target and d["snr_db"] >= 20.0


def test_eot_option_runs_a_waveform_attack_over_training_rooms(bundle, tmp_path, capsys):
    """--eot N is the attack's eot parameter (the loss averaged over N training rooms a step)."""
    clip = REPO / "examples" / "ravdess-happiness-actor02f.wav"
    assert main(["attack", "--model", str(bundle.folder), "--attack", "apgd", "--eot", "2", "--set", "steps=3",
                 "--set", "snr_db=20", "--out", str(tmp_path), str(clip)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["params"]["eot"] == 2 and d["params"]["eot_space"] == "room"
    assert 1 <= d["extra"]["iterations"] <= 3 and d["verified_flipped"] == (d["label_after"] != d["label_before"])
    assert sf.info(d["wav_path"]).subtype == "PCM_16" and d["snr_db"] >= 20.0
