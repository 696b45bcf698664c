"""The Space's API as a client sees it: `python app.py` started on loopback, called through
gradio_client. /predict returns a distribution over the model's labels; /attack flips a clip
and returns the figures, images, audio and features it promises; bad input gets the typed
error's text and the app keeps serving."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "ravdess-happiness-actor02f.wav"
# flips under the app's default waveform attack (APGD, 30 dB SNR, 40 steps) on the emodb bundle
WAVEFORM_EXAMPLE = REPO / "examples" / "ravdess-disgust-actor02f.wav"
MODEL = os.environ.get("SER_TEST_MODEL", "emodb")
START_TIMEOUT = 180


def app_log(url: str) -> str:
    """What the app `running_app` started at `url` has printed so far."""
    from urllib.parse import urlparse
    return (REPO / "tests" / f".app-{urlparse(url).port}.log").read_text()


def warm_start(url: str) -> dict:
    """The app's start-up line, once printed: {model: seconds} for the models it loaded and ran
    (ONNX session built and checked) before serving, and `http`, the seconds of its own first
    HTTP /predict (None when that failed)."""
    import ast
    import re
    line = wait_until(lambda: re.search(r"warm start: models (\{.*\}), first HTTP /predict (\S+) s",
                                        app_log(url)),
                      timeout=START_TIMEOUT, interval=0.2, what="the app's 'warm start' line")
    return {"models": ast.literal_eval(line.group(1)),
            "http": None if line.group(2) == "None" else float(line.group(2))}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_app(model: str = MODEL, env: dict | None = None, app_dir: Path = REPO,
                python: str = sys.executable):
    """`python app.py` (of `app_dir`) serving `model` on a free loopback port; yields its URL."""
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               SER_APP_MODELS=model, GRADIO_ANALYTICS_ENABLED="False", **(env or {}))
    log = open(REPO / "tests" / f".app-{port}.log", "w")
    proc = subprocess.Popen([python, str(app_dir / "app.py")], cwd=app_dir, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"

    def serving() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {proc.returncode}: {app_log(url)[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False
    try:
        wait_until(serving, timeout=START_TIMEOUT, interval=0.2, what=f"app.py to serve on port {port}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        (REPO / "tests" / f".app-{port}.log").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def gradio_cache(tmp_path_factory):
    """The served app's Gradio cache folder (uploads land there)."""
    return tmp_path_factory.mktemp("gradio-cache")


@pytest.fixture(scope="module")
def client(gradio_cache):
    from gradio_client import Client
    with running_app(env={"GRADIO_TEMP_DIR": str(gradio_cache)}) as url:
        yield Client(url, verbose=False)


def _predict(client, path):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), MODEL, api_name="/predict")


def _attack(client, path, attack, params):
    from gradio_client import handle_file
    return client.predict(handle_file(str(path)), MODEL, attack, json.dumps(params), "features",
                          api_name="/attack")


@pytest.mark.slow
def test_named_endpoints(client):
    assert {"/predict", "/attack"} <= set(client.view_api(return_format="dict")["named_endpoints"])


@pytest.mark.slow
def test_predict_returns_a_distribution_over_the_labels(client, bundle):
    """Also the first prediction of this server: answered at once because the work of a first
    call was done at start-up (the model loaded, its ONNX session built, checked and run; one
    /predict through the server's HTTP stack), not on the first click; with the model's
    accuracy and the speech check. Latency itself is measured in benchmarks/, not here."""
    warm = warm_start(client.src)
    assert MODEL in warm["models"] and warm["http"] is not None
    result, label, note = _predict(client, EXAMPLE)
    assert result["model_accuracy"]["accuracy"] == bundle.config.get("crossval", bundle.config["metrics"]["test"])["accuracy"]
    assert result["model_accuracy"]["text"] in note
    assert result["speech"]["has_speech"] is True and result["speech"]["detector"].startswith("silero-vad")
    assert result["label"] in bundle.labels
    assert set(result["probabilities"]) == set(bundle.labels)
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["label"] == max(result["probabilities"], key=result["probabilities"].get)
    assert label["label"] == result["label"]
    assert len(result["chunks"]) >= 1


