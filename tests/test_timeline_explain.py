"""The two visitor features: the emotion over time (/timeline: one distribution per 3 s window,
every 0.5 s) and the occlusion explanation on the log-Mel (/explain: a map of the log-Mel's
shape that follows the clip); through the service, and through the running app's API."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser_core.audio.decode import load_audio
from ser_core.serving import service
from ser_core.serving.explain import PATCH_BANDS, PATCH_FRAMES, patch_grid
from ser_core.serving.timeline import n_windows, window_starts
from tests.test_app_api import EXAMPLE, MODEL, WAVEFORM_EXAMPLE

SR = 16000


def _clip(tmp_path, seconds: float):
    """The example's speech looped to `seconds`."""
    y = np.resize(load_audio(EXAMPLE), int(seconds * SR))
    path = tmp_path / f"speech-{seconds:g}s.wav"
    sf.write(str(path), y, SR, subtype="PCM_16")
    return path


@pytest.mark.parametrize("seconds, count", [(1.0, 1), (3.0, 1), (3.4, 1), (3.5, 2), (5.0, 5), (10.2, 15)])
def test_the_window_count_follows_the_clip_length(seconds, count):
    assert n_windows(seconds) == count
    assert len(window_starts(int(round(seconds * SR)), 3 * SR, SR // 2)) == count


@pytest.mark.parametrize("seconds", [2.0, 7.3])
def test_timeline_gives_one_distribution_per_window(tmp_path, bundle, seconds):
    out = service.timeline(str(_clip(tmp_path, seconds)), MODEL, out_dir=tmp_path / "out")
    r = out.result
    assert len(r["windows"]) == n_windows(seconds)
    assert [w["start"] for w in r["windows"]] == [i * service.HOP_SECONDS for i in range(n_windows(seconds))]
    for w in r["windows"]:
        assert list(w["probabilities"]) == bundle.labels
        assert sum(w["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert w["end"] - w["start"] <= 3.0 and (w["label"] is None) == (not w["has_speech"])
    assert r["emotion_shown"] is True and any(w["has_speech"] for w in r["windows"])
    assert out.image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_timeline_of_non_speech_has_no_emotion(tmp_path):
    t = np.arange(6 * SR) / SR
    path = tmp_path / "tone.wav"
    sf.write(str(path), 0.5 * np.sin(2 * np.pi * 440 * t), SR, subtype="PCM_16")
    r = service.timeline(str(path), MODEL, out_dir=tmp_path / "out").result
    assert r["emotion_shown"] is False and len(r["windows"]) == n_windows(6.0)
    assert all(w["label"] is None and w["model_label"] in w["probabilities"] for w in r["windows"])


def test_a_timeline_is_bounded(tmp_path):
    from ser_core.errors import TooLongAudioError
    with pytest.raises(TooLongAudioError, match="at most"):
        service.timeline(str(_clip(tmp_path, service.MAX_TIMELINE_SECONDS + 1)), MODEL, out_dir=tmp_path)


def test_the_patches_tile_the_log_mel(bundle):
    shape = bundle.feature_config.input_shape
    cover = np.zeros(shape, int)
    for f, m in patch_grid(shape):
        cover[f, m] += 1
    assert (cover == 1).all() and len(patch_grid(shape)) == -(-shape[0] // PATCH_FRAMES) * -(-shape[1] // PATCH_BANDS)


def test_the_explanation_has_the_log_mels_shape_and_follows_the_clip(tmp_path, bundle):
    a = service.explain(str(EXAMPLE), MODEL, out_dir=tmp_path / "a")
    x = bundle.features(load_audio(EXAMPLE))
    assert a.map.shape == x.shape and a.result["map_shape"] == list(x.shape)
    assert a.result["evaluations"] == len(x) * (len(patch_grid(x.shape[1:])) + 1)
    assert a.result["explained_class"] == a.result["model_label"] and a.result["top_patches"]
    assert np.abs(a.map).max() > 0
    b = service.explain(str(WAVEFORM_EXAMPLE), MODEL, out_dir=tmp_path / "b")
    n = min(len(a.map), len(b.map))
    assert not np.allclose(a.map[:n], b.map[:n])
    for image in (a.log_mel, a.explanation):
        assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_explanation_is_bounded(tmp_path):
    from ser_core.errors import TooLongAudioError
    with pytest.raises(TooLongAudioError, match="at most"):
        service.explain(str(_clip(tmp_path, service.MAX_EXPLAIN_SECONDS + 1)), MODEL, out_dir=tmp_path)


@pytest.mark.slow
def test_timeline_and_explain_are_on_the_api(tmp_path):
    from gradio_client import Client, handle_file
    from tests.test_app_api import running_app
    with running_app() as url:
        client = Client(url, verbose=False)
        assert {"/timeline", "/explain"} <= set(client.view_api(return_format="dict")["named_endpoints"])
        clip = handle_file(str(_clip(tmp_path, 5.0)))
        result, image = client.predict(clip, MODEL, api_name="/timeline")
        assert len(result["windows"]) == n_windows(5.0) and image
        result, log_mel, explanation = client.predict(clip, MODEL, api_name="/explain")
        assert result["map_shape"][1:] == list(service.get_bundle(MODEL).feature_config.input_shape)
        assert log_mel and explanation
        t = np.arange(2 * SR) / SR
        tone = tmp_path / "tone.wav"
        sf.write(str(tone), 0.5 * np.sin(2 * np.pi * 440 * t), SR, subtype="PCM_16")
        result, label, note = client.predict(handle_file(str(tone)), MODEL, api_name="/predict")
        assert result["label"] is None and label["label"] == service.NO_EMOTION and "No emotion shown" in note
