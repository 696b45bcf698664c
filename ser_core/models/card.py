"""A bundle's config -> its model card (README.md in the bundle folder)."""
from __future__ import annotations

from ser_core.data.corpora import CORPORA, DATA_LICENCES

LANGUAGE_CODES = {"emodb": "de", "emovo": "it", "ravdess": "en"}
PAPER_ACCURACY = {"emodb": (0.909, 0.895, 0.918), "emovo": (0.872, 0.893, 0.852),
                  "ravdess": (0.911, 0.911, 0.911)}


def _fmt(x):
    return "n/a" if x is None else f"{x:.3f}"


def render(config: dict) -> str:
    """The card: the model's data, protocol, figures and training, then its defence, if any."""
    body = render_multicorpus(config) if config.get("corpora") else _render(config)
    extra = defence_lines(config)
    return body + "\n" + "\n".join(extra) + "\n" if extra else body


def defence_lines(config: dict) -> list[str]:
    """The card's defence section: an input defence in front of a base model's weights
    (`defend-input`), or adversarial training from a base model (`defend`); [] for neither."""
    d = config.get("defence") or {}
    if d.get("chain"):
        chain = " then ".join(p["name"] + "".join(f" {k}={v}" for k, v in p.items() if k != "name")
                              for p in d["chain"])
        return ["## Defence", "", f"An input defence in front of `{config.get('defended_from')}`: {chain} (seed "
                f"{d.get('seed', 0)}), applied to every clip before its features, on /predict as in every attack's "
                f"verification (ser_core/audio/defences.py). The weights are `{config.get('defended_from')}`'s, read "
                f"from its folder (`weights_from`: {config.get('weights_from')}); the test metrics above are that "
                "model's, measured without the defence. Its robustness under adaptive attacks: the section below "
                "(docs/robustness.md)."]
    if not d.get("method"):
        return []
    waveform = d.get("domain") == "waveform"
    tr = config.get("training") or {}
    text = (f"Adversarial training ({d['reference']}) from `{d['base']}`: {d['method']}, "
            + (f"waveform domain, the L2 ball of {d['snr']:g} dB SNR of each 3 s chunk, {d['pgd_steps']} steps, "
               f"layers trained: {d.get('layers', 'all')}" + (f", TRADES beta {d['beta']:g}" if d["method"] == "trades-at"
                                                             else "") if waveform else f"eps {d['eps']}")
            + f", {d['adversarial_fraction']:.0%} of each batch adversarial, {tr.get('epochs')} epochs "
            f"({tr.get('steps')} steps), lr {d['learning_rate']}, batch {d['batch_size']}, fine-tuned from the "
            "undefended weights"
            + (f", capped at {d['max_steps']} steps (smoke run, not a trained defence)" if d.get("max_steps") else "")
            + (f", on {d['train_rows']} training examples (smoke run)" if d.get("train_rows") else "") + ".")
    if config.get("weights_from"):
        text += (f" Only the trained layers' tensors are stored here; the rest are read from `{d['base']}` "
                 f"(`weights_from`: {config['weights_from']}).")
    return ["## Defence", "", text]


