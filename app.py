"""The Space: upload or record a clip, pick a language model and an attack, watch the emotion flip.

Gradio wiring only. Everything shown comes from `ser_core.serving.service`, which the tests call too.
Endpoints (gradio_client): /predict (audio, model) -> (result, label, note) and /attack (audio,
model, attack, params, domain, target emotion or "none"; the defaults are the page's: an Auto-PGD
waveform attack at 30 dB SNR, untargeted, whose adversarial WAV is verified by the serving path);
each returns its JSON result first.

Limits for a 2-vCPU Space: attacks run one at a time (ser_core.serving.admission.AttackQueue: at most
SER_APP_ATTACK_QUEUE waiting, SER_APP_ATTACKS_PER_CLIENT per client, refused beyond with a
BusyError) under a wall-clock deadline (SER_APP_ATTACK_DEADLINE_S, default 60 s) and parameter
caps (service.SPACE_CAPS); Stop (or a client's cancel) stops the attack loop itself. Attacks
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
DOMAIN_LABELS = {service.DOMAIN_WAVEFORM: "waveform (verified)",
                 service.DOMAIN_FEATURES: "log-Mel features (the study)"}
MAX_FILE_SIZE = "25mb"
GRADIO_CACHE = Path(os.environ["GRADIO_TEMP_DIR"])
# Gradio's cache (uploads, copies of outputs): files older than CACHE_AGE_S go every
# CACHE_EVERY_S (Gradio's delete_cache), and the oldest first beyond MAX_CACHE_BYTES after
# every request (entries younger than 2 minutes stay: a page may still be fetching them).
CACHE_EVERY_S, CACHE_AGE_S = 300, 1800
MAX_CACHE_BYTES = int(float(os.environ.get("SER_APP_MAX_CACHE_MB", "300")) * 1e6)
ATTACKS = AttackQueue(max_waiting=int(os.environ.get("SER_APP_ATTACK_QUEUE", "4")),
                      per_client=int(os.environ.get("SER_APP_ATTACKS_PER_CLIENT", "2")))

STUDY = """
### The study
Facchinetti, Simonetta, Ntalampiras, *A Systematic Evaluation of Adversarial Attacks against
Speech Emotion Recognition Models*, Intelligent Computing 3 (2024), arXiv:2404.18514.
One CNN-LSTM per corpus (EmoDB German, EMOVO Italian, RAVDESS English; five emotions each) reads
3 s windows of speech as 261 x 128 log-Mel features. The study attacked those standardised
features with eight attacks from IBM's Adversarial Robustness Toolbox and found every one of them
drives accuracy from about 0.9 to near chance or below, with perturbations far smaller than the
features' spread. This Space reproduces the models (trained on held-out speakers here, a stricter
protocol than the study's random split) and lets you run the attacks on your own voice.
"""

LIMITS = """
### Honest limits
- **Feature attacks change numbers, not sound.** The study's attacks perturb the log-Mel
  features. The audio player for them plays a *listening copy*: the attacked features turned
  back into sound by Griffin-Lim inversion. That copy is not what the model saw; the page shows
  its own prediction (re-scored from the WAV) and the prediction of the clean features inverted
  the same way, so you can see what inversion alone changes. A flip heard that way is unverified.
- **Waveform attacks** (the default) perturb the samples themselves: the player's attacked audio
  is the adversarial 16-bit WAV, and a flip counts only when that file, read back and scored
  through the same serving path, gets another emotion. The budget is an SNR: 30 dB is a faint
  hiss, 20 dB clearly audible noise.
- Acted emotions by a few dozen professional speakers: the models do not generalise to
  spontaneous speech, other languages, noisy rooms or phone audio. Predictions on your voice
  are a demonstration, not a measurement of how you feel.
- Five classes per corpus and different ones per corpus; a model can only answer with its own.
- Clips are cut into 3 s windows; the clip's decision is the mean of the windows' probabilities.
- Attacks here run on 2 CPU cores: up to 30 s of audio per attack, 120 s for prediction. Each
  attack stops after {deadline} s and shows the best it found by then, marked *stopped early*;
  the iteration counts are capped below the attacks' full ranges (the command-line tool
  `python -m export attack` has the full ranges). One attack runs at a time; *Stop* ends it.
- A speech detector (Silero VAD) checks each clip; for a clip with little or no speech the
  emotion is still shown but flagged: the models only know acted speech.
