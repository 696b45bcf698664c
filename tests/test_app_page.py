"""The page's rough edges, without a browser: spectrogram titles that fit their image, target rows
only for targeted attacks, a strength picker that follows the edited JSON, examples that bring a
model of their language. What a visitor sees step by step is tests/test_app_browser.py's."""
from __future__ import annotations

import json

import numpy as np

from ser_core.serving import service


def test_spectrogram_titles_fit_a_one_chunk_image():
    """A one-chunk image is 261 pixels wide: its titles wrap instead of being cut off, and the
    three images (shown side by side) have titles of the same height."""
    from ser_core.serving.plots import _font, log_mel_images, title_lines
    rng = np.random.default_rng(0)
    before = rng.normal(-40, 10, (1, 261, 128))
    images = log_mel_images(before, before + rng.normal(0, 0.1, before.shape))
    assert len({img.size for img in images.values()}) == 1
    width = images["before"].width
    title = "log-Mel before attack (dB above chunk minimum, -85..-1)"
    lines = title_lines(title, width)
    assert len(lines) > 1 and " ".join(lines) == title
    assert all(_font().getlength(line) <= width for line in lines)


def test_only_a_targeted_attack_shows_target_rows():
    r = {"attack": "apgd", "params": {"snr_db": 30.0}, "flipped": True, "label_before": "anger",
         "label_after": "sadness", "domain": "waveform", "snr_db": 30.1, "target": None, "target_reached": True}
    text = service.summary_markdown(r)
    assert "target" not in text.lower() and "| snr db | 30.1 |" in text
    text = service.summary_markdown(dict(r, target="sadness"))
    assert "| target | sadness |" in text and "| target reached | True |" in text


def test_the_strength_picker_follows_the_edited_json():
    import app
    attack, label, params = service.default_preset("waveform")
    assert app.on_params(json.dumps(params), attack, "waveform") == label
    other_label, other = service.presets(attack, "waveform")[1]
    assert app.on_params(json.dumps(other), attack, "waveform") == other_label
    assert app.on_params(json.dumps(dict(params, steps=7)), attack, "waveform") == app.CUSTOM_PRESET
    assert app.on_params('{"snr_db": ', attack, "waveform") == app.CUSTOM_PRESET
    assert app.on_params("{}", "no-such-attack", "waveform") == app.CUSTOM_PRESET


def test_examples_bring_a_model_of_their_language():
    """The examples are English (RAVDESS): with an English model served, each comes with it (the
    default model, first in the picker, is German); without one, the clips come alone."""
    import app
    rows, with_model = app.example_rows(["emodb", "emovo", "ravdess", "ravdess-paper"])
    assert with_model and rows and {m for _, m in rows} == {"ravdess"}
    assert all(service.model_info(m)["language"] == "English" for _, m in rows)
    rows, with_model = app.example_rows(["emodb"])
    assert not with_model and all(len(r) == 1 for r in rows)
