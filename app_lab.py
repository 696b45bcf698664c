"""The app's "Out of the lab" tab: a universal perturbation added to any clip at once, and a
"through a room" switch. Gradio wiring only (app.py builds the page and calls `lab_tab`); every
value comes from ser_core.serving.over_the_air, which the tests call too.

Endpoints (gradio_client):
  /universal (audio, model, snr_db, target or "none", room: bool, seed: -1 random)
      -> (result, label before, label after, summary, original, perturbed, original in the room,
          perturbed in the room)
  /room (audio, model, clean audio or None, seed: -1 random)
      -> (result, label in the room, summary, recording, clean recording)"""
from __future__ import annotations

import gradio as gr

from ser_core.serving import service


def _snr_choices(model) -> list[tuple[str, float]]:
    snrs = sorted({d["snr_db"] for d in service.universal_choices(model)})
    return [(f"{s:g} dB", s) for s in snrs]


def _target_choices(model) -> list[tuple[str, str]]:
    targets = sorted({d["target"] for d in service.universal_choices(model) if d["target"]})
    return [("none: any other emotion", service.NO_TARGET)] + [(f"{t} (targeted)", t) for t in targets]


def _note(model) -> str:
    shipped = service.universal_choices(model)
    if not shipped:
        return (f"Model `{model}` ships no universal perturbation; pick one of the corpus models "
                "(EmoDB, EMOVO, RAVDESS). The room switch works with any model.")
    return "Shipped: " + ", ".join(f"{d['snr_db']:g} dB" + (f" -> {d['target']}" if d["target"] else "")
                                   for d in shipped) + "."


def _default_snr(model):
    snrs = [s for _, s in _snr_choices(model)]
    return 25.0 if 25.0 in snrs else (snrs[0] if snrs else None)


INTRO = ("### One perturbation for every voice, and a room it must survive\n"
         "Each corpus model ships a **universal perturbation**: one 3 s waveform learned on its training "
         "speakers, added to *your* clip at once (tiled over the speech, at the SNR you pick), with no "
         "optimisation on your clip. The **room switch** plays the clean and the perturbed clip in the same "
         "simulated room that no optimisation saw (reverberation, background noise, a band-limited microphone) "
         "and scores both recordings: does the flip survive? How often it works on speakers the model never "
         "heard: reports/over-the-air/README.md.")


def lab_tab(models: list[str], model_choices: list, typed_errors, keep_cache_small=None) -> None:
    """The tab and its two endpoints; call inside the page's gr.Blocks. typed_errors: app.py's
    decorator that turns typed project errors into gr.Error (and deletes a refused upload)."""
    with_pert = [m for m in models if service.universal_choices(m)]
    model0 = with_pert[0] if with_pert else (models[0] if models else None)

    @typed_errors
    def universal(audio, model, snr_db, target, room, seed):
        out = service.run_universal(audio, model, snr_db, target, room, seed)
        r, f = out.result, out.files
        return (r, service.label_value(r["probabilities_before"], r), service.label_value(r["probabilities_after"], r),
                service.lab_markdown(r), str(f["original"]), str(f["perturbed"]),
                str(f["room_original"]) if "room_original" in f else None,
                str(f["room_perturbed"]) if "room_perturbed" in f else None)

    @typed_errors
    def room(audio, model, clean, seed):
        out = service.run_room(audio, model, clean, seed)
        r, f = out.result, out.files
        return (r, service.label_value(r["probabilities_in_room"], r), service.lab_markdown(r), str(f["recording"]),
                str(f["clean_recording"]) if "clean_recording" in f else None)

    def on_model(model):
        return (gr.update(choices=_snr_choices(model), value=_default_snr(model)),
                gr.update(choices=_target_choices(model), value=service.NO_TARGET), _note(model))

    with gr.Tab("Out of the lab"):
        gr.Markdown(INTRO)
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="lab-audio",
                                 label=f"Your clip (up to {service.MAX_LAB_SECONDS:g} s)")
                model = gr.Dropdown(model_choices, value=model0, label="Model", elem_id="lab-model",
                                    allow_custom_value=True)  # the service names bad ones
                note = gr.Markdown(_note(model0) if model0 else "")
                snr = gr.Dropdown(_snr_choices(model0), value=_default_snr(model0), elem_id="lab-snr",
                                  label="Perturbation level (SNR against the speech)", allow_custom_value=True)
                target = gr.Dropdown(_target_choices(model0), value=service.NO_TARGET, elem_id="lab-target",
                                     label="Perturbation", allow_custom_value=True)
                in_room = gr.Checkbox(False, label="Through a room: also play both clips in a held-out room",
                                      elem_id="lab-room")
                seed = gr.Number(-1, precision=0, label="Room seed (-1: a random room; the result names the seed)",
                                 elem_id="lab-seed")
                universal_btn = gr.Button("Add the universal perturbation", variant="primary", elem_id="universal-btn")
                clean = gr.Audio(sources=["upload"], type="filepath", elem_id="lab-clean",
                                 label="Room only: the clean original of an attacked clip (optional)")
                room_btn = gr.Button("Room only: play my clip through a room", elem_id="room-btn")
            with gr.Column():
                summary = gr.Markdown(elem_id="lab-summary")
                with gr.Row():
                    before = gr.Label(label="Before", num_top_classes=None)
                    after = gr.Label(label="After (universal) / in the room", num_top_classes=None)
                shown = dict(type="filepath", interactive=False)
                original = gr.Audio(label="your clip (16-bit)", **shown)
                perturbed = gr.Audio(label="with the universal perturbation (16-bit WAV)", **shown)
                room_original = gr.Audio(label="in the room: your clip / the clean original", **shown)
                room_perturbed = gr.Audio(label="in the room: the perturbed clip / your clip", **shown)
                result = gr.JSON(label="Result (as the API returns it)", elem_id="lab-json")
        ui = dict(queue=False, api_visibility="private")
        model.change(on_model, model, [snr, target, note], **ui)
        cheap = dict(concurrency_id="lab", concurrency_limit=2)  # a few scorings and two convolutions
        universal_btn.click(lambda: (None,) * 8, None, [result, before, after, summary, original, perturbed,
                                                        room_original, room_perturbed], **ui).then(
            universal, [audio, model, snr, target, in_room, seed],
            [result, before, after, summary, original, perturbed, room_original, room_perturbed],
            api_name="universal", **cheap)
        room_btn.click(lambda: (None,) * 8, None, [result, before, after, summary, original, perturbed,
                                                   room_original, room_perturbed], **ui).then(
            room, [audio, model, clean, seed], [result, after, summary, room_perturbed, room_original],
            api_name="room", **cheap)