@pytest.mark.slow
def test_attack_flips_a_clip(client, bundle):
    # BIM at the study's largest budget (eps 1.25, step 0.1, 100 iterations): the study's
    # accuracy under it is 0.06-0.08, and this clip flips under it.
    out = _attack(client, EXAMPLE, "bim", {"eps": 1.25, "eps_step": 0.1, "max_iter": 100})
    r, before, after, summary, img_before, img_after, img_diff, original, attacked, files = out
    assert r["flipped"] is True
    assert r["label_after"] != r["label_before"]
    assert {r["label_before"], r["label_after"]} <= set(bundle.labels)
    assert sum(r["probabilities_after"].values()) == pytest.approx(1.0, abs=1e-4)
    assert 0 < r["linf"] <= 1.25 + 1e-5
    assert r["chunks_flipped"] >= 1 and r["queries"] >= 1
    assert after["label"] == r["label_after"] and "Flipped" in summary
    lc = r["listening_copy"]
    assert lc["label"] in bundle.labels and "Griffin-Lim" in lc["note"]
    for img in (img_before, img_after, img_diff):
        assert Path(img).stat().st_size > 1000
    y, sr = sf.read(attacked)
    assert sr == bundle.feature_config.sample_rate and np.abs(y).max() > 0.01
    features = np.load(next(f for f in files if f.endswith(".npy")))
    assert features.shape == (r["chunks"],) + tuple(bundle.feature_config.input_shape)


@pytest.mark.slow
def test_default_attack_is_a_verified_waveform_attack(client, bundle):
    """/attack given only a clip and a model runs the page's default: Auto-PGD on the waveform
    at 30 dB SNR; the player's audio is the adversarial 16-bit WAV and the decision shown is the
    serving path's on that file."""
    from gradio_client import handle_file
    from ser_core.audio.decode import load_audio
    from ser_core.attacks.waveform.base import to_pcm
    out = client.predict(handle_file(str(WAVEFORM_EXAMPLE)), MODEL, api_name="/attack")
    r, before, after, summary, img_before, img_after, img_diff, original, attacked, files = out
    assert r["domain"] == "waveform" and r["attack"] == "apgd"
    assert r["params"]["snr_db"] == 30.0 and r["params"]["steps"] == 40 and r["target"] is None
    assert r["flipped"] is True and r["verified_flipped"] is True and r["target_reached"] is True
    assert r["label_before"] == bundle.predict_clip(WAVEFORM_EXAMPLE).label
    assert bundle.predict_clip(attacked).label == r["label_after"] != r["label_before"]
    assert after["label"] == r["label_after"] and "Flipped" in summary and "verified" in summary
    info = sf.info(attacked)
    assert info.subtype == "PCM_16" and info.samplerate == bundle.feature_config.sample_rate
    written, _ = sf.read(attacked, dtype="int16")
    clean = to_pcm(load_audio(WAVEFORM_EXAMPLE))
    noise = written.astype(np.int64) - clean.astype(np.int64)
    assert 0 < np.abs(noise).max() == r["linf_16bit"]
    assert r["snr_db"] >= 30.0
    assert 10 * np.log10(np.sum(clean ** 2) / np.sum(noise.astype(np.float64) ** 2)) == pytest.approx(r["snr_db"], abs=1e-3)
    assert "listening_copy" not in r
    for img in (img_before, img_after, img_diff):
        assert Path(img).stat().st_size > 1000


def runner_up(bundle, path) -> str:
    """The clip's second most probable emotion: the nearest target."""
    probs = bundle.predict_clip(path).probabilities
    return sorted(probs, key=probs.get)[-2]


