"""The Space under real use, without a server: every attack stops at its deadline or cancel with
the best result so far, the Space's parameter caps, strict parameter parsing, the attack queue,
the summary, the model's accuracy and the speech check beside a prediction, and files that do
not pile up."""
from __future__ import annotations

import asyncio
import json
import shutil
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from ser_core.serving import files, service
from ser_core.serving.admission import AttackQueue
from ser_core.attacks import get_attack, registry
from ser_core.control import run_control
from ser_core.errors import AttackCancelledError, BusyError, ParameterError
from ser_core.attacks.clip import attack_clip
from tests.helpers import wait_until_async
from tests.test_app_api import EXAMPLE, WAVEFORM_EXAMPLE

MODEL = "emodb"


# --- deadline and cancel -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(registry("features")))
def test_every_feature_attack_stops_at_a_passed_deadline(bundle, name):
    """Deadline already passed: each attack returns at its first check, marked, with its input
    unchanged or inside its budget, and spends (almost) nothing."""
    x = bundle.features(sf.read(str(EXAMPLE), dtype="float32")[0])[:1]
    with run_control(deadline_s=0.0):
        r = get_attack(name, bundle)(x)
    assert r.stopped_early and r.stop_reason == "deadline"
    assert r.summary()["stopped_early"] is True and r.summary()["stop_reason"] == "deadline"
    assert r.x_adv.shape == x.shape and np.isfinite(r.x_adv).all()
    assert r.queries.sum() <= 3


@pytest.mark.parametrize("name", sorted(registry("waveform")))
def test_every_waveform_attack_stops_at_a_passed_deadline(bundle, tmp_path, name):
    with run_control(deadline_s=0.0):
        r = attack_clip(bundle, WAVEFORM_EXAMPLE, name, {}, out_dir=tmp_path, domain="waveform")
    assert r.stopped_early and r.stop_reason == "deadline"
    assert r.to_dict()["stopped_early"] is True and r.wav_path.is_file()
    assert r.queries <= 2


def test_without_run_control_attacks_run_to_the_end(bundle):
    """The CLI and the evaluation do not use run_control: nothing stops them early."""
    x = bundle.features(sf.read(str(EXAMPLE), dtype="float32")[0])[:1]
    r = get_attack("bim", bundle, eps=0.01, max_iter=7, early_stop=False)(x)
    assert not r.stopped_early and r.stop_reason is None and r.queries.sum() == 7


def test_cancel_stops_the_waveform_loop_after_the_current_step(bundle, tmp_path):
    cancel = threading.Event()
    steps = []

    def progress(f, m=""):
        steps.append(m)
        if len(steps) == 3:
            cancel.set()
    with run_control(cancel=cancel):
        r = attack_clip(bundle, WAVEFORM_EXAMPLE, "pgd", {"steps": 200, "eps_16bit": 2.0},
                        out_dir=tmp_path, progress=progress, domain="waveform")
    assert r.stop_reason == "cancelled" and r.extra["iterations"] == 3


def test_cancel_stops_a_feature_attack_between_iterations(bundle):
    cancel = threading.Event()
    calls = []

    def progress(f, m=""):
        calls.append(f)
        if len(calls) == 5:
            cancel.set()
    x = bundle.features(sf.read(str(EXAMPLE), dtype="float32")[0])[:1]
    with run_control(cancel=cancel):
        r = get_attack("bim", bundle, eps=0.01, max_iter=100, early_stop=False)(x, progress=progress)
    assert r.stop_reason == "cancelled" and r.queries.sum() == 5
    assert np.abs(r.x_adv - x).max() <= 0.01 + 1e-6  # the iterate so far, inside the budget


def test_service_attack_under_a_deadline_returns_the_best_so_far(tmp_path):
    """A Space request whose attack runs out of time still answers: images, WAV, the result
    marked stopped early with the seconds spent and the deadline."""
    out = service.run_attack(str(WAVEFORM_EXAMPLE), MODEL, "pgd", {"steps": 200, "eps_16bit": 2.0},
                             "waveform", deadline_s=0.5, out_dir=tmp_path)
    r = out.result
    assert r["stopped_early"] is True and r["stop_reason"] == "deadline"
    assert r["deadline_seconds"] == 0.5 and 0 < r["seconds"] <= r["total_seconds"] + 1e-3
    assert r["total_seconds"] >= 0.5  # it ran to the deadline...
    assert r["extra"]["iterations"] < 200  # ...and stopped there, short of its 200 steps
    assert out.attacked_audio.is_file() and all(p.is_file() for p in out.images.values())


