"""End to end in a real headless browser (Debian's chromium driven by Playwright): open the
Space, upload a clip, run an attack, see the result. The screenshot is kept as a test artefact
in tests/artifacts/ (gitignored)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_app_api import EXAMPLE, WAVEFORM_EXAMPLE, running_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
pytestmark = pytest.mark.slow  # a server and a browser per test

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Python playwright is not installed (pip install playwright)")
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)


def _open(browser, url, clip):
    page = browser.new_page(viewport={"width": 1400, "height": 1800})
    page.goto(url, wait_until="domcontentloaded")
    page.get_by_role("button", name="Run attack").wait_for(timeout=60_000)
    page.locator("#audio-in input[type=file]").set_input_files(str(clip))
    # the uploaded clip shows in the player before the attack starts
    page.locator("#audio-in audio, #audio-in .waveform-container, #audio-in [data-testid='waveform-x']") \
        .first.wait_for(state="attached", timeout=30_000)
    page.locator("#params textarea").wait_for(timeout=10_000)
    return page


def _run_and_read_summary(page) -> str:
    page.get_by_role("button", name="Run attack").click()
    summary = page.locator("#summary")
    summary.get_by_role("heading", name="Flipped:").wait_for(timeout=120_000)
    return summary.inner_text()


def test_upload_attack_and_see_the_flip():
    """The default is a waveform attack whose adversarial WAV is verified; the study's feature
    attacks are one click away."""
    ARTIFACTS.mkdir(exist_ok=True)
    with running_app() as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = _open(browser, url, WAVEFORM_EXAMPLE)
            params = page.locator("#params textarea")
            # the default: Auto-PGD on the waveform at the first SNR preset
            assert json.loads(params.input_value())["snr_db"] == 30.0
            text = _run_and_read_summary(page)
            page.screenshot(path=str(ARTIFACTS / "app_attack_waveform.png"), full_page=True)
            assert "→" in text and "adversarial 16-bit WAV" in text and "verified" in text
            assert page.locator("img[src*='log_mel_difference']").count() == 1

            page = _open(browser, url, EXAMPLE)
            page.get_by_label("log-Mel features (the study)").check()
            # the presets fill the parameters from the study's settings
            # the study's preset has an "eps" key ("steps" of the waveform preset must not match)
            page.wait_for_function("() => { try { return 'eps' in JSON.parse("
                                   "document.querySelector('#params textarea').value); } catch (e) { return false; } }",
                                   timeout=10_000)
            assert json.loads(page.locator("#params textarea").input_value())["eps"] == 0.25
            page.locator("#params textarea").fill(json.dumps({"eps": 1.25}))
            text = _run_and_read_summary(page)
            page.screenshot(path=str(ARTIFACTS / "app_attack.png"), full_page=True)
            assert "→" in text and "listening copy" in text
            assert page.locator("img[src*='log_mel_difference']").count() == 1
        finally:
            browser.close()


def test_record_from_the_microphone_predict_and_attack(tmp_path):
    """Chromium's fake capture device plays a WAV as the microphone: record it in the page,
    then Predict only (the label and the model's accuracy appear) and Run attack (a summary)."""
    import numpy as np
    import soundfile as sf
    from ser_core.audio.decode import load_audio
    ARTIFACTS.mkdir(exist_ok=True)
    mic = tmp_path / "mic.wav"  # Chromium loops the file; 48 kHz as a capture device delivers
    y = load_audio(WAVEFORM_EXAMPLE)
    import librosa
    sf.write(str(mic), librosa.resample(np.concatenate([y, y]), orig_sr=16000, target_sr=48000),
             48000, subtype="PCM_16")
    with running_app() as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu",
                                          "--use-fake-device-for-media-stream",
                                          "--use-fake-ui-for-media-stream",
                                          f"--use-file-for-fake-audio-capture={mic}"])
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1800})
            context.grant_permissions(["microphone"])
            page = context.new_page()
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Run attack").wait_for(timeout=60_000)
            audio = page.locator("#audio-in")
            audio.get_by_label("Record audio").or_(audio.get_by_role("button", name="Microphone")).first.click()
            record = audio.get_by_role("button", name="Record").or_(audio.locator("button.record-button")).first
            record.wait_for(timeout=30_000)
            record.click()
            stop = audio.get_by_role("button", name="Stop").or_(audio.locator("button.stop-button")).first
            stop.wait_for(timeout=30_000)  # recording
            page.wait_for_timeout(3_000)  # what is under test: three seconds of speech, not a wait
            # the recording is uploaded when it stops: predict only once the server has it
            with page.expect_response(lambda r: "/upload" in r.url and r.request.method == "POST",
                                      timeout=60_000):
                stop.click()
            audio.locator("audio, .waveform-container").first.wait_for(state="attached", timeout=30_000)
            page.locator("#predict-btn").click()
            note = page.locator("#prediction-note")
            note.get_by_text("Model:").wait_for(timeout=120_000)
            assert "accuracy" in note.inner_text().lower()
            page.locator("#attack-btn").click()
            page.locator("#summary").get_by_role("heading").wait_for(timeout=120_000)
            text = page.locator("#summary").inner_text()
            page.screenshot(path=str(ARTIFACTS / "app_microphone.png"), full_page=True)
            assert "→" in text and "pgd" in text
        finally:
            browser.close()