@pytest.mark.slow
def test_a_waveform_attack_lands_on_the_emotion_asked_for(client, bundle):
    """/attack's trailing target: APGD at 20 dB SNR takes the clip to its runner-up emotion, and
    the written WAV is scored as that emotion by the serving path."""
    from gradio_client import handle_file
    target = runner_up(bundle, WAVEFORM_EXAMPLE)
    out = client.predict(handle_file(str(WAVEFORM_EXAMPLE)), MODEL, "apgd", json.dumps({"snr_db": 20, "steps": 40}),
                         "waveform", target, api_name="/attack")
    r, summary, attacked = out[0], out[3], out[8]
    assert r["target"] == target != r["label_before"]
    assert r["target_reached"] is True and r["label_after"] == target
    assert bundle.predict_clip(attacked).label == target
    assert f"Landed on {target}" in summary and r["snr_db"] >= 20.0
    assert 0 <= r["perceptual"]["mask_exceeded_fraction"] <= 1


@pytest.mark.slow
def test_a_target_for_an_attack_without_a_targeted_mode_is_refused(client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="deepfool has no targeted mode"):
        client.predict(handle_file(str(EXAMPLE)), MODEL, "deepfool", json.dumps({}), "features", "sadness",
                       api_name="/attack")


@pytest.mark.slow
def test_a_feature_attack_named_without_its_domain_is_told_which_domain(client):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="fgsm is a features attack, not a waveform one"):
        client.predict(handle_file(str(EXAMPLE)), MODEL, "fgsm", json.dumps({"eps": 0.25}), api_name="/attack")


def _write(path: Path, y: np.ndarray, sr: int = 16000) -> Path:
    sf.write(str(path), y, sr, subtype="PCM_16")
    return path


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return 0.1 * np.random.default_rng(seed).standard_normal(int(seconds * 16000))


BAD_INPUTS = {
    # name: (make file in tmp_path, endpoint, expected error type in the message)
    "text renamed .wav": (lambda d: _text(d / "notes.wav"), "predict", "UnreadableAudioError"),
    "silent wav": (lambda d: _write(d / "silent.wav", np.zeros(16000)), "predict", "SilentAudioError"),
    "0.1 s wav": (lambda d: _write(d / "short.wav", _noise(0.1)), "predict", "TooShortAudioError"),
    "31 s wav to attack": (lambda d: _write(d / "long.wav", _noise(31)), "attack", "TooLongAudioError"),
}


def _text(path: Path) -> Path:
    path.write_text("this is not audio\n" * 50)
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
@pytest.mark.slow
def test_bad_audio_gets_a_clear_error_and_the_app_keeps_serving(client, bundle, tmp_path, gradio_cache, case):
    from gradio_client.exceptions import AppError
    make, endpoint, error = BAD_INPUTS[case]
    path = make(tmp_path)
    with pytest.raises(AppError) as info:
        if endpoint == "predict":
            _predict(client, path)
        else:
            _attack(client, path, "fgsm", {"eps": 0.25})
    message = str(info.value)
    assert error in message and path.name in message and "accepted" in message
    assert str(tmp_path) not in message  # the server's copy of the upload is not leaked
    assert not list(gradio_cache.rglob(path.name))  # the refused upload is deleted
    assert _predict(client, EXAMPLE)[0]["label"] in bundle.labels


@pytest.mark.parametrize("params, expected", [
    ({"eps": 99.0}, "eps=99.0 is outside [0.0, 20.0]"),
    ({"eps": -1}, "eps=-1.0 is outside"),
    ({"epsilon": 0.5}, "unknown parameters ['epsilon']"),
    ("{not json", "not valid JSON"),
    ('{"eps": ' + "9" * 5000 + "}", "characters long"),
    ('{"eps": ' + "9" * 1000 + "}", "a number of 1000 digits"),
    ("[" * 999 + "]" * 999, "nested too deeply"),
    ('{"eps": {"a": {"b": {"c": 1}}}}', "nested dict"),
])
@pytest.mark.slow
def test_bad_parameters_get_a_clear_error(client, bundle, params, expected):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    text = params if isinstance(params, str) else json.dumps(params)
    with pytest.raises(AppError, match="ParameterError") as info:
        client.predict(handle_file(str(EXAMPLE)), MODEL, "fgsm", text, "features", api_name="/attack")
    assert expected in str(info.value)
    assert _predict(client, EXAMPLE)[0]["label"] in bundle.labels