- RAVDESS models and examples are CC BY-NC-SA 4.0: non-commercial use only.
"""


def _refused(exc: SERError, audio) -> gr.Error:
    """gr.Error with the typed error's text; a refused upload is deleted from Gradio's cache."""
    if isinstance(exc, AudioError):
        forget_upload(audio)
    return gr.Error(f"{type(exc).__name__}: {exc}", print_exception=False)


def forget_upload(audio) -> None:
    """Delete an uploaded file (and its folder, when left empty) if it lies in this instance's
    Gradio cache; files anywhere else (the examples) are never touched."""
    if not audio or not isinstance(audio, (str, os.PathLike)):
        return
    path = Path(audio).resolve()
    if GRADIO_CACHE.resolve() not in path.parents:
        return
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != GRADIO_CACHE.resolve() and GRADIO_CACHE.resolve() in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent


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
    target: the emotion to land on (waveform attacks), or none/'' for any other emotion.
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
    return (r, before, after, summary_markdown(r),
            str(out.images["before"]), str(out.images["after"]), str(out.images["difference"]),
            audio, str(out.attacked_audio), [str(out.attacked_audio), str(out.features)])


def format_params(params) -> str:
    """Parameters as k=v, leaving out those not given (None): the waveform attacks' budget is
    snr_db or eps_16bit, so one of them is always None."""
    if not isinstance(params, dict):
        return "" if params is None else str(params)
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items() if v is not None)


def summary_markdown(r: dict) -> str:
    flipped = r.get("flipped")
    head = (f"## {'Flipped' if flipped else 'Not flipped'}: "
            f"{r.get('label_before')} → {r.get('label_after')}")
    if r.get("target"):
        head = (f"## {'Landed on' if r.get('target_reached') else 'Did not reach'} {r['target']}: "
                f"{r.get('label_before')} → {r.get('label_after')}")
    notes = []
    if r.get("stopped_early"):
        why = ("the Space's time limit" if r.get("stop_reason") == "deadline" else "a cancel")
        notes.append(f"**Stopped early** by {why} after {_fmt(r.get('seconds'))} s "
                     f"(limit {_fmt(r.get('deadline_seconds'))} s): the best result found by then.")
    speech = r.get("speech") or {}
    if speech.get("note"):
        notes.append(f"**Note:** {speech['note']}")
    unsure = service.confidence_note(r.get("probabilities_before") or {})
    if unsure:
        notes.append(f"**Before the attack:** {unsure}")
    def both(a, b, fmt):  # a row of two figures, only when both were measured
        return fmt(_fmt(r[a]), _fmt(r[b])) if r.get(a) is not None and r.get(b) is not None else None

    rows = [("attack", f"{r.get('attack')} ({format_params(r.get('params'))})"),
            ("chunks flipped", both("chunks_flipped", "chunks", lambda a, b: f"{a} of {b}")),
            ("mean perturbation (standardised units)", _fmt(r.get("mean_perturbation"))),
            ("L2 / Linf", both("l2", "linf", lambda a, b: f"{a} / {b}")),
            ("L2", _fmt(r.get("l2")) if r.get("linf") is None else None),
            ("changed cells", r.get("changed_cells")),
            ("model queries", r.get("queries")),
            ("attack time (s)", _fmt(r.get("seconds"))),
            ("request time (s)", _fmt(r.get("total_seconds")))]
    if r.get("domain") == service.DOMAIN_FEATURES:
        rows.append(("attacked audio", "listening copy: the attacked features inverted by "
                     "Griffin-Lim; not what the model saw"))
    elif r.get("domain") == service.DOMAIN_WAVEFORM:
        rows.append(("attacked audio", "the adversarial 16-bit WAV; the decision after is the serving "
                     "path's on that file (verified)"))
    lc = r.get("listening_copy")
    if lc:
        rows += [("listening copy re-scored", f"{lc['label']} (flip {'survives' if lc['flipped'] else 'lost'})"),
                 ("clean features inverted, re-scored", lc["clean_inversion_label"])]
    for key in ("target", "target_reached", "snr_db", "linf_16bit", "verified_flipped", "chunking_unchanged"):
        if key in r:
            rows.append((key.replace("_", " "), _fmt(r[key])))
    perceptual = r.get("perceptual") or {}
    if perceptual.get("pmr_p95_db") is not None:
        rows.append(("cells above the clip's masking threshold / their 95th-percentile "
                     "perturbation-to-mask ratio",
                     f"{perceptual['mask_exceeded_fraction']:.1%} / {perceptual['pmr_p95_db']:+.1f} dB"))
    if r.get("stopped_early"):
        rows.append(("stopped early", r.get("stop_reason")))
    acc = (r.get("model_accuracy") or {}).get("text")
    if acc:
        rows.append(("model accuracy", acc))
    rows = [(k, v) for k, v in rows if v is not None]
    return (head + "\n\n" + "".join(n + "\n\n" for n in notes)
            + "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows))


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def attack_choices(domain):
    return [(f"{a['name']} ({a['kind']}, {a['goal']})", a["name"]) for a in service.attack_catalogue(domain)]


def params_help(attack_name, domain) -> str:
    entry = next(a for a in service.attack_catalogue(domain) if a["name"] == attack_name)
    caps = service.space_caps(attack_name, domain)
    lines = [f"**{entry['name']}**: {entry.get('doc', '')}", ""]
    for k, p in entry["params"].items():
        low, high = caps.get(k, (p.get("low"), p.get("high")))
        rng = f"choices {p['choices']}" if p.get("choices") else f"range [{low}, {high}]"
        here = " in this Space" if k in caps else ""
        lines.append(f"- `{k}` (default {p['default']}, {rng}{here}): {p.get('help', '')}")
    lines.append(f"\nEach attack stops after {service.ATTACK_DEADLINE_S:g} s with the best result so far.")
    return "\n".join(lines)


NO_TARGET = "none"


def target_choices(model) -> list[tuple[str, str]]:
    """'none' (any other emotion) first, then the model's emotions."""
    try:
        labels = service.model_info(model)["labels"] if model else []
    except Exception:  # an unknown model is named by the attack itself
        labels = []
    return [("none: any other emotion", NO_TARGET)] + [(label, label) for label in labels]