def test_a_cancelled_service_attack_computes_nothing_more(tmp_path):
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(AttackCancelledError):
        service.run_attack(str(EXAMPLE), MODEL, "bim", {"eps": 0.5}, "features", cancel=cancel,
                           out_dir=tmp_path)
    assert not list(tmp_path.glob("*.png"))


# --- parameter caps and parsing ----------------------------------------------------------------
@pytest.mark.parametrize("domain, attack, params, name", [
    ("waveform", "square", {"max_queries": 100_000}, "max_queries"),
    ("waveform", "cw", {"steps": 5000}, "steps"),
    ("features", "boundary", {"max_iter": 100_000}, "max_iter"),
    ("features", "cw_l2", {"max_iter": 100_000}, "max_iter"),
    ("features", "cw_linf", {"decrease_factor": 0.999999}, "decrease_factor"),
])
def test_the_space_caps_long_attacks_the_cli_accepts(bundle, domain, attack, params, name):
    with pytest.raises(ParameterError, match=f"{name}=.* outside this Space's limits"):
        service.check_params(bundle, attack, params, domain)
    # the attack itself (CLI, evaluation) keeps its full range
    if domain == "waveform":
        registry("waveform")[attack](bundle, **params)
    else:
        get_attack(attack, bundle, **params)


def test_every_preset_fits_the_space_caps(bundle):
    for domain in service.domains():
        for a in service.attack_catalogue(domain):
            for _, params in service.presets(a["name"], domain):
                service.check_params(bundle, a["name"], params, domain)


@pytest.mark.parametrize("text, expected", [
    ('{"eps": ' + "9" * 5000 + "}", "parameters are 5009 characters long"),
    ('{"eps": ' + "9" * 1500 + "}", "a number of 1500 digits"),
    ('{"eps": ' + "[" * 100_000 + "]" * 100_000 + "}", "parameters are 200009 characters long"),
    ("[" * 999 + "]" * 999, "nested too deeply"),
    ('{"a": ' + "[" * 500 + "]" * 500 + "}", "parameter 'a' is a nested list"),
    ('{"eps": {"a": {"b": 1}}}', "parameter 'eps' is a nested dict"),
    ('{"eps": [0.1, 0.2]}', "parameter 'eps' is a nested list"),
    ('{"eps": NaN}', "NaN in the parameters is not a number"),
    ('{"eps": Infinity}', "Infinity in the parameters is not a number"),
    ('{"eps": 1e999}', "not finite"),
    ('{"eps": "' + "x" * 500 + '"}', "string of 500 characters"),
    ("{not json", "not valid JSON"),
    ('"just a string"', "must be a JSON object, not str"),
    ("12", "must be a JSON object, not int"),
])
def test_malformed_parameters_get_a_parameter_error(text, expected):
    with pytest.raises(ParameterError, match="accepted|not a number|not finite") as info:
        service.parse_params(text)
    assert expected in str(info.value)


def test_huge_values_reaching_a_parameter_are_refused_by_name(bundle):
    # read as the integer it is (no float on the way), named by a short excerpt
    with pytest.raises(ParameterError, match=r"max_iter=1000.*\(401 characters\) is outside"):
        get_attack("bim", bundle, max_iter=10 ** 400)
    with pytest.raises(ParameterError, match="is outside"):
        get_attack("bim", bundle, max_iter=10 ** 20)
    with pytest.raises(ParameterError, match="integer of more than 30 digits"):
        service.parse_params({"max_iter": 10 ** 30})


# --- the attack queue --------------------------------------------------------------------------
def _slow(seconds_per_step: float, steps: int, cancel: threading.Event, log: list, name: str):
    """A stand-in for an attack: `steps` steps of `seconds_per_step` (the sleep is the slow work
    under test, not a wait), checking its cancel before each. Logs ("start"|"end", name, steps
    done) in the order things happen."""
    def work():
        log.append(("start", name, 0))
        done = 0
        for _ in range(steps):
            if cancel.is_set():
                break
            time.sleep(seconds_per_step)
            done += 1
        log.append(("end", name, done))
        return name
    return work


def test_cancel_stops_the_work_and_the_next_attack_waits_for_it():
    """The first attack is cancelled while running: its worker sees the cancel at its next step,
    and the second starts only after the first has really returned; never two at once."""
    async def scenario():
        q = AttackQueue(max_waiting=4, per_client=2)
        log = []
        c1, c2 = threading.Event(), threading.Event()
        t1 = asyncio.ensure_future(q.run("a", _slow(0.05, 200, c1, log, "first"), c1))
        await wait_until_async(lambda: q.running == 1, what="the first attack to run")
        t2 = asyncio.ensure_future(q.run("b", _slow(0.01, 3, c2, log, "second"), c2))
        await wait_until_async(lambda: q.waiting == 1, what="the second attack to wait")
        t1.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t1
        assert c1.is_set()
        assert await t2 == "second"
        return q, log
    q, log = asyncio.run(scenario())
    steps = {name: n for kind, name, n in log if kind == "end"}
    assert steps["first"] < 200  # stopped, not its 200 steps
    assert steps["second"] == 3
    assert log.index(("start", "second", 0)) > log.index(("end", "first", steps["first"]))
    assert q.max_running == 1