@pytest.mark.slow
def test_a_space_cap_is_a_clear_error(client, bundle):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError, match="ParameterError: square: max_queries=100000 is outside this Space's limits"):
        client.predict(handle_file(str(EXAMPLE)), MODEL, "square", json.dumps({"max_queries": 100000}),
                       "waveform", api_name="/attack")
    assert _predict(client, EXAMPLE)[0]["label"] in bundle.labels


@pytest.mark.slow
def test_a_tone_is_predicted_but_shows_no_emotion(client, tmp_path):
    t = np.arange(32000) / 16000
    path = _write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t))
    result, label, note = _predict(client, path)
    assert result["speech"]["has_speech"] is False and result["label"] is None
    assert label["label"] == "no emotion: not speech" and not label.get("confidences")
    assert "no speech" in note and result["model_label"] in result["probabilities"]


def _long_clip(tmp_path, seconds: float = 29.0) -> Path:
    from ser_core.audio.decode import load_audio
    y = load_audio(EXAMPLE)
    return _write(tmp_path / "long.wav", np.resize(y, int(seconds * 16000)))


def _progress(job) -> str:
    """The job's latest progress message, as the page shows it ('' before any)."""
    return " ".join(u.desc or "" for u in job.status().progress_data or [])


def _wait_progress(job, words: str, timeout: float = 120.0):
    """Until the job reports `words` (e.g. 'BIM step': its attack loop is running)."""
    wait_until(lambda: words in _progress(job), timeout=timeout, interval=0.1,
               what=f"{words!r} in the job's progress (last: {_progress(job)!r})")


@pytest.mark.slow
def test_cancel_stops_the_attack_and_the_next_one_starts_at_once(client, bundle, tmp_path):
    """A long attack (BIM, 200 steps on 29 s: longer than the 60 s deadline here) is cancelled
    once it is stepping; the next attack waits for it to end, which takes one step, not the rest
    of it (which would hold the queue until the app's deadline)."""
    from gradio_client import handle_file
    job = client.submit(handle_file(str(_long_clip(tmp_path))), MODEL, "bim",
                        json.dumps({"eps": 0.01, "eps_step": 0.001, "max_iter": 200, "early_stop": False}),
                        "features", api_name="/attack")
    from ser_core.serving.service import ATTACK_DEADLINE_S
    _wait_progress(job, "BIM step")
    t0 = time.monotonic()
    job.cancel()
    r = _attack(client, EXAMPLE, "fgsm", {"eps": 0.25})[0]
    assert r["label_before"] in bundle.labels and r["stopped_early"] is False
    # One BIM step and an FGSM take a few seconds; had the cancel not stopped the loop, the
    # FGSM would wait out the rest of the BIM's deadline. Half of it tells the two apart with
    # room for a busy machine (a deadline, as only a deadline can say "did not wait").
    assert time.monotonic() - t0 < ATTACK_DEADLINE_S / 2