def test_a_visitor_clicks_an_example_predicts_attacks_stops_and_errs(tmp_path):
    """What a visitor sees after each step: an example brings a model of its language; a
    prediction, then an attack, each leaves nothing of the one before (no stale note or summary;
    no target rows for an untargeted attack); the timeline plot goes with its clip; a long attack shows its progress against the
    deadline and Stop says "Stopped"; edited parameters turn the strength to custom; a refused
    attack leaves no earlier result, only what went wrong."""
    import numpy as np
    import soundfile as sf
    from ser_core.audio.decode import load_audio
    ARTIFACTS.mkdir(exist_ok=True)
    long_clip = tmp_path / "long.wav"  # an attack on it runs long enough to be stopped
    sf.write(str(long_clip), np.resize(load_audio(WAVEFORM_EXAMPLE), 29 * 16000), 16000, subtype="PCM_16")
    with running_app("emodb,ravdess") as url, playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                                    args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(url, wait_until="domcontentloaded")
            page.get_by_role("button", name="Run attack").wait_for(timeout=60_000)
            model, note, summary = page.locator("#model input"), page.locator("#prediction-note"), page.locator("#summary")
            assert "German" in model.input_value()  # the default, emodb

            # 1. an example clip (English): the English model comes with it
            page.locator("#examples tr.tr-body").filter(has_text="disgust").first.click()
            page.locator("#audio-in audio, #audio-in .waveform-container").first.wait_for(state="attached",
                                                                                          timeout=30_000)
            page.wait_for_function("() => document.querySelector('#model input').value.includes('English')",
                                   timeout=10_000)

            # 2. predict: a note with the model's accuracy, no attack summary
            page.locator("#predict-btn").click()
            note.get_by_text("Model:").wait_for(timeout=120_000)
            assert summary.inner_text().strip() == ""

            # 3. the default attack (untargeted): a summary, and the prediction note is gone
            page.locator("#attack-btn").click()
            summary.locator("h2").wait_for(timeout=120_000)
            text = summary.inner_text()
            assert "→" in text and "target" not in text.lower()
            assert note.inner_text().strip() == ""

            # 3b. the emotion over time of this clip: a plot, gone once another clip is loaded
            page.locator("#timeline-btn").click()
            page.locator("#timeline-img img").wait_for(timeout=120_000)

            # 4. a long attack: progress against the deadline, then Stop says so
            page.locator("#audio-in").get_by_label("Clear").or_(
                page.locator("#audio-in button[aria-label='Clear']")).first.click()
            page.locator("#audio-in input[type=file]").set_input_files(str(long_clip))
            page.locator("#audio-in audio, #audio-in .waveform-container").first.wait_for(state="attached",
                                                                                          timeout=30_000)
            assert page.locator("#timeline-img img").count() == 0  # no plot of the other clip
            params = page.locator("#params textarea")
            params.fill(json.dumps({"snr_db": 50, "steps": 200, "restarts": 3}))
            page.wait_for_function("() => document.querySelector('#preset input').value.startsWith('custom')",
                                   timeout=10_000)  # the strength no longer names a preset
            page.locator("#attack-btn").click()
            page.get_by_text("s of at most").first.wait_for(timeout=120_000)
            assert "Flipped" not in summary.inner_text()  # the earlier summary is gone
            page.locator("#stop-btn").click()
            summary.get_by_text("Stopped").wait_for(timeout=60_000)
            # the attack's outputs settle once the cancelled loop has ended; the word stays
            page.locator("#label-after .progress-text").first.wait_for(state="hidden", timeout=60_000)
            assert "Stopped" in summary.inner_text() and "No result" not in summary.inner_text()
            page.screenshot(path=str(ARTIFACTS / "app_stopped.png"), full_page=True)

            # 5. a refused attack: the error, and nothing of an earlier result
            params.fill('{"snr_db": ')
            page.locator("#attack-btn").click()
            page.get_by_test_id("toast-body").filter(has_text="ParameterError").first.wait_for(timeout=60_000)
            summary.get_by_text("No result").wait_for(timeout=30_000)
            assert "Flipped" not in summary.inner_text() and "Stopped" not in summary.inner_text()
            page.screenshot(path=str(ARTIFACTS / "app_error.png"), full_page=True)
        finally:
            browser.close()

