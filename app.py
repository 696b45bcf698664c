"""The Space: upload or record a clip, pick a language model and an attack, watch the emotion flip.

Gradio wiring only. Everything shown comes from `ser_core.serving.service` (the names of the serving
layer's modules: catalogue, limits, prediction, attack, files, texts), which the tests call too.
Endpoints (gradio_client): /predict (audio, model) -> (result, label, note) and /attack (audio,
model, attack, params, domain, target emotion or "none"; the defaults are the page's: an Auto-PGD
waveform attack at 30 dB SNR, untargeted, whose adversarial WAV is verified by the serving path);
/timeline (audio, model) -> (result, plot: the emotion of every 3 s window, every 0.5 s) and
/explain (audio, model) -> (result, log-Mel, occlusion map); each returns its JSON result first.
/universal and /room (the "Out of the lab" tab, app_lab.py): a shipped universal perturbation added
to a clip at once, and a clip played in a held-out room.
A clip the speech check does not call speech gets no emotion label anywhere, only the reason.

Limits for a 2-vCPU Space: attacks run one at a time (ser_core.serving.admission.AttackQueue: at most
SER_APP_ATTACK_QUEUE waiting, SER_APP_ATTACKS_PER_CLIENT per client, refused beyond with a
BusyError) under a wall-clock deadline (SER_APP_ATTACK_DEADLINE_S, default 60 s) and parameter
caps (ser_core.serving.limits.SPACE_CAPS); Stop (or a client's cancel) stops the attack loop itself. Attacks
never wait in Gradio's queue, so /predict keeps its own (two at a time, up to 32 waiting). The
page is served first; then the default model's ONNX session is built (a bad or stale model.onnx
rebuilt from the weights) and checked, then the other models' in the background; a model whose
files fail is out of service, with the reason in the log, and the others serve. Files: Gradio's cache and
the attack outputs live in folders of this instance, capped in bytes and age; a refused upload
is deleted at once.

    python app.py    # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860)"""
from __future__ import annotations

import functools
import os
import threading
import time
from pathlib import Path

from ser_core.serving import files

if not os.environ.get("GRADIO_TEMP_DIR"):
    # Gradio reads this at import: one cache folder per instance (removed at exit, and by the
    # next start when this one is killed), instead of the host-wide /tmp/gradio
    os.environ["GRADIO_TEMP_DIR"] = str(files.instance_folder(files.INSTANCE_PREFIX + "gradio-"))

import gradio as gr

from app_lab import lab_tab
from ser_core.serving import service
from ser_core.serving.admission import AttackQueue, UploadGate, request_address
from ser_core.serving.startup import serving_threads, warm_start
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
# Between requests too: pruned every 10 s (files.housekeeping), and the upload route refuses what
# would not fit or takes one address past its share in UPLOAD_WINDOW_S (admission.UploadGate).
UPLOAD_BYTES_PER_CLIENT = int(float(os.environ.get("SER_APP_UPLOAD_MB_PER_CLIENT", "100")) * 1e6)
UPLOAD_WINDOW_S, YOUNG_S = 600.0, 120.0  # YOUNG_S: entries a page may still fetch are kept
MAX_ERROR_CHARS = 1000  # untrusted values are excerpts already (errors.excerpt); this is a net
ATTACKS = AttackQueue(max_waiting=int(os.environ.get("SER_APP_ATTACK_QUEUE", "4")),
                      per_client=int(os.environ.get("SER_APP_ATTACKS_PER_CLIENT", "2")))


def _refused(exc: SERError, audio) -> gr.Error:
    """gr.Error with the typed error's text; a refused upload is deleted from Gradio's cache."""
    if isinstance(exc, AudioError):
        service.forget_upload(audio, GRADIO_CACHE)
    text = f"{type(exc).__name__}: {exc}"
    return gr.Error(text[:MAX_ERROR_CHARS] + ("... (cut)" if len(text) > MAX_ERROR_CHARS else ""), print_exception=False)


def keep_cache_small() -> None:
    service.prune(GRADIO_CACHE, MAX_CACHE_BYTES, CACHE_AGE_S, min_age=YOUNG_S)


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
    return result, service.label_value(result["probabilities"], result), service.prediction_markdown(result)


@typed_errors
def timeline(audio, model):
    """The emotion over time: JSON result (one distribution per 3 s window), then the plot."""
    return (out := service.timeline(audio, model)).result, str(out.image)


@typed_errors
def explain(audio, model):
    """Occlusion on the log-Mel: JSON result, then the log-Mel and the map laid over it."""
    return (out := service.explain(audio, model)).result, str(out.log_mel), str(out.explanation)


