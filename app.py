"""The Space: upload or record a clip, pick a language model and an attack, watch the emotion flip.

Gradio wiring only. Everything shown comes from `ser_core.serving.service` (the names of the serving
layer's modules: catalogue, limits, prediction, attack, files, texts), which the tests call too.
Endpoints (gradio_client): /predict (audio, model) -> (result, label, note) and /attack (audio,
model, attack, params, domain, target emotion or "none"; the defaults are the page's: an Auto-PGD
waveform attack at 30 dB SNR, untargeted, whose adversarial WAV is verified by the serving path);
each returns its JSON result first.

Limits for a 2-vCPU Space: attacks run one at a time (ser_core.serving.admission.AttackQueue: at most
SER_APP_ATTACK_QUEUE waiting, SER_APP_ATTACKS_PER_CLIENT per client, refused beyond with a
BusyError) under a wall-clock deadline (SER_APP_ATTACK_DEADLINE_S, default 60 s) and parameter
caps (ser_core.serving.limits.SPACE_CAPS); Stop (or a client's cancel) stops the attack loop itself. Attacks
never wait in Gradio's queue, so /predict keeps its own (two at a time, up to 32 waiting). Every
model's ONNX session is built and checked before the server starts. Files: Gradio's cache and
the attack outputs live in folders of this instance, capped in bytes and age; a refused upload
is deleted at once.

    python app.py    # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860)"""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
import threading
from pathlib import Path

if not os.environ.get("GRADIO_TEMP_DIR"):
    # Gradio reads this at import: one cache folder per instance, removed at exit, instead of
    # the host-wide /tmp/gradio every instance shares
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix=f"ser-space-gradio-{os.getpid()}-")
    atexit.register(shutil.rmtree, os.environ["GRADIO_TEMP_DIR"], True)

import gradio as gr

from ser_core.serving import service
from ser_core.serving.admission import AttackQueue
from ser_core.errors import AudioError, SERError

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted((HERE / "examples").glob("*.wav"))
MAX_FILE_SIZE = "25mb"
GRADIO_CACHE = Path(os.environ["GRADIO_TEMP_DIR"])
# Gradio's cache (uploads, copies of outputs): files older than CACHE_AGE_S go every
# CACHE_EVERY_S (Gradio's delete_cache), and the oldest first beyond MAX_CACHE_BYTES after
# every request (entries younger than 2 minutes stay: a page may still be fetching them).
CACHE_EVERY_S, CACHE_AGE_S = 300, 1800
MAX_CACHE_BYTES = int(float(os.environ.get("SER_APP_MAX_CACHE_MB", "300")) * 1e6)
ATTACKS = AttackQueue(max_waiting=int(os.environ.get("SER_APP_ATTACK_QUEUE", "4")),
                      per_client=int(os.environ.get("SER_APP_ATTACKS_PER_CLIENT", "2")))


def _refused(exc: SERError, audio) -> gr.Error:
    """gr.Error with the typed error's text; a refused upload is deleted from Gradio's cache."""
    if isinstance(exc, AudioError):
        service.forget_upload(audio, GRADIO_CACHE)
    return gr.Error(f"{type(exc).__name__}: {exc}", print_exception=False)


def keep_cache_small() -> None:
    service.prune(GRADIO_CACHE, MAX_CACHE_BYTES, CACHE_AGE_S, min_age=120.0)


def typed_errors(fn):
    """Typed project errors become gr.Error with their own text (shown in the page and returned
    by the API); the app keeps serving."""
    @functools.wraps(fn)
    def wrapper(audio, *args, **kwargs):
        try:
            return fn(audio, *args, **kwargs)
        except SERError as exc:
            raise _refused(exc, audio) from None
        finally:
            keep_cache_small()
    return wrapper


@typed_errors
def predict(audio, model):
    """Emotion of a clip: JSON result, the probabilities for the label view, and the notes and
    model accuracy shown beside them."""
    result = service.predict(audio, model)
    return result, result["probabilities"], service.prediction_markdown(result)


