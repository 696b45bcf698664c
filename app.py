"""The Space: upload or record a clip, pick a language model and an attack, watch the emotion flip.

Gradio wiring only. Everything shown comes from `ser_core.service`, which the tests call too.
Endpoints (gradio_client): /predict (audio, model) and /attack (audio, model, attack, params,
domain, target emotion or "none"; the defaults are the page's: an Auto-PGD waveform attack at 30 dB SNR whose adversarial WAV is
verified by the serving path); each returns its JSON result first. Attacks queue one at a time (a 2-vCPU Space has no
room for two); prediction has its own queue so it stays responsive while an attack runs.

    python app.py    # serves on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (127.0.0.1:7860)"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import gradio as gr

from ser_core import service
from ser_core.errors import SERError

HERE = Path(__file__).resolve().parent
EXAMPLES = sorted((HERE / "examples").glob("*.wav"))
DOMAIN_LABELS = {service.DOMAIN_WAVEFORM: "waveform (verified)",
                 service.DOMAIN_FEATURES: "log-Mel features (the study)"}
MAX_FILE_SIZE = "25mb"

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
- Attacks here run on 2 CPU cores: up to 30 s of audio per attack, 120 s for prediction.
- RAVDESS models and examples are CC BY-NC-SA 4.0: non-commercial use only.
"""


def typed_errors(fn):
    """Typed project errors become gr.Error with their own text (shown in the page and returned
    by the API); the app keeps serving."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except SERError as exc:
            raise gr.Error(f"{type(exc).__name__}: {exc}", print_exception=False) from None
    return wrapper


@typed_errors
def predict(audio, model):
    """Emotion of a clip: JSON result and the probabilities for the label view."""
    result = service.predict(audio, model)
    return result, result["probabilities"]


@typed_errors
def attack(audio, model, attack_name, params, domain, target=None, progress=gr.Progress()):
    """Attack a clip; JSON result first, then what the page shows and offers for download.
    target: the emotion to land on (waveform attacks), or none/'' for any other emotion."""
    progress(0.0, desc="decoding")
    out = service.run_attack(audio, model, attack_name, params, domain,
                             progress=lambda f, m="": progress(float(f), desc=m or None), target=target)
    r = out.result
    before = r.get("probabilities_before") or {}
    after = r.get("probabilities_after") or {}
    return (r, before, after, summary_markdown(r),
            str(out.images["before"]), str(out.images["after"]), str(out.images["difference"]),
            audio, str(out.attacked_audio), [str(out.attacked_audio), str(out.features)])


def summary_markdown(r: dict) -> str:
    flipped = r.get("flipped")
    head = (f"## {'Flipped' if flipped else 'Not flipped'}: "
            f"{r.get('label_before')} → {r.get('label_after')}")
    if r.get("target"):
        head = (f"## {'Landed on' if r.get('target_reached') else 'Did not reach'} {r['target']}: "
                f"{r.get('label_before')} → {r.get('label_after')}")
    rows = [("attack", f"{r.get('attack')} {r.get('params')}"),
            ("chunks flipped", f"{r.get('chunks_flipped')} of {r.get('chunks')}"),
            ("mean perturbation (standardised units)", _fmt(r.get("mean_perturbation"))),
            ("L2 / Linf", f"{_fmt(r.get('l2'))} / {_fmt(r.get('linf'))}"),
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
        rows.append(("cells above the clip's masking threshold / their 95th-percentile perturbation-to-mask ratio",
                     f"{perceptual['mask_exceeded_fraction']:.1%} / {perceptual['pmr_p95_db']:+.1f} dB"))
    rows = [(k, v) for k, v in rows if v is not None and "None" not in str(v)]
    return head + "\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def attack_choices(domain):
    return [(f"{a['name']} ({a['kind']}, {a['goal']})", a["name"]) for a in service.attack_catalogue(domain)]


def params_help(attack_name, domain) -> str:
    entry = next(a for a in service.attack_catalogue(domain) if a["name"] == attack_name)
    lines = [f"**{entry['name']}**: {entry.get('doc', '')}", ""]
    for k, p in entry["params"].items():
        rng = f"choices {p['choices']}" if p.get("choices") else f"range [{p.get('low')}, {p.get('high')}]"
        lines.append(f"- `{k}` (default {p['default']}, {rng}): {p.get('help', '')}")
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

    with gr.Blocks(title="Speech emotion under adversarial attack") as demo:
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
                    if EXAMPLES:
                        gr.Examples([[str(p)] for p in EXAMPLES], inputs=[audio_in],
                                    label="Example clips (RAVDESS, CC BY-NC-SA 4.0)")
                with gr.Column():
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
            gr.Markdown(LIMITS)
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

        predict_btn.click(predict, [audio_in, model], [result_json, label_before],
                          api_name="predict", concurrency_id="predict", concurrency_limit=2)
        attack_btn.click(attack, [audio_in, model, attack_name, params, domain, target],
                         [result_json, label_before, label_after, summary, img_before, img_after,
                          img_diff, original_audio, attacked_audio, downloads],
                         api_name="attack", concurrency_id="attack", concurrency_limit=1)
    demo.queue(max_size=32)
    return demo


def main():
    demo = build_app()
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                max_file_size=MAX_FILE_SIZE, footer_links=["api", "gradio"])


if __name__ == "__main__":
    main()