def on_model(model):
    return gr.update(choices=target_choices(model), value=NO_TARGET)


def on_domain(domain):
    choices = attack_choices(domain)
    return gr.update(choices=choices, value=choices[0][1] if choices else None)


def on_attack(attack_name, domain):
    if not attack_name:
        return gr.update(choices=[], value=None), "", ""
    presets = service.presets(attack_name, domain)
    labels = [p[0] for p in presets]
    return (gr.update(choices=labels, value=labels[0]), _json(presets[0][1]), params_help(attack_name, domain))


def on_preset(preset, attack_name, domain):
    for label, params in service.presets(attack_name, domain) if attack_name else []:
        if label == preset:
            return _json(params)
    return gr.update()


def _json(params: dict) -> str:
    import json
    return json.dumps(params)


def attacks_table() -> str:
    rows = ["| attack | kind | goal | what it does | study settings |", "|---|---|---|---|---|"]
    for domain in service.domains():
        for a in service.attack_catalogue(domain):
            settings = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in a.get("paper_settings") or [])
            rows.append(f"| {a['name']} ({DOMAIN_LABELS[domain]}) | {a['kind']} | {a['goal']} | "
                        f"{a.get('doc', '')} | {settings or '-'} |")
    return "\n".join(rows)


def build_app() -> gr.Blocks:
    models = service.available_models()
    model_choices = [(service.model_info(m)["title"], m) for m in models]
    domains = service.domains()
    domain0 = service.default_domain()
    attacks0 = attack_choices(domain0)
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
                    domain = gr.Radio([(DOMAIN_LABELS[d], d) for d in domains], value=domain0,
                                      label="Attack domain", elem_id="domain")
                    # custom values: API callers name waveform attacks without switching the domain first
                    attack_name = gr.Dropdown(attacks0, value=attack0, label="Attack", elem_id="attack",
                                              allow_custom_value=True)
                    preset = gr.Dropdown(presets0, value=preset0, elem_id="preset",
                                         label="Strength (waveform: SNR budgets; features: the study's settings)")
                    params = gr.Textbox(_json(params0), label="Parameters (JSON; edit to go beyond the presets)",
                                        elem_id="params")
                    target = gr.Dropdown(target_choices(models[0] if models else None), value=NO_TARGET,
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
            gr.Markdown(STUDY)
            gr.Markdown("### The attacks\n" + attacks_table())
            gr.Markdown(LIMITS.replace("{deadline}", f"{service.ATTACK_DEADLINE_S:g}"))
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