async def attack(audio, model, attack_name, params, domain, target=None, request: gr.Request = None,
                 progress=gr.Progress()):
    """Attack a clip; JSON result first, then what the page shows and offers for download.
    target: the emotion to land on (attacks with a targeted mode), or none/'' for any other emotion.
    Waits its turn in ATTACKS; cancelling (Stop, a client's cancel) stops the attack loop."""
    cancel = threading.Event()
    client = getattr(request, "session_hash", None) or "anonymous"

    def work():
        progress(0.0, desc="decoding")
        return service.run_attack(audio, model, attack_name, params, domain, cancel=cancel, target=target,
                                  progress=lambda f, m="": progress(float(f), desc=m or None))
    try:
        if ATTACKS.running:
            progress(0.0, desc="waiting for the attack before yours")
        out = await ATTACKS.run(client, work, cancel)
    except SERError as exc:
        raise _refused(exc, audio) from None
    finally:
        keep_cache_small()
    r = out.result
    before = r.get("probabilities_before") or {}
    after = r.get("probabilities_after") or {}
    return (r, before, after, service.summary_markdown(r),
            str(out.images["before"]), str(out.images["after"]), str(out.images["difference"]),
            audio, str(out.attacked_audio), [str(out.attacked_audio), str(out.features)])


def on_model(model):
    return gr.update(choices=service.target_choices(model), value=service.NO_TARGET)


def on_domain(domain):
    choices = service.attack_choices(domain)
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def on_attack(attack_name, domain):
    if not attack_name:
        return gr.update(choices=[], value=None), "", ""
    presets = service.presets(attack_name, domain)
    labels = [p[0] for p in presets]
    return (gr.update(choices=labels, value=labels[0]), _json(presets[0][1]), service.params_help(attack_name, domain))


def on_preset(preset, attack_name, domain):
    for label, params in service.presets(attack_name, domain) if attack_name else []:
        if label == preset:
            return _json(params)
    return gr.update()


def _json(params: dict) -> str:
    import json
    return json.dumps(params)


