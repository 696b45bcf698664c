"""What the app (and its API) does, as plain functions the tests call too: one name for every
job of the serving layer, gathered from the modules that do them.

`app.py` is Gradio wiring only; every value it shows comes from here:
  available_models / get_bundle   the shipped bundles under models/ (catalogue.py)
  attack_catalogue / presets      the registry's attacks, their parameters, the study's settings
                                  (catalogue.py)
  parse_params / check_params     a request's parameters, strictly read and capped for the Space
                                  (limits.py)
  predict(path, model)            clip -> emotion and probabilities (serving path, ONNX), the
                                  model's measured accuracy, a speech check, an "unsure" note
                                  (prediction.py)
  warm_up(models)                 load bundles and build/check ONNX sessions before serving (the
                                  default first, the rest in the background); a model whose files
                                  fail is taken out of service (disable_model), the others serve
  run_attack(path, model, ...)    clip -> attacked clip: decisions before/after, perturbation,
                                  log-Mel images, playable audio, features for download; under
                                  this Space's wall-clock deadline and parameter caps (attack.py)
  output_folder / prune           the instance's files, capped in bytes and age (files.py)
  summary_markdown / report       what the page says (texts.py)
  timeline(path, model)           the emotion over time: 3 s windows every 0.5 s (timeline.py)
  explain(path, model)            occlusion map of the decision on the log-Mel (explain.py)
  run_universal / run_room        the shipped universal perturbation added to a clip, a clip played
                                  in a held-out room (over_the_air.py)
Every bad input raises a typed error of `errors.py` whose text says what was wrong and what is
accepted; the app shows that text as is, in the page and through the API.

Module state (the bundle cache, the output folder and its byte cap) lives in the module that
owns it: patch `files.MAX_OUTPUT_BYTES`, not this module's copy."""
from __future__ import annotations

from ser_core.serving.attack import AttackOutcome, run_attack
from ser_core.serving.catalogue import (DEFAULT_ATTACKS, DOMAIN_FEATURES, DOMAIN_LABELS, DOMAIN_WAVEFORM,
                                        NO_TARGET, PREFERRED, WAVEFORM_APP_SETTINGS, WAVEFORM_SNR_PRESETS,
                                        attack_catalogue, attack_choices, available_models, default_attack,
                                        default_domain, default_params, default_preset, disable_model,
                                        disabled_models, domains, forget_bundle,
                                        get_bundle, model_info, presets, target_choices)
from ser_core.serving.files import (MAX_OUTPUT_BYTES, OUTPUT_TTL_SECONDS, folder_bytes, forget_upload,
                                    output_folder, output_root, prune)
from ser_core.serving.limits import (ACCEPTED_PARAMS, ATTACK_DEADLINE_S, MAX_ATTACK_SECONDS, MAX_NUMBER_CHARS,
                                     MAX_PARAMS_CHARS, MAX_PREDICT_SECONDS, MAX_STRING_CHARS, SPACE_CAPS,
                                     check_params, parse_params, parse_target, read_clip, space_caps)
from ser_core.serving.explain import MAX_EXPLAIN_SECONDS, ExplainOutcome, explain
from ser_core.serving.prediction import (NO_EMOTION, UNSURE_BELOW, confidence_note, jsonable, label_value,
                                         model_accuracy, predict, speech_check, warm_up, warm_up_in_background,
                                         withhold_emotion)
from ser_core.serving.over_the_air import (MAX_LAB_SECONDS, LabOutcome, lab_markdown, run_room, run_universal,
                                           universal_choices)
from ser_core.serving.robustness import SHOWN_BUDGETS, defence_text, model_robustness, snr_outcome
from ser_core.serving.timeline import HOP_SECONDS, MAX_TIMELINE_SECONDS, TimelineOutcome, timeline
from ser_core.serving.texts import (LIMITS, STUDY, attacks_table, format_params, limits_markdown, params_help,
                                    prediction_markdown, report, summary_markdown)

__all__ = [
    "AttackOutcome", "run_attack",
    "DEFAULT_ATTACKS", "DOMAIN_FEATURES", "DOMAIN_LABELS", "DOMAIN_WAVEFORM", "NO_TARGET", "PREFERRED",
    "WAVEFORM_APP_SETTINGS", "WAVEFORM_SNR_PRESETS", "attack_catalogue", "attack_choices", "available_models",
    "default_attack", "default_domain", "default_params", "default_preset", "disable_model", "disabled_models",
    "domains", "forget_bundle",
    "get_bundle", "model_info", "presets", "target_choices",
    "MAX_OUTPUT_BYTES", "OUTPUT_TTL_SECONDS", "folder_bytes", "forget_upload", "output_folder", "output_root",
    "prune",
    "ACCEPTED_PARAMS", "ATTACK_DEADLINE_S", "MAX_ATTACK_SECONDS", "MAX_NUMBER_CHARS", "MAX_PARAMS_CHARS",
    "MAX_PREDICT_SECONDS", "MAX_STRING_CHARS", "SPACE_CAPS", "check_params", "parse_params", "parse_target",
    "read_clip", "space_caps",
    "UNSURE_BELOW", "confidence_note", "jsonable", "model_accuracy", "predict", "speech_check", "warm_up",
    "warm_up_in_background", "NO_EMOTION", "label_value", "withhold_emotion",
    "MAX_EXPLAIN_SECONDS", "ExplainOutcome", "explain",
    "SHOWN_BUDGETS", "defence_text", "model_robustness", "snr_outcome",
    "HOP_SECONDS", "MAX_TIMELINE_SECONDS", "TimelineOutcome", "timeline",
    "MAX_LAB_SECONDS", "LabOutcome", "lab_markdown", "run_room", "run_universal", "universal_choices",
    "LIMITS", "STUDY", "attacks_table", "format_params", "limits_markdown", "params_help",
    "prediction_markdown", "report", "summary_markdown",
]