@pytest.mark.slow
def test_predict_answers_while_attacks_fill_their_queue(bundle, tmp_path):
    """Attack queue of 2 behind the running one, 2 per client: a client's third attack and a
    fourth waiting attack are refused at once with BusyError, and /predict answers meanwhile."""
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    long = handle_file(str(_long_clip(tmp_path)))
    params = json.dumps({"eps": 0.01, "eps_step": 0.001, "max_iter": 200, "early_stop": False})
    env = {"SER_APP_ATTACK_QUEUE": "2", "SER_APP_ATTACKS_PER_CLIENT": "2", "SER_APP_ATTACK_DEADLINE_S": "20"}
    with running_app(env=env) as url:
        # three client addresses (the quota is per address; the server believes X-Forwarded-For
        # from loopback, as from a Space's proxy)
        a, b, c = (Client(url, verbose=False, headers={"X-Forwarded-For": f"198.51.100.{i}"}) for i in (1, 2, 3))
        jobs = [a.submit(long, MODEL, "bim", params, "features", api_name="/attack")]
        _wait_progress(jobs[0], "BIM step")
        jobs += [a.submit(long, MODEL, "bim", params, "features", api_name="/attack"),
                 b.submit(long, MODEL, "bim", params, "features", api_name="/attack")]
        for job in jobs[1:]:  # counted in the attack queue once they say so
            _wait_progress(job, "waiting for the attack before yours")
        with pytest.raises(AppError, match="BusyError: you already have 2 attacks"):
            a.predict(long, MODEL, "bim", params, "features", api_name="/attack")
        with pytest.raises(AppError, match="BusyError: the attack queue is full"):
            c.predict(long, MODEL, "bim", params, "features", api_name="/attack")
        result = c.predict(handle_file(str(EXAMPLE)), MODEL, api_name="/predict")[0]
        assert result["label"] in bundle.labels
        # answered while the attacks queued behind the running one still wait (each would first
        # run to its 20 s deadline): /predict did not queue behind them
        assert not any(job.done() for job in jobs[1:]), [_progress(job) for job in jobs]
        for job in jobs:
            job.cancel()


def test_listening_copy_inverts_the_features_the_serving_path_computed(bundle):
    """dB back to power with each chunk's own reference is exact, and Griffin-Lim of the clean
    features gives back the clip's loudness envelope (what makes the listening copy honest)."""
    from ser_core.audio.decode import load_audio
    from ser_core.audio.features import mel_power
    from ser_core.serving.inversion import chunk_layout, db_references, features_to_power, invert_features
    y = load_audio(EXAMPLE)
    layout = chunk_layout(y, bundle.feature_config)
    mel = mel_power(layout.chunks, bundle.feature_config)
    power = features_to_power(bundle.features(y), bundle.standardizer, db_references(layout.chunks))
    audible = mel > mel.max() * 1e-4  # above the 80 dB floor of the features
    assert np.abs(np.log10(power[audible] / mel[audible])).max() < 1e-3
    (copy,) = invert_features([bundle.features(y)], y, bundle)
    trimmed = layout.chunks[0][:layout.piece_lengths[0]]
    n = min(len(copy), len(trimmed)) // 1600 * 1600
    envelope = [np.sqrt((a[:n].reshape(-1, 1600) ** 2).mean(1)) for a in (copy, trimmed)]
    assert np.corrcoef(*envelope)[0, 1] > 0.95


def test_export_space_renders_a_space_folder(tmp_path):
    """`python -m export space` writes the Hub front matter, the app, its code, every shipped
    bundle and the licensed examples; it refuses to overwrite a folder that is not an export."""
    import yaml
    from export.space import render_space, shipped_bundles
    from ser_core.errors import ParameterError
    out = tmp_path / "space"
    summary = render_space(out)
    text = (out / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
    assert front["license"] == "cc-by-nc-sa-4.0" and str(front["python_version"]) == "3.11"
    assert (out / "app.py").is_file() and (out / "ser_core" / "serving" / "service.py").is_file()
    assert "torch" in (out / "requirements.txt").read_text()
    names = [b.name for b in shipped_bundles(REPO / "models")]
    assert summary["models"] == names
    for name in names:
        assert {"config.json", "model.safetensors", "README.md"} <= {p.name for p in (out / "models" / name).iterdir()}
    assert len(list((out / "examples").glob("*.wav"))) == len(list((REPO / "examples").glob("*.wav")))
    assert "CC BY-NC-SA 4.0" in (out / "examples" / "README.md").read_text()
    assert not list(out.rglob("__pycache__"))
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "keep.txt").write_text("mine")
    with pytest.raises(ParameterError, match="refusing"):
        render_space(stranger, force=True)
    assert (stranger / "keep.txt").is_file()