async def attack(audio, model, attack_name, params, domain, target=None, request: gr.Request = None,
                 progress=gr.Progress()):
    """Attack a clip; JSON result first, then what the page shows and offers for download.
    target: the emotion to land on (attacks with a targeted mode), or none/'' for any other emotion.
    Waits its turn in ATTACKS; cancelling (Stop, a client's cancel) stops the attack loop."""
    cancel = threading.Event()
    client = request_address(request)  # not the session: a new page shares its address's quota

    def work():
        progress(0.0, desc="decoding")
        started = time.monotonic()

        def report(fraction, message=""):
            # the attack's own fraction counts the steps of every restart or binary step, so the
            # bar sat under 1 % when the deadline ended an attack: the time used counts too
            used = time.monotonic() - started
            progress(min(1.0, max(float(fraction), used / service.ATTACK_DEADLINE_S)),
                     desc=f"{message or 'attacking'} ({used:.0f} s of at most {service.ATTACK_DEADLINE_S:g} s)")
        return service.run_attack(audio, model, attack_name, params, domain, cancel=cancel, target=target,
                                  progress=report)
    try:
        if ATTACKS.running:
            progress(0.0, desc="waiting for the attack before yours")
        out = await ATTACKS.run(client, work, cancel)
    except SERError as exc:
        raise _refused(exc, audio) from None
    finally:
        keep_cache_small()
    r = out.result
    before = service.label_value(r.get("probabilities_before") or {}, r)
    after = service.label_value(r.get("probabilities_after") or {}, r)
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


CUSTOM_PRESET = "custom (edited JSON)"


def on_params(text, attack_name, domain):
    """The strength picker follows an edit of the JSON: the preset it now equals, else custom."""
    import json
    try:
        edited = json.loads(text)
        presets = service.presets(attack_name, domain) if attack_name else []
    except (ValueError, SERError):
        edited, presets = None, []
    return next((label for label, params in presets if params == edited), CUSTOM_PRESET)


# What a new request clears first, so nothing of an earlier one stays beside it; and what the
# page says when a request fails or is stopped (the error itself shows as a toast).
STARTED, FAILED = "*Attacking...*", "**No result:** the attack did not run or failed; the message says why."
STOPPED = "**Stopped.** The attack was cancelled before it finished; nothing to show."
NO_PREDICTION = "**No prediction:** the message says why."


def attack_started():
    """summary, the attack's other outputs, the prediction note."""
    return (STARTED,) + (None,) * 9 + ("",)


def predict_started():
    """the prediction's outputs, then the attack's (summary, after, images, audio, files)."""
    return (None, None, "", "") + (None,) * 7


