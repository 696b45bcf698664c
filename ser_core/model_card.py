"""A bundle's config -> its model card (README.md in the bundle folder)."""
from __future__ import annotations

from .corpora import CORPORA, DATA_LICENCES

LANGUAGE_CODES = {"emodb": "de", "emovo": "it", "ravdess": "en"}
PAPER_ACCURACY = {"emodb": (0.909, 0.895, 0.918), "emovo": (0.872, 0.893, 0.852),
                  "ravdess": (0.911, 0.911, 0.911)}


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def render(config: dict) -> str:
    c = config["corpus"]
    spec = CORPORA[c]
    lic = DATA_LICENCES[c]
    m = config["metrics"]["test"]
    split = config["split"]
    tr = config["training"]
    hp = config["hyperparameters"]
    cm = m["confusion"]
    lines = [
        "---",
        f"license: {'cc-by-nc-sa-4.0' if c == 'ravdess' else 'other'}",
        f"language: {LANGUAGE_CODES[c]}",
        "tags: [speech-emotion-recognition, adversarial-robustness, onnx]",
        "---",
        f"# {config['name']}: CNN-LSTM speech emotion recognition ({spec.language}, {c})",
        "",
        "The CNN-LSTM of Facchinetti, Simonetta, Ntalampiras, \"A Systematic Evaluation of "
        "Adversarial Attacks against Speech Emotion Recognition Models\" (Intelligent Computing "
        "2024), reimplemented in PyTorch and exported to ONNX.",
        "",
        "## Training data",
        f"- Corpus: {c} ({spec.language}), {config['data']['clips']} clips, "
        f"classes: {', '.join(config['labels'])}.",
        f"- Licence of the training data: {lic['licence']}.",
        f"- Citation: {lic['citation']}.",
        "",
        "## Protocol",
        f"- Protocol: **{split['protocol']}** (seed {split['seed']}). "
        + ("Stratified random 80/20 split over the augmented chunks, as in the study: augmented "
           "copies of one utterance and every speaker are on both sides, so the test accuracy is "
           "optimistic." if split["protocol"] == "paper" else
           "Held-out test speakers and separate validation speakers, balanced by gender; "
           "augmentation on training data only; standardiser fitted on training data only."),
        f"- Speakers: train {split['speakers'].get('train', 'all')}, validation "
        f"{split['speakers'].get('val', 'random 20 % of training chunks')}"
        + (f" (sentences {split['speakers']['val_sentences']} held out)" if 'val_sentences' in split['speakers'] else "")
        + ", test "
        f"{split['speakers'].get('test', 'random 20 % of chunks')}.",
        f"- Rows (3 s chunks): {split['rows']}.",
        f"- Features: 16 kHz, trimmed, 3 s windows, log-Mel 128 x 261 (dB re. minimum), "
        f"standardised per cell; clip range for attacks {config['clip_range']}.",
        f"- Hyperparameters: dropout {hp['dropout']}, LSTM input dropout {hp['lstm_input_dropout']}, "
        f"learning rate {hp['learning_rate']}, batch {hp['batch_size']}, at most {hp['max_epochs']} "
        f"epochs{' (the study: 100; capped to fit a 2-core CPU budget)' if hp['max_epochs'] < 100 else ''}, "
        f"early stopping patience {hp['early_stopping_patience']}.",
        f"- Weights stored as {config.get('weights_dtype')}; metrics below are measured with "
        "the stored weights.",
        "",
        "## Test metrics",
        f"| subset | n | accuracy |",
        "|---|---|---|",
        f"| all | {m['n']} | {_fmt(m['accuracy'])} |",
        f"| male | {m['n_male']} | {_fmt(m['accuracy_male'])} |",
        f"| female | {m['n_female']} | {_fmt(m['accuracy_female'])} |",
        "",
        f"Mean top-class confidence: {_fmt(m['mean_confidence'])}.",
    ]
    f32 = config["metrics"].get("test_float32_weights")
    if f32:
        lines += ["", f"Before compact storage (float32 weights) the same test set gave {_fmt(f32['accuracy'])} "
                      f"(male {_fmt(f32['accuracy_male'])}, female {_fmt(f32['accuracy_female'])})."]
    if split["protocol"] == "paper" and c in PAPER_ACCURACY:
        a, mm, f = PAPER_ACCURACY[c]
        lines += ["", f"The study reports {a} (male {mm}, female {f}) on its paper split."]
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "",
              "| true \\ predicted | " + " | ".join(cm["labels"]) + " |",
              "|---" * (len(cm["labels"]) + 1) + "|"]
    for lab, row in zip(cm["labels"], cm["matrix"]):
        lines.append(f"| {lab} | " + " | ".join(map(str, row)) + " |")
    lines += [
        "", "## Training run",
        f"- {tr['epochs']} epochs (best {tr['best_epoch']}), {tr['seconds'] / 60:.1f} min on "
        f"{tr['hardware']}, precision {tr['precision']}.",
        "", "## Retrain", "", "```", config["retrain_command"], "```",
        "", "## Limits",
        "- Acted speech from one corpus and language; expect lower accuracy on other speakers, "
        "microphones and languages.",
        "- Not robust to adversarial perturbations: that is what this project demonstrates.",
    ]
    return "\n".join(lines) + "\n"