def test_the_queue_refuses_beyond_its_size_and_per_client():
    async def scenario():
        q = AttackQueue(max_waiting=2, per_client=2)
        cancels = [threading.Event() for _ in range(5)]
        log = []
        tasks = [asyncio.ensure_future(q.run(client, _slow(0.02, 500, c, log, str(i)), c))
                 for i, (client, c) in enumerate(zip(["a", "a", "b"], cancels))]
        await wait_until_async(lambda: q.running == 1 and q.waiting == 2,
                               what="one attack running and two waiting")
        with pytest.raises(BusyError, match="at most 2 per client"):
            await q.run("a", _slow(0.01, 1, cancels[3], log, "x"), cancels[3])
        with pytest.raises(BusyError, match="queue is full"):
            await q.run("c", _slow(0.01, 1, cancels[4], log, "y"), cancels[4])
        assert q.waiting == 2
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return q
    q = asyncio.run(scenario())
    assert q.waiting == 0 and q.running == 0 and q.max_running == 1


# --- the summary -------------------------------------------------------------------------------
def test_summary_keeps_the_attack_row_when_a_parameter_is_none():
    """The default waveform attack has one None parameter (its budget is snr_db or eps_16bit);
    the row shows the parameters given and the other rows stay."""
    r = {"attack": "pgd", "params": {"snr_db": 30.0, "eps_16bit": None, "steps": 40},
         "flipped": True, "label_before": "anger", "label_after": "sadness", "l2": 1.5,
         "queries": 12, "seconds": 1.25, "domain": "waveform", "snr_db": 30.2}
    text = service.summary_markdown(r)
    assert "| attack | pgd (snr_db=30, steps=40) |" in text
    assert "eps_16bit" not in text and "None" not in text
    assert "| model queries | 12 |" in text
    assert "unsure" not in text
    r["probabilities_before"] = {"anger": 0.45, "sadness": 0.40, "neutral": 0.15}
    assert "**Before the attack:** The model is unsure: its top emotion, anger" in service.summary_markdown(r)


# --- accuracy and notes beside a prediction ----------------------------------------------------
CROSSVAL = {"protocol": "speaker folds", "folds": 5, "n_speakers": 10, "n_clips": 339, "accuracy": 0.81,
            "accuracy_ci95": [0.76, 0.85], "uar": 0.80, "uar_ci95": [0.75, 0.84],
            "baseline": {"name": "eGeMAPSv02 + SVM", "accuracy": 0.74}, "report": "reports/crossval/emodb.md"}


@pytest.fixture
def bundle_copy(bundle, tmp_path, monkeypatch):
    """A copy of the served bundle whose config the test edits, served by the app service."""
    folder = tmp_path / "emodb-copy"
    folder.mkdir()
    for f in ("config.json", "model.safetensors", "README.md"):
        shutil.copy(bundle.folder / f, folder / f)
    monkeypatch.setenv("SER_APP_MODELS", str(folder))
    monkeypatch.setenv("SER_CACHE_DIR", str(tmp_path / "cache"))
    yield folder
    service.forget_bundle(str(folder))


def test_prediction_carries_the_cross_validated_accuracy(bundle_copy):
    cfg = json.loads((bundle_copy / "config.json").read_text())
    cfg["crossval"] = CROSSVAL
    (bundle_copy / "config.json").write_text(json.dumps(cfg))
    r = service.predict(str(EXAMPLE), str(bundle_copy))
    acc = r["model_accuracy"]
    assert acc["source"] == "crossval" and acc["accuracy"] == 0.81 and acc["accuracy_ci95"] == [0.76, 0.85]
    assert acc["text"] == ("Cross-validated accuracy 0.81 (95% CI 0.76-0.85): 5 speaker folds, 10 speakers, "
                           "339 clips; baseline eGeMAPSv02 + SVM: 0.74.")
    assert "Cross-validated accuracy 0.81" in service.prediction_markdown(r)