def _render(config: dict) -> str:
    c = config["corpus"]
    spec = CORPORA[c]
    lic = DATA_LICENCES[c]
    m = config["metrics"]["test"]
    split = config["split"]
    tr = config["training"]
    hp = config["hyperparameters"]
    cm = m["confusion"]
    cv = config.get("crossval")
    recipe = hp.get("recipe")
    if recipe:
        hp_line = (f"- Training recipe `{recipe}` (ser_core/training/recipes.py): {hp['standardizer']} "
                   f"standardiser, input normalisation {hp['input_norm']}, AdamW lr "
                   f"{hp['learning_rate']} (weight decay {hp['weight_decay']}, {hp['schedule']} "
                   f"schedule), batch {hp['batch_size']}, at most {hp['max_epochs']} epochs, "
                   + (f"the model the average of the weights of epochs "
                      f"{int(hp['swa_start'] * hp['max_epochs']) + 1}-{hp['max_epochs']} (no epoch "
                      f"selected), dropout " if hp.get("swa_start") else
                      f"selection on {hp['select_on']} (patience {hp['patience']}), dropout ")
                   + f"{hp['dropout']} / LSTM input {hp['lstm_input_dropout']}, augmentation: time "
                   f"shift {hp['time_roll']}, Mel shift {hp['mel_shift']}, SpecAugment "
                   f"{hp['freq_masks']}x{hp['freq_mask_width']} bands / {hp['time_masks']}x"
                   f"{hp['time_mask_width']} frames, mixup {hp['mixup_alpha']}, label smoothing "
                   f"{hp['label_smoothing']}.")
    else:
        hp_line = (f"- Hyperparameters: dropout {hp['dropout']}, LSTM input dropout {hp['lstm_input_dropout']}, "
                   f"learning rate {hp['learning_rate']}, batch {hp['batch_size']}, at most {hp['max_epochs']} "
                   f"epochs{' (the study: 100; capped to fit a 2-core CPU budget)' if hp['max_epochs'] < 100 else ''}, "
                   f"early stopping patience {hp['early_stopping_patience']}.")
    cv_lines = []
    if cv:
        base = cv.get("baseline")
        cv_lines = [
            "## Accuracy on new speakers (speaker-fold cross-validation)",
            f"The published figure of this model: recipe `{cv['recipe']}` cross-validated over "
            f"{cv['folds']} speaker folds, every one of the {cv['n_speakers']} speakers tested "
            f"once, {cv['n_clips']} clips (clip decision = mean of its 3 s chunks), 95 % "
            "intervals from a bootstrap over speakers. This bundle itself was then trained on "
            "all speakers but its two validation speakers.",
            "",
            "| figure | value | 95 % interval |", "|---|---|---|",
            f"| accuracy | {cv['accuracy']:.3f} | {cv['accuracy_ci95'][0]:.3f}-{cv['accuracy_ci95'][1]:.3f} |",
            f"| unweighted average recall | {cv['uar']:.3f} | {cv['uar_ci95'][0]:.3f}-{cv['uar_ci95'][1]:.3f} |",
            f"| macro-F1 | {cv['macro_f1']:.3f} | |",
            f"| male / female accuracy | {cv['male_accuracy']:.3f} / {cv['female_accuracy']:.3f} | |",
            f"| lowest class recall | {cv['min_class_recall']:.3f} | |",
            "",
            "Per-class recall: " + ", ".join(f"{k} {v:.2f}" for k, v in cv["per_class_recall"].items()
                                             if v is not None) + ".",
            "",
            (f"On the same folds {base['name']} reaches accuracy {base['accuracy']:.3f}, UAR "
             f"{base['uar']:.3f}. " if base else "")
            + f"Full table: {cv['report']} in the project repository.",
            "",
        ]
    pre = tr.get("pretrained_on")
    co = tr.get("cotrained_on") or {}  # {corpus: {"chunks", "speakers"}}
    others = list(pre["corpora"] if pre else []) + [p for p in co if not pre or p not in pre["corpora"]]
    data_corpora = [c] + others
    pre_lines = []
    if pre:
        pre_lines.append(
            f"- Pre-training (before the corpus above): {pre['epochs']} epochs on every clip of "
            f"{' and '.join(pre['corpora'])} ({pre['chunks']} chunks, emotions "
            f"{', '.join(pre['emotions'])}; ser_core/training/pretrain.py). None of their speakers is one "
            f"of {c}'s.")
    if co:
        pre_lines.append(
            "- Co-training (beside the corpus above): the clips of its classes from "
            + " and ".join(f"{p} ({v['chunks']} chunks, {v['speakers']} speakers)" for p, v in co.items())
            + f" (ser_core/pretrain.cotrain_rows). None of their speakers is one of {c}'s.")
    pre_lines += [f"- {p}: licence {DATA_LICENCES[p]['licence']}; citation: {DATA_LICENCES[p]['citation']}."
                  for p in others]
    lines = [
        "---",
        f"license: {'cc-by-nc-sa-4.0' if 'ravdess' in data_corpora else 'other'}",
        f"language: {LANGUAGE_CODES[c]}",
        "tags: [speech-emotion-recognition, adversarial-robustness, onnx]",
        "---",
        f"# {config['name']}: CNN-LSTM speech emotion recognition ({spec.language}, {c})",
        "",
        "The CNN-LSTM of Facchinetti, Simonetta, Ntalampiras, \"A Systematic Evaluation of "
        "Adversarial Attacks against Speech Emotion Recognition Models\" (Intelligent Computing "
        "2024), reimplemented in PyTorch and exported to ONNX.",
        "",
        *cv_lines,
        "## Training data",
        f"- Corpus: {c} ({spec.language}), {config['data']['clips']} clips, "
        f"classes: {', '.join(config['labels'])}.",
        f"- Licence of the training data: {lic['licence']}.",
        f"- Citation: {lic['citation']}.",
        *pre_lines,
        "",
        "## Protocol",
        f"- Protocol: **{split['protocol']}**" + (f" (seed {split['seed']}). " if "seed" in split else ". ")
        + ("Stratified random 80/20 split over the augmented chunks, as in the study: augmented "
           "copies of one utterance and every speaker are on both sides, so the test accuracy is "
           "optimistic." if split["protocol"] == "paper" else
           "Trained on every speaker but one male and one female validation speaker (early "
           "stopping); no test speakers: the published figure is the cross-validation above."
           if recipe and cv else "Trained on every speaker but one male and one female validation speaker, "
           "never trained on; the figures below are on them." if recipe else "Held-out test speakers and separate validation speakers, balanced by gender; "
           "augmentation on training data only; standardiser fitted on training data only."),
        f"- Speakers: train {split['speakers'].get('train', 'all')}, validation "
        f"{split['speakers'].get('val', 'random 20 % of training chunks')}"
        + (f" (sentences {split['speakers']['val_sentences']} held out)" if 'val_sentences' in split['speakers'] else "")
        + ", test "
        f"{split['speakers'].get('test', 'random 20 % of chunks')}.",
        f"- Rows (3 s chunks): {split['rows']}.",
        f"- Features: 16 kHz, trimmed, 3 s windows, log-Mel 128 x 261 (dB re. minimum), "
        f"standardised ({ {'cell': 'one mean and scale per cell', 'band': 'per Mel band', 'global': 'one mean and scale for all cells'}[hp.get('standardizer', 'cell')] }); clip range for attacks {config['clip_range']}.",
        hp_line,
        f"- Weights stored as {config.get('weights_dtype')}; metrics below are measured with "
        "the stored weights.",
        "",
        "## Test metrics" if not m.get("subset") else f"## Held-out figures: {m['subset']}",
        "| subset | n | accuracy |",
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
        f"- {tr['epochs']} epochs (best {tr['best_epoch']}), {tr['seconds'] / 60:.1f} min"
        + (f" ({tr['cpu_seconds'] / 60:.1f} CPU min; wall time counts other jobs sharing the machine)"
           if tr.get("cpu_seconds") else "")
        + f" on {tr['hardware']}, precision {tr['precision']}.",
        "", "## Retrain", "", "```", config["retrain_command"], "```",
        "", "## Limits",
        "- Acted speech from one corpus and language; expect lower accuracy on other speakers, "
        "microphones and languages.",
        "- Not robust to adversarial perturbations: that is what this project demonstrates.",
    ]
    return "\n".join(lines) + "\n"