def build_app() -> gr.Blocks:
    models = service.available_models()
    model_choices = [(service.model_info(m)["title"], m) for m in models]
    domains = service.domains()
    domain0 = service.default_domain()
    attacks0 = service.attack_choices(domain0)
    # the page's defaults are also /attack's defaults for API callers who give only audio and model
    attack0, preset0, params0 = service.default_preset(domain0)
    presets0 = [label for label, _ in service.presets(attack0, domain0)]

    with gr.Blocks(title="Speech emotion under adversarial attack",
                   delete_cache=(CACHE_EVERY_S, CACHE_AGE_S)) as demo:
        gr.Markdown("# Speech emotion recognition under adversarial attack\n"
                    "Upload or record a short clip, pick the model of a language and an attack, "
                    "and see whether the predicted emotion flips. By default the attack changes the audio itself "
                    "and the flip is checked on the adversarial WAV you can play; the study's attacks on "
                    "log-Mel features are the other domain. "
                    + ("" if models else "\n\n**No model bundle is installed under models/ yet.**"))
        with gr.Tab("Attack a clip"):
            with gr.Row():
                with gr.Column():
                    audio_in = gr.Audio(sources=["upload", "microphone"], type="filepath",
                                        label="Your clip (WAV, FLAC, OGG or MP3; up to 30 s for attacks)",
                                        elem_id="audio-in")
                    model = gr.Dropdown(model_choices, value=models[0] if models else None,
                                        label="Model (language)", elem_id="model",
                                        allow_custom_value=True)  # the service names bad ones
                    domain = gr.Radio([(service.DOMAIN_LABELS[d], d) for d in domains], value=domain0,
                                      label="Attack domain", elem_id="domain")
                    # custom values: API callers name waveform attacks without switching the domain first
                    attack_name = gr.Dropdown(attacks0, value=attack0, label="Attack", elem_id="attack",
                                              allow_custom_value=True)
                    preset = gr.Dropdown(presets0, value=preset0, elem_id="preset",
                                         label="Strength (waveform: SNR budgets; features: the study's settings)")
                    params = gr.Textbox(_json(params0), label="Parameters (JSON; edit to go beyond the presets)",
                                        elem_id="params")
                    target = gr.Dropdown(service.target_choices(models[0] if models else None), value=service.NO_TARGET,
                                         label="Target emotion (waveform attacks; none: any other emotion)",
                                         elem_id="target", allow_custom_value=True)
                    params_doc = gr.Markdown()
                    with gr.Row():
                        predict_btn = gr.Button("Predict only", elem_id="predict-btn")
                        attack_btn = gr.Button("Run attack", variant="primary", elem_id="attack-btn")
                        stop_btn = gr.Button("Stop", variant="stop", elem_id="stop-btn")
                    if EXAMPLES:
                        gr.Examples([[str(p)] for p in EXAMPLES], inputs=[audio_in],
                                    label="Example clips (RAVDESS, CC BY-NC-SA 4.0)")
                with gr.Column():
                    prediction_note = gr.Markdown(elem_id="prediction-note")
                    summary = gr.Markdown(label="Summary", elem_id="summary")
                    with gr.Row():
                        label_before = gr.Label(label="Before", num_top_classes=5)
                        label_after = gr.Label(label="After attack", num_top_classes=5)
                    original_audio = gr.Audio(label="original", type="filepath", interactive=False)
                    attacked_audio = gr.Audio(label="attacked audio: for feature attacks a listening copy "
                                              "(Griffin-Lim inversion, unverified); for waveform "
                                              "attacks the verified adversarial WAV",
                                              type="filepath", interactive=False)
                    downloads = gr.File(label="Downloads: attacked audio (WAV), attacked features (.npy)",
                                        file_count="multiple", interactive=False)
            with gr.Row():
                img_before = gr.Image(label="log-Mel before", type="filepath", interactive=False)
                img_after = gr.Image(label="log-Mel after", type="filepath", interactive=False)
            img_diff = gr.Image(label="difference", type="filepath", interactive=False)
            result_json = gr.JSON(label="Result (as the API returns it)", elem_id="result-json")

        with gr.Tab("Results"):
            text, plots = service.report()
            gr.Markdown(text)
            if plots:
                gr.Gallery([str(p) for p in plots], label="Report plots", columns=2)

        with gr.Tab("About"):
            gr.Markdown(service.STUDY)
            gr.Markdown("### The attacks\n" + service.attacks_table())
            gr.Markdown(service.limits_markdown())
            gr.Markdown("### Model cards")
            for m in models:
                info = service.model_info(m)
                with gr.Accordion(info["title"], open=False):
                    gr.Markdown(info["card"] or "(no model card in this bundle)")

        with gr.Tab("Examples"):
            gr.Markdown("Six short RAVDESS clips (English; CC BY-NC-SA 4.0, Livingstone & Russo 2018, "
                        "PLoS ONE 13(5): e0196391). Click one to load it into the *Attack a clip* tab.")
            if EXAMPLES:
                gr.Examples([[str(p)] for p in EXAMPLES], inputs=[audio_in], examples_per_page=6)

        ui = dict(queue=False, api_visibility="private")
        domain.change(on_domain, domain, attack_name, **ui)
        model.change(on_model, model, target, **ui)
        attack_name.change(on_attack, [attack_name, domain], [preset, params, params_doc], **ui)
        preset.change(on_preset, [preset, attack_name, domain], params, **ui)
        demo.load(on_attack, [attack_name, domain], [preset, params, params_doc], **ui)

        predict_btn.click(predict, [audio_in, model], [result_json, label_before, prediction_note],
                          api_name="predict", concurrency_id="predict", concurrency_limit=2)
        # no Gradio limit: ATTACKS runs one at a time and refuses beyond its short queue, so
        # attacks never fill Gradio's queue (which /predict shares)
        attack_event = attack_btn.click(
            attack, [audio_in, model, attack_name, params, domain, target],
            [result_json, label_before, label_after, summary, img_before, img_after,
             img_diff, original_audio, attacked_audio, downloads],
            api_name="attack", concurrency_id="attack", concurrency_limit=None)
        stop_btn.click(None, None, None, cancels=[attack_event], api_visibility="private")
    demo.queue(max_size=32)
    return demo


def main():
    import time
    t0 = time.perf_counter()
    warm = service.warm_up()  # ONNX sessions built and checked now, not on the first click
    demo = build_app()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                max_file_size=MAX_FILE_SIZE, footer_links=["api", "gradio"], prevent_thread_lock=True)
    http = warm_http(demo.local_url)
    print(f"warm start: models {warm}, first HTTP /predict {http} s, ready after "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    demo.block_thread()


def warm_http(url: str) -> float | None:
    """One /predict through the server's own HTTP stack (upload, queue, events) before anyone
    calls: Gradio's first request costs about 0.6 s more than the next ones otherwise."""
    models = service.available_models()
    if not models or not EXAMPLES:
        return None
    import time
    try:
        from gradio_client import Client, handle_file
        t0 = time.perf_counter()
        Client(url, verbose=False).predict(handle_file(str(EXAMPLES[0])), models[0], api_name="/predict")
        return round(time.perf_counter() - t0, 3)
    except Exception as exc:  # serving matters more than warming
        print(f"warm start: the HTTP warm-up failed ({type(exc).__name__}: {exc})", flush=True)
        return None


if __name__ == "__main__":
    main()