def example_rows(models: list[str]) -> tuple[list[list], bool]:
    """The example clips, each with the served model of its corpus (file names start with it:
    ravdess-...) when there is one for every clip, so a click loads a clip and a model of its
    language (the multi-corpus model `any` serves every corpus; it is first when served); else
    the clips alone."""
    by_corpus: dict[str, str] = {}
    for m in models:
        for corpus in str(service.model_info(m)["corpus"]).lower().split("+"):  # any: emodb+emovo+ravdess
            by_corpus.setdefault(corpus, m)
    rows = [[str(p), by_corpus.get(p.name.split("-")[0].lower())] for p in EXAMPLES]
    return (rows, True) if rows and all(m for _, m in rows) else ([[path] for path, _ in rows], False)


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
    examples, with_model = example_rows(models)

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
                    domain.preprocess = lambda value: value  # the service refuses a bad one, cut (Gradio: whole)
                    # custom values: API callers name waveform attacks without switching the domain first
                    attack_name = gr.Dropdown(attacks0, value=attack0, label="Attack", elem_id="attack",
                                              allow_custom_value=True)
                    preset = gr.Dropdown(presets0, value=preset0, elem_id="preset", allow_custom_value=True,
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
                        gr.Examples(examples, inputs=[audio_in, model] if with_model else [audio_in],
                                    label="Example clips (English, RAVDESS, CC BY-NC-SA 4.0)"
                                    + (": a click also picks the English model" if with_model else ""),
                                    elem_id="examples")
                with gr.Column():
                    prediction_note = gr.Markdown(elem_id="prediction-note")
                    summary = gr.Markdown(label="Summary", elem_id="summary")
                    with gr.Row():
                        label_before = gr.Label(label="Before", num_top_classes=None)
                        label_after = gr.Label(label="After attack", num_top_classes=None, elem_id="label-after")
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
            with gr.Row():  # the clip and model above
                timeline_btn = gr.Button("Emotion over time (3 s windows every 0.5 s, up to 60 s)", elem_id="timeline-btn")
                explain_btn = gr.Button("Explain the decision (occlusion on the log-Mel, up to 15 s)", elem_id="explain-btn")
            shown = dict(type="filepath", interactive=False)
            timeline_img = gr.Image(label="emotion over time", elem_id="timeline-img", **shown)
            with gr.Row():
                explain_mel = gr.Image(label="log-Mel", elem_id="explain-mel", **shown)
                explain_map = gr.Image(label="occlusion map", elem_id="explain-map", **shown)
            result_json = gr.JSON(label="Result (as the API returns it)", elem_id="result-json")

        lab_tab(models, model_choices, typed_errors)  # /universal and /room (app_lab.py)

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
                gr.Examples(examples, inputs=[audio_in, model] if with_model else [audio_in], examples_per_page=6)

        ui = dict(queue=False, api_visibility="private")
        domain.change(on_domain, domain, attack_name, **ui)
        model.change(on_model, model, target, **ui)
        attack_name.change(on_attack, [attack_name, domain], [preset, params, params_doc], **ui)
        preset.change(on_preset, [preset, attack_name, domain], params, **ui)
        # change, not input: a pasted or programmatically filled JSON counts too; a preset's own
        # JSON maps back to that preset, so the two never chase each other
        params.change(on_params, [params, attack_name, domain], preset, **ui)
        demo.load(on_attack, [attack_name, domain], [preset, params, params_doc], **ui)

        attack_shown = [label_after, img_before, img_after, img_diff, original_audio, attacked_audio, downloads]
        predict_btn.click(predict_started, None, [result_json, label_before, prediction_note, summary] + attack_shown,
                          **ui).then(
            predict, [audio_in, model], [result_json, label_before, prediction_note],
            api_name="predict", concurrency_id="predict", concurrency_limit=2).failure(
            lambda: NO_PREDICTION, None, prediction_note, **ui)
        # no Gradio limit: ATTACKS runs one at a time and refuses beyond its short queue, so
        # attacks never fill Gradio's queue (which /predict shares)
        attack_event = attack_btn.click(
            attack_started, None, [summary, result_json, label_before] + attack_shown + [prediction_note], **ui).then(
            attack, [audio_in, model, attack_name, params, domain, target],
            [result_json, label_before, label_after, summary, img_before, img_after,
             img_diff, original_audio, attacked_audio, downloads],
            api_name="attack", concurrency_id="attack", concurrency_limit=None)
        # a cancel fails the event too: only the "Attacking..." placeholder gives way to FAILED, so
        # Stop's word stays whichever of the two lands first
        attack_event.failure(lambda text: FAILED if text == STARTED else gr.update(), summary, summary, **ui)
        stop_btn.click(lambda: STOPPED, None, summary, cancels=[attack_event], **ui)
        analysis = dict(concurrency_id="analysis", concurrency_limit=1)  # 115 windows or 5 x 73 chunks at most
        timeline_btn.click(lambda: None, None, timeline_img, **ui).then(
            timeline, [audio_in, model], [result_json, timeline_img], api_name="timeline", **analysis)
        explain_btn.click(lambda: (None, None), None, [explain_mel, explain_map], **ui).then(
            explain, [audio_in, model], [result_json, explain_mel, explain_map], api_name="explain", **analysis)
        for changed in (audio_in, model):  # a plot of another clip or model must not stay beside this one
            changed.change(lambda: (None, None, None), None, [timeline_img, explain_mel, explain_map], **ui)
    demo.queue(max_size=32)
    return demo


def main():
    t0 = time.perf_counter()
    serving_threads()
    files.housekeeping(GRADIO_CACHE, MAX_CACHE_BYTES, CACHE_AGE_S, min_age=YOUNG_S)
    demo = build_app()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                max_file_size=MAX_FILE_SIZE, footer_links=["api", "gradio"], prevent_thread_lock=True,
                app_kwargs={"middleware": [UploadGate.middleware(
                    GRADIO_CACHE, MAX_CACHE_BYTES, UPLOAD_BYTES_PER_CLIENT, UPLOAD_WINDOW_S, MAX_FILE_SIZE,
                    max_age=CACHE_AGE_S, min_age=YOUNG_S)]})
    # the page first (imports and one ONNX export take 10-20 s on two busy cores), then the
    # default model, then the others in the background (serving.startup)
    examples = {row[1] for row in example_rows(service.available_models())[0] if len(row) > 1}
    warm = warm_start(demo.local_url, EXAMPLES[0] if EXAMPLES else None, prefer=examples)
    print(f"warm start: models {warm['models']}, first HTTP /predict {warm['http_s']} s, ready after "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
