"""Non-speech is not an emotion: the speech check (ser_core/audio/speech.py) refuses a tone, a hum,
white noise and music-like chords, made here, and passes real corpus clips; for a refused clip
/predict shows no emotion label (the model's output stays, marked) and an attack's summary does
not say "Flipped". False rejections over whole corpora: benchmarks/speech_check.py."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ser_core.audio import speech
from ser_core.serving import service
from tests.test_app_api import EXAMPLE, MODEL

SR = 16000


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def _harmonics(f0, t, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0, t.shape)) / SR
    return sum(np.sin(k * phase + rng.uniform(0, 6)) / k for k in range(1, n + 1))


def tone(seconds=3.0):
    return 0.5 * np.sin(2 * np.pi * 440 * _t(seconds))


def hum(seconds=3.0):
    """A hummed 'mm-mm-mm', no phonemes: harmonics of a 150 Hz voice gliding two semitones with
    a 5.5 Hz vibrato, through a nasal resonance (250 Hz) and a closed mouth's low-pass, in
    syllable-like pulses. It wakes the voice detector: over a quarter of its frames reach 0.15."""
    from scipy.signal import lfilter
    t = _t(seconds)
    f0 = 150 * 2 ** (2 / 12 * np.sin(2 * np.pi * t / seconds)) * (1 + 0.015 * np.sin(2 * np.pi * 5.5 * t))
    r, fc = 0.97, 250 / SR
    y = lfilter([1 - r], [1, -2 * r * np.cos(2 * np.pi * fc), r * r], _harmonics(f0, t, 20))
    y = lfilter([1.0], [1, -0.9], y) * (0.15 + 0.85 * np.sin(2 * np.pi * 1.5 * t) ** 2)
    return 0.5 * y / np.abs(y).max()


def white_noise(seconds=3.0):
    return 0.3 * np.random.default_rng(0).standard_normal(int(seconds * SR))


def chords(seconds=3.0):
    """C, G, A minor, F: 0.75 s each, notes of eight decaying harmonics."""
    notes = [(262, 330, 392), (247, 294, 392), (220, 262, 330), (220, 262, 349)]
    t = _t(0.75)
    y = np.concatenate([np.exp(-2 * t) * sum(_harmonics(f, t, 8, seed=i) for f in chord)
                        for i, chord in enumerate(notes)])
    y = np.resize(y, int(seconds * SR))
    return 0.5 * y / np.abs(y).max()


NON_SPEECH = {"tone": tone, "hum": hum, "white noise": white_noise, "chords": chords}


@pytest.fixture(params=sorted(NON_SPEECH))
def non_speech(request, tmp_path):
    path = tmp_path / f"{request.param.replace(' ', '-')}.wav"
    sf.write(str(path), NON_SPEECH[request.param]().astype(np.float32), SR, subtype="PCM_16")
    return path


def test_the_check_refuses_sounds_that_are_not_speech(non_speech):
    check = speech.check_speech(sf.read(str(non_speech), dtype="float32")[0])
    assert check.has_speech is False and check.verdict != speech.SPEECH
    assert check.reason and check.reason in check.note


def test_a_hum_that_wakes_the_voice_detector_is_still_refused():
    """The old rule (enough frames at 0.15) took such a hum for speech; the shape of its
    spectrum hardly moves, and the check refuses it for that."""
    m = speech.measure(hum().astype(np.float32))
    assert m["speech_seconds"] >= speech.MIN_SPEECH_SECONDS and m["speech_fraction"] >= speech.MIN_SPEECH_FRACTION
    assert m["shape_change"] < speech.MIN_SHAPE_CHANGE
    assert speech.verdict(m)[0] == speech.NONE


def test_predict_shows_no_emotion_for_non_speech(non_speech):
    r = service.predict(str(non_speech), MODEL)
    assert r["label"] is None and r["emotion_shown"] is False and r["no_emotion_reason"]
    assert r["model_label"] in r["probabilities"]  # the model's output stays, marked
    assert service.label_value(r["probabilities"], r) == service.NO_EMOTION
    page = service.prediction_markdown(r)
    assert "No emotion shown" in page and "not an emotion" in page


@pytest.mark.parametrize("clip", ["ravdess-happiness-actor02f.wav", "ravdess-fear-actor01m.wav",
                                  "ravdess-happiness-actor01m.wav"])
def test_the_app_examples_are_speech(clip):
    r = service.predict(str(EXAMPLE.parent / clip), MODEL)
    assert r["emotion_shown"] is True and r["label"] == r["model_label"] == max(r["probabilities"], key=r["probabilities"].get)
    assert service.label_value(r["probabilities"], r) == r["probabilities"]


def test_real_corpus_clips_pass(data_dir):
    from ser_core.audio.decode import load_audio
    from ser_core.data.corpora import CORPORA, read_corpus
    rng = np.random.default_rng(0)
    for name in CORPORA:
        utts = read_corpus(name, data_dir / name, classes="all").utterances
        for i in rng.choice(len(utts), 3, replace=False):
            check = speech.check_speech(load_audio(utts[i].path))
            assert check.has_speech, f"{utts[i].path.name}: {check.reason}"


def test_shouted_speech_the_voice_detector_misses_is_speech_by_its_sound(data_dir):
    """RAVDESS actor 06, strong fear: Silero's frames stay under 0.15 but for 0.1 s (the old rule
    refused it, as it did five more of that actor's strong clips); its spectrum moves like speech."""
    from ser_core.audio.decode import load_audio
    path = next((data_dir / "ravdess").rglob("03-01-06-02-02-02-06.*"))
    check = speech.check_speech(load_audio(path))
    assert check.speech_seconds < speech.MIN_SPEECH_SECONDS
    assert check.has_speech and check.detector_unsure


def test_an_attack_on_non_speech_does_not_say_flipped(tmp_path):
    path = tmp_path / "chords.wav"
    sf.write(str(path), chords().astype(np.float32), SR, subtype="PCM_16")
    out = service.run_attack(str(path), MODEL, "fgsm", {"eps": 1.0}, "features", out_dir=tmp_path / "out")
    r = out.result
    assert r["emotion_shown"] is False and r["no_emotion_reason"]
    text = service.summary_markdown(r)
    assert "Flipped" not in text and text.startswith("## Not speech: no emotion to flip")


def test_the_summary_of_a_flip_on_non_speech_names_no_emotion():
    r = {"flipped": True, "label_before": "boredom", "label_after": "disgust", "emotion_shown": False,
         "speech": {"note": "The speech detector found no speech in this clip."}}
    text = service.summary_markdown(r)
    assert text.startswith("## Not speech: no emotion to flip") and "Flipped" not in text
    assert "neither is an emotion" in text
    assert service.summary_markdown(dict(r, emotion_shown=True)).startswith("## Flipped: boredom → disgust")