def test_without_crossval_the_test_split_accuracy_is_shown(bundle_copy):
    cfg = json.loads((bundle_copy / "config.json").read_text())
    cfg.pop("crossval", None)
    test = cfg["metrics"]["test"]
    test.pop("subset", None)
    (bundle_copy / "config.json").write_text(json.dumps(cfg))
    r = service.predict(str(EXAMPLE), str(bundle_copy))
    assert r["model_accuracy"]["source"] == "test" and r["model_accuracy"]["accuracy"] == test["accuracy"]
    assert f"held-out test speakers, n={test['n']} clips" in r["model_accuracy"]["text"]


def test_a_low_top_probability_gets_a_plain_sentence():
    note = service.confidence_note({"anger": 0.42, "sadness": 0.31, "neutral": 0.27})
    assert note.startswith("The model is unsure: its top emotion, anger, has probability 0.42")
    assert "next is sadness at 0.31" in note
    assert service.confidence_note({"anger": 0.9, "sadness": 0.1}) is None


def test_predict_reports_unsure_consistently_with_its_probabilities():
    r = service.predict(str(EXAMPLE), MODEL)
    top = max(r["probabilities"].values())
    assert r["confidence"] == pytest.approx(top) and r["unsure"] == (top < service.UNSURE_BELOW)
    assert any(n.startswith("The model is unsure") for n in r["notes"]) == r["unsure"]


# --- speech check ------------------------------------------------------------------------------
def _signal(kind: str, seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    if kind == "tone":
        return 0.5 * np.sin(2 * np.pi * 440 * t)
    if kind == "noise":
        return 0.3 * np.random.default_rng(0).standard_normal(len(t))
    return 0.999 * np.sign(np.sin(2 * np.pi * 220 * t))  # full-scale square wave


@pytest.mark.parametrize("kind", ["tone", "noise", "square"])
def test_non_speech_is_scored_but_shows_no_emotion(tmp_path, kind):
    path = tmp_path / f"{kind}.wav"
    sf.write(str(path), _signal(kind), 16000, subtype="PCM_16")
    r = service.predict(str(path), MODEL)
    assert r["speech"]["has_speech"] is False and r["speech"]["verdict"] == "no speech"
    assert r["speech"]["speech_seconds"] < 0.25
    assert r["label"] is None and r["model_label"] in r["probabilities"]  # scored, not an emotion
    assert any("speech detector found no speech" in n for n in r["notes"])
    assert "no speech" in service.prediction_markdown(r)


@pytest.mark.parametrize("clip", [EXAMPLE, WAVEFORM_EXAMPLE])
def test_speech_is_recognised_as_speech(clip):
    r = service.predict(str(clip), MODEL)
    assert r["speech"]["has_speech"] is True and r["speech"]["speech_seconds"] >= 0.25
    assert not any("speech detector" in n for n in r["notes"])


# --- files -------------------------------------------------------------------------------------
def test_outputs_are_per_instance_and_capped_in_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_output_root", tmp_path / "instance")
    (tmp_path / "instance").mkdir()
    monkeypatch.setattr(files, "MAX_OUTPUT_BYTES", 3_000_000)
    for i in range(6):
        folder = service.output_folder()
        (folder / "out.bin").write_bytes(b"x" * 1_000_000)
        old = time.time() - 100 + i  # older than the 30 s a page may still be fetching
        import os
        os.utime(folder, (old, old))
    service.output_folder()
    assert service.folder_bytes(tmp_path / "instance") <= 3_000_000
    assert len(list((tmp_path / "instance").glob("attack-*"))) <= 4


def test_a_refused_upload_is_deleted_and_nothing_else(tmp_path, monkeypatch):
    import app
    cache = tmp_path / "gradio"
    monkeypatch.setattr(app, "GRADIO_CACHE", cache)
    upload = cache / "abc123" / "notes.wav"
    upload.parent.mkdir(parents=True)
    upload.write_text("not audio")
    with pytest.raises(Exception, match="UnreadableAudioError"):
        app.predict(str(upload), MODEL)
    assert not upload.exists() and not upload.parent.exists() and cache.exists()
    with pytest.raises(Exception, match="TooShortAudioError"):
        short = tmp_path / "short.wav"  # outside the cache: left alone
        sf.write(str(short), np.zeros(100) + 0.1, 16000)
        app.predict(str(short), MODEL)
    assert short.exists()


def test_the_app_serves_hub_models_only_pinned_to_a_commit(monkeypatch):
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda *a, **k: pytest.fail("went to the Hub"))
    monkeypatch.setenv("SER_APP_MODELS", "hf://someone/ser-emodb,hf://someone/ser-emodb@main")
    from ser_core.errors import ModelBundleError
    for name in ("hf://someone/ser-emodb", "hf://someone/ser-emodb@main"):
        with pytest.raises(ModelBundleError, match="must be pinned to a commit"):
            service.get_bundle(name)
