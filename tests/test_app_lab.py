"""The app's universal mode and room switch (ser_core/serving/over_the_air.py, app_lab.py): the
shipped perturbation is added at the stated SNR and the decision after is the one the library
measures on the same samples; rooms are seeded; bad parameters are typed errors before any
audio work; and the same through gradio_client on a served app (/universal, /room)."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from tests.test_app_api import MODEL, REPO, running_app

# as measured with the emodb bundle's universal-25db.npz: the first flips (disgust -> happiness),
# the second does not (happiness stays); other models: the test compares with the library only
FLIPS = REPO / "examples" / "ravdess-happiness-actor01m.wav"
STAYS = REPO / "examples" / "ravdess-happiness-actor02f.wav"


def _expected(bundle, path, snr=25.0, target=None):
    """The decision before and after, computed here from the shipped file and the library."""
    from ser_core.attacks.universal import UniversalPerturbation
    from ser_core.audio.decode import load_audio
    pert = UniversalPerturbation.load(bundle.folder / UniversalPerturbation.file_name(snr, target))
    y = load_audio(path, 16_000)
    return bundle.predict_clip(y, 16_000).label, bundle.predict_clip(pert.apply(y, snr), 16_000).label


def _shipped(bundle, snr=25.0):
    from ser_core.attacks.universal import shipped_universal
    if not any(d["snr_db"] == snr and d["target"] is None for d in shipped_universal(bundle)):
        pytest.skip(f"{bundle.name} ships no untargeted {snr:g} dB universal perturbation")


@pytest.mark.parametrize("path", [FLIPS, STAYS])
def test_the_universal_request_flips_as_the_library_measures_and_writes_the_stated_snr(bundle, path, tmp_path):
    from ser_core.attacks.universal import speech_snr_db
    from ser_core.serving.over_the_air import run_universal
    _shipped(bundle)
    out = run_universal(str(path), bundle.name, 25, "none", out_dir=tmp_path)
    r = out.result
    before, after = _expected(bundle, path)
    assert (r["label_before"], r["label_after"], r["flipped"]) == (before, after, before != after)
    if bundle.name == "emodb":
        assert r["flipped"] is (path == FLIPS)
    clean, sr = sf.read(out.files["original"], dtype="float32")
    adv, _ = sf.read(out.files["perturbed"], dtype="float32")
    assert sr == 16_000 and sf.info(str(out.files["perturbed"])).subtype == "PCM_16"
    assert speech_snr_db(clean, adv) == pytest.approx(25.0, abs=0.05)
    assert bundle.predict_clip(adv, sr).label == r["label_after"]  # the file you hear is the one scored
    assert "room" not in r and set(out.files) == {"original", "perturbed"}


def test_the_room_switch_is_seeded_and_says_whether_the_flip_survived(bundle, tmp_path):
    from ser_core.serving.over_the_air import run_universal
    _shipped(bundle)
    a = run_universal(str(FLIPS), bundle.name, 25, None, True, 7, out_dir=tmp_path / "a").result["room"]
    b = run_universal(str(FLIPS), bundle.name, 25, None, "true", 7.0, out_dir=tmp_path / "b")
    assert a["seed"] == 7 and a["room"]["bank"] == "held-out" and a == b.result["room"]
    assert sf.read(tmp_path / "a" / "room-universal.wav")[0].tolist() == sf.read(b.files["room_perturbed"])[0].tolist()
    assert a["differs_in_room"] == (a["label_in_room"] != a["clean_label_in_room"])
    assert a["flip_survived"] == (b.result["flipped"] and a["differs_in_room"])


def test_a_random_room_names_its_seed_and_replays(bundle, tmp_path):
    from ser_core.serving.over_the_air import run_room
    first = run_room(str(STAYS), bundle.name, seed=-1, out_dir=tmp_path / "a")
    again = run_room(str(STAYS), bundle.name, seed=first.result["seed"], out_dir=tmp_path / "b")
    assert 0 <= first.result["seed"] < 2 ** 31
    assert first.result["room"] == again.result["room"]
    assert sf.read(first.files["recording"])[0].tolist() == sf.read(again.files["recording"])[0].tolist()
    assert first.result["clean_label_in_room"] is None and "clean_recording" not in first.files


def test_the_room_call_scores_an_attacked_clip_against_its_clean_one(bundle, tmp_path):
    from ser_core.serving.over_the_air import run_room, run_universal
    _shipped(bundle)
    u = run_universal(str(FLIPS), bundle.name, 25, out_dir=tmp_path / "u")
    r = run_room(str(u.files["perturbed"]), bundle.name, str(u.files["original"]), 3, out_dir=tmp_path / "r").result
    assert r["label_digital"] == u.result["label_after"]
    assert r["flip_survived"] == (r["label_in_room"] != r["clean_label_in_room"])
    assert set(r["probabilities_in_room"]) == set(bundle.labels)


@pytest.mark.parametrize("kwargs, expected", [
    ({"snr_db": "loud"}, "snr_db='loud' is not a number"),
    ({"snr_db": float("nan")}, "is not finite"),
    ({"snr_db": True}, "accepted: a number of dB"),
    ({"snr_db": 23}, "ships no universal perturbation for 23 dB"),
    ({"target": "anger"}, "ships no universal perturbation for 25 dB -> anger"),
    ({"target": 5}, "target must be an emotion name"),
    ({"room": "maybe"}, "room='maybe' (accepted: true or false)"),
    ({"seed": 1.5}, "accepted: a whole number"),
    ({"seed": -2}, "accepted: a whole number"),
    ({"seed": 2 ** 31}, "accepted: a whole number"),
    ({"seed": "x" * 500}, "accepted: a whole number"),
    ({"model": "nope"}, "nope"),
])
def test_bad_parameters_are_refused_before_any_audio_work(bundle, kwargs, expected):
    from ser_core.errors import ParameterError, SERError
    from ser_core.serving.over_the_air import run_universal
    _shipped(bundle)
    args = {**dict(model=bundle.name, snr_db=25, target=None, room=False, seed=None), **kwargs}
    with pytest.raises(SERError) as info:
        run_universal(None, **args)  # no audio at all: a parameter error must come first
    assert expected in str(info.value)
    if "model" not in kwargs:
        assert isinstance(info.value, ParameterError)


def test_a_clip_over_the_limit_is_refused_from_its_header(bundle, tmp_path):
    from ser_core.errors import TooLongAudioError
    from ser_core.serving.over_the_air import MAX_LAB_SECONDS, run_room
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(int((MAX_LAB_SECONDS + 1) * 16_000), np.int16), 16_000, subtype="PCM_16")
    with pytest.raises(TooLongAudioError, match=f"at most {MAX_LAB_SECONDS:g} s"):
        run_room(str(long), bundle.name, seed=1)


def test_outputs_go_to_the_instances_capped_folder(bundle):
    from ser_core.serving import files
    from ser_core.serving.over_the_air import run_room
    out = run_room(str(STAYS), bundle.name, seed=2)
    assert out.folder.parent == files.output_root() and out.folder.name.startswith("attack-")
    assert all(p.parent == out.folder for p in out.files.values())


# --- through gradio_client ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from gradio_client import Client
    with running_app(env={"GRADIO_TEMP_DIR": str(tmp_path_factory.mktemp("gradio-cache"))}) as url:
        yield Client(url, verbose=False)


@pytest.mark.slow
def test_the_lab_endpoints_are_named(client):
    assert {"/universal", "/room"} <= set(client.view_api(return_format="dict")["named_endpoints"])


@pytest.mark.slow
def test_universal_through_the_api_flips_as_measured_at_the_stated_snr(client, bundle):
    from gradio_client import handle_file
    from ser_core.attacks.universal import speech_snr_db
    _shipped(bundle)
    for path in (FLIPS, STAYS):
        out = client.predict(handle_file(str(path)), MODEL, 25, "none", False, -1, api_name="/universal")
        r, before, after, summary, original, perturbed, room_original, room_perturbed = out
        assert (r["label_before"], r["label_after"]) == _expected(bundle, path)
        assert after["label"] == r["label_after"] and ("Flipped" in summary) == r["flipped"]
        assert speech_snr_db(sf.read(original, dtype="float32")[0], sf.read(perturbed, dtype="float32")[0]) \
            == pytest.approx(25.0, abs=0.05)
        assert room_original is None and room_perturbed is None


@pytest.mark.slow
def test_the_room_through_the_api_is_seeded(client, bundle):
    from gradio_client import handle_file
    _shipped(bundle)
    a = client.predict(handle_file(str(FLIPS)), MODEL, 25, "none", True, 11, api_name="/universal")
    b = client.predict(handle_file(str(FLIPS)), MODEL, 25, "none", True, 11, api_name="/universal")
    assert a[0]["room"] == b[0]["room"] and a[0]["room"]["seed"] == 11
    assert sf.read(a[7])[0].tolist() == sf.read(b[7])[0].tolist()
    r = client.predict(handle_file(a[5]), MODEL, handle_file(a[4]), 11, api_name="/room")
    assert r[0]["room"] == a[0]["room"]["room"] and r[0]["label_in_room"] == a[0]["room"]["label_in_room"]


@pytest.mark.slow
@pytest.mark.parametrize("args, expected", [
    ((23, "none", False, -1), "ships no universal perturbation for 23 dB"),
    ((25, "none", False, -5), "accepted: a whole number"),
    ((25, "anger", False, -1), "-> anger"),
])
def test_bad_parameters_through_the_api_are_typed_errors(client, bundle, args, expected):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    _shipped(bundle)
    with pytest.raises(AppError, match="ParameterError") as info:
        client.predict(handle_file(str(FLIPS)), MODEL, *args, api_name="/universal")
    assert expected in str(info.value)