def _ci(v):
    return f"{v[0]:.3f}-{v[1]:.3f}" if v else "n/a"


def render_multicorpus(config: dict) -> str:
    """The card of a bundle trained on several corpora (ser_core/training/multicorpus_ship.py):
    every corpus with its licence and citation, the pooled speaker-fold and leave-one-corpus-out
    figures, the held-out validation speakers, the training range of clip length and loudness."""
    corpora = config["corpora"]
    data = config["data"]["corpora"]
    cv, loco = config.get("crossval"), config.get("loco")
    hp, tr = config["hyperparameters"], config["training"]
    held = config["metrics"]["held_out_clips"]
    rng = config.get("input_range") or {}
    lines = ["---", f"license: {'cc-by-nc-sa-4.0' if 'ravdess' in corpora else 'other'}",
             "language: [" + ", ".join(LANGUAGE_CODES[c] for c in corpora) + "]",
             "tags: [speech-emotion-recognition, adversarial-robustness, onnx]", "---",
             f"# {config['name']}: CNN-LSTM speech emotion recognition, {len(config['labels'])} emotions, "
             f"{' + '.join(CORPORA[c].title for c in corpora)}", "",
             "The CNN-LSTM of Facchinetti, Simonetta, Ntalampiras, \"A Systematic Evaluation of "
             "Adversarial Attacks against Speech Emotion Recognition Models\" (Intelligent Computing "
             "2024), trained on every corpus at once (ser_core/training/multicorpus.py): the emotions "
             f"{', '.join(config['labels'])}; RAVDESS's calm is merged into neutral; a class a corpus "
             "lacks is masked in the loss for its clips (not counted as a negative).", ""]
    if cv:
        lines += ["## Accuracy on new speakers",
                  f"Pooled speaker folds ({cv['folds']} folds"
                  + (f" of {cv['folds_total']}: only these were trained in time, so {cv['n_speakers']} of the "
                     "40 speakers are tested" if cv.get("folds_total", cv["folds"]) > cv["folds"] else
                     f", every one of the {cv['n_speakers']} speakers tested once")
                  + f", {cv['n_clips']} clips, clip decision = mean of its 3 s chunks over all "
                  f"{len(config['labels'])} emotions, 95 % intervals from a bootstrap over speakers): "
                  f"UAR **{cv['uar']:.3f}** ({_ci(cv['uar_ci95'])}), accuracy {cv['accuracy']:.3f} "
                  f"({_ci(cv['accuracy_ci95'])}), male / female accuracy {cv['male_accuracy']:.3f} / "
                  f"{cv['female_accuracy']:.3f}, lowest class recall {cv['min_class_recall']:.3f}"
                  + (f"; eGeMAPS + SVM on the same folds: UAR {cv['baseline']['uar']:.3f}." if cv.get("baseline") else "."),
                  "", "Per-class recall: " + ", ".join(f"{k} {v:.2f}" for k, v in cv["per_class_recall"].items()
                                                     if v is not None) + ".", ""]
    for title, block in (("pooled folds, by corpus and gender", cv), ("leave one corpus out (trained on the "
                         "other two, decided over the classes the held-out corpus shares with them)", loco)):
        if block:
            lines += [f"| {title} | clips | speakers | UAR (95 %) | lowest class recall | eGeMAPS + SVM UAR |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {k} | {v['n_clips']} | {v['n_speakers']} | {v['uar']:.3f} ({_ci(v['uar_ci95'])}) | "
                      f"{v['min_class_recall']:.2f} | {_fmt(v.get('baseline_uar'))} |" for k, v in block["parts"].items()]
            lines.append("")
    if not cv and not loco:
        lines += ["No cross-validated figure yet: reports/multicorpus/ had none when this bundle was written.", ""]
    lines += ["## Training data"]
    lines += [f"- {CORPORA[c].title} ({CORPORA[c].language}): {d['clips']} clips, {d['speakers']} speakers; "
              f"classes {', '.join(config['corpus_labels'][c])}; licence: {d['licence']}; citation: "
              f"{d['citation']}." for c, d in data.items()]
    lines += ["- Because RAVDESS is CC BY-NC-SA 4.0, this model is for non-commercial use and shares alike."
              if "ravdess" in corpora else "", "",
              "## Protocol",
              f"- Trained on every speaker but the validation speakers {', '.join(config['split']['speakers']['val'])} "
              "(one male and one female per corpus, never trained on; the model is the average of the "
              f"weights of epochs {int(hp['swa_start'] * hp['max_epochs']) + 1}-{hp['max_epochs']}, so "
              "they chose nothing).",
              f"- Rows (3 s chunks): {config['split']['rows']}.",
              f"- Features: 16 kHz, trimmed, 3 s windows, log-Mel 128 x 261, one standardiser over all "
              f"training rows ({hp['standardizer']}), input normalisation {hp['input_norm']}; clip range "
              f"for attacks {config['clip_range']}.",
              f"- Recipe `{hp.get('recipe')}`: AdamW lr {hp['learning_rate']} ({hp['schedule']}), batch "
              f"{hp['batch_size']}, {hp['max_epochs']} epochs, time shift, Mel shift {hp['mel_shift']}, "
              f"SpecAugment, mixup {hp['mixup_alpha']} (within a corpus's class set), label smoothing "
              f"{hp['label_smoothing']}"
              + (f"; each training chunk drawn as recorded in a simulated room (reverberation, noise, "
                 f"band-limited microphone) with probability {hp['room_p']}" if hp.get("room_p") else "")
              + (f"; negatives outside a corpus's classes: {hp['absent_negatives']} (a neutral clip of "
                 "a corpus without boredom pushes boredom down)" if hp.get("absent_negatives") else "")
              + ".",
              f"- Weights stored as {config.get('weights_dtype')}.",
              f"- Training range: clip length {rng.get('seconds', {}).get('min')}-{rng.get('seconds', {}).get('max')} s, "
              f"loudness (95th percentile of 50 ms RMS) {rng.get('loudness_dbfs', {}).get('min')} to "
              f"{rng.get('loudness_dbfs', {}).get('max')} dBFS; the app says so when a clip is outside it.",
              "", f"## Held-out validation speakers (clip level, n {held['n_clips']})",
              f"UAR {held['uar']:.3f} ({_ci(held['uar_speaker_bootstrap95'])}), accuracy {held['accuracy']:.3f}; "
              + ", ".join(f"{c} UAR {v['uar']:.3f} (n {v['n_clips']})"
                          for c, v in config["metrics"]["held_out_by_corpus"].items()) + ".",
              "", "## Training run",
              f"- {tr['epochs']} epochs, {tr['cpu_seconds'] / 60:.1f} CPU min ({tr['seconds'] / 60:.1f} min wall, "
              f"shared machine) on {tr['hardware']}.",
              "", "## Retrain", "", "```", config["retrain_command"], "```", "", "## Limits",
              "- Acted speech of 40 speakers in three languages; a visitor's voice, language and "
              "microphone are none of them: the leave-one-corpus-out figures are the closer guess.",
              "- Not robust to adversarial perturbations: that is what this project demonstrates."]
    return "\n".join(lines) + "\n"
