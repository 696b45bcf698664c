"""What the page says, as Markdown built from the service's results: the note beside a
prediction, the summary of an attack, each attack's parameter help, the attacks table, the
study and its honest limits, and the committed evaluation report. Plain functions of plain
values, so the tests read them without a server."""
from __future__ import annotations

import re
from pathlib import Path

from ser_core.models import bundle as bundle_module
from ser_core.serving.catalogue import DOMAIN_FEATURES, DOMAIN_LABELS, DOMAIN_WAVEFORM, attack_catalogue, domains
from ser_core.serving.limits import ATTACK_DEADLINE_S, space_caps
from ser_core.serving.prediction import confidence_note

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
- A speech check (Silero VAD and three spectral measures: flatness, how fast the spectrum's
  shape changes, held pitches) runs on each clip; a clip with little or no speech (a tone, a
  hum, noise, music) gets no emotion: the page says why and greys the model's output.
- RAVDESS models and examples are CC BY-NC-SA 4.0: non-commercial use only.
"""


def limits_markdown() -> str:
    """LIMITS with this instance's attack deadline."""
    return LIMITS.replace("{deadline}", f"{ATTACK_DEADLINE_S:g}")


def prediction_markdown(result: dict) -> str:
    """What the page shows beside a prediction: its notes, then the model's accuracy. For a
    clip that is not speech, first that no emotion is shown and why, with the model's output
    kept below, marked as not an emotion."""
    lines = []
    if result.get("emotion_shown") is False:
        lines += ["### No emotion shown: this clip is not speech", model_output_line(result.get("probabilities"))]
    lines += [f"**Note:** {n}" for n in result.get("notes") or []]
    acc = (result.get("model_accuracy") or {}).get("text")
    if acc:
        lines.append(f"Model: {acc}")
    robust = (result.get("model_robustness") or {}).get("text")
    if robust:
        lines.append(robust)
    return "\n\n".join(lines)


def model_output_line(probabilities) -> str:
    """The model's output for a clip that is not speech, greyed and marked as not an emotion."""
    ranked = sorted((probabilities or {}).items(), key=lambda kv: kv[1], reverse=True)
    text = ", ".join(f"{k} {v:.2f}" for k, v in ranked)
    return f"<span style='color:gray'>*The model's output, not an emotion: {text}.*</span>"


def format_params(params) -> str:
    """Parameters as k=v, leaving out those not given (None): the waveform attacks' budget is
    snr_db or eps_16bit, so one of them is always None."""
    if not isinstance(params, dict):
        return "" if params is None else str(params)
    return ", ".join(f"{k}={_fmt(v)}" for k, v in params.items() if v is not None)


def summary_markdown(r: dict) -> str:
    """The attack's outcome as the page shows it: a headline (flipped, or the target reached),
    notes (stopped early, speech, an unsure clean decision), then a table of what was measured."""
    flipped = r.get("flipped")
    head = (f"## {'Flipped' if flipped else 'Not flipped'}: "
            f"{r.get('label_before')} → {r.get('label_after')}")
    if r.get("target"):
        head = (f"## {'Landed on' if r.get('target_reached') else 'Did not reach'} {r['target']}: "
                f"{r.get('label_before')} → {r.get('label_after')}")
    notes = [f"**{r['snr_outcome']}**"] if r.get("snr_outcome") else []
    if r.get("emotion_shown") is False:  # no emotion to flip: the model's classes, marked as such
        head = "## Not speech: no emotion to flip"
        notes.append(f"<span style='color:gray'>*The model's top class went from {r.get('label_before')} to "
                     f"{r.get('label_after')}; for a sound that is not speech neither is an emotion.*</span>")
    if r.get("stopped_early"):
        why = ("the Space's time limit" if r.get("stop_reason") == "deadline" else "a cancel")
        notes.append(f"**Stopped early** by {why} after {_fmt(r.get('seconds'))} s "
                     f"(limit {_fmt(r.get('deadline_seconds'))} s): the best result found by then.")
    speech = r.get("speech") or {}
    if speech.get("note"):
        notes.append(f"**Note:** {speech['note']}")
    unsure = confidence_note(r.get("probabilities_before") or {}) if r.get("emotion_shown") is not False else None
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
    if r.get("domain") == DOMAIN_FEATURES:
        rows.append(("attacked audio", "listening copy: the attacked features inverted by "
                     "Griffin-Lim; not what the model saw"))
    elif r.get("domain") == DOMAIN_WAVEFORM:
        rows.append(("attacked audio", "the adversarial 16-bit WAV; the decision after is the serving "
                     "path's on that file (verified)"))
    lc = r.get("listening_copy")
    if lc:
        rows += [("listening copy re-scored", f"{lc['label']} (flip {'survives' if lc['flipped'] else 'lost'})"),
                 ("clean features inverted, re-scored", lc["clean_inversion_label"])]
    for key in ("target", "target_reached", "snr_db", "linf_16bit", "verified_flipped", "chunking_unchanged"):
        if key in r and (r.get("target") or not key.startswith("target")):  # target rows: targeted only
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
    robust = (r.get("model_robustness") or {}).get("text")
    if robust:
        rows.append(("model robustness", robust))
    rows = [(k, v) for k, v in rows if v is not None]
    return (head + "\n\n" + "".join(n + "\n\n" for n in notes)
            + "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows))


def _fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else v


def params_help(attack_name, domain) -> str:
    """The attack's parameters with their defaults and the ranges this Space accepts."""
    entry = next(a for a in attack_catalogue(domain) if a["name"] == attack_name)
    caps = space_caps(attack_name, domain)
    lines = [f"**{entry['name']}**: {entry.get('doc', '')}", ""]
    for k, p in entry["params"].items():
        low, high = caps.get(k, (p.get("low"), p.get("high")))
        rng = f"choices {p['choices']}" if p.get("choices") else f"range [{low}, {high}]"
        here = " in this Space" if k in caps else ""
        lines.append(f"- `{k}` (default {p['default']}, {rng}{here}): {p.get('help', '')}")
    lines.append(f"\nEach attack stops after {ATTACK_DEADLINE_S:g} s with the best result so far.")
    return "\n".join(lines)


def attacks_table() -> str:
    """Every attack of every domain: kind, goal, what it does and the study's settings."""
    rows = ["| attack | kind | goal | what it does | study settings |", "|---|---|---|---|---|"]
    for domain in domains():
        for a in attack_catalogue(domain):
            settings = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in a.get("paper_settings") or [])
            rows.append(f"| {a['name']} ({DOMAIN_LABELS[domain]}) | {a['kind']} | {a['goal']} | "
                        f"{a.get('doc', '')} | {settings or '-'} |")
    return "\n".join(rows)


def report() -> tuple[str, list[Path]]:
    """The committed evaluation report (reports/README.md) and its plots (any PNG under reports/),
    or a note. Inline images become pointers to the gallery the app shows below the text."""
    folder = bundle_module.REPO_ROOT / "reports"
    readme = folder / "README.md"
    plots = sorted(folder.rglob("*.png")) if folder.is_dir() else []
    if not readme.is_file():
        return ("No evaluation report has been committed yet (reports/README.md). Run the "
                "evaluation to create it; its tables and plots will appear here."), plots
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", lambda m: f"*(figure {Path(m.group(2)).name}: "
                  f"{m.group(1) or 'plot'}, in the gallery below)*", readme.read_text())
    return text, plots
