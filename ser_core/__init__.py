"""Speech emotion recognition under adversarial attack.

The data flows through one module per step:
  audio.py        audio file -> decoded clip (mono, 16 kHz, validated)
  chunks.py       decoded clip -> trimmed -> 3 s chunks (split and looped as the study does)
  augment.py      trimmed clip -> pitch-shifted and time-stretched copies (training only)
  features.py     chunks -> log-Mel features (261 frames x 128 bands)
  standardize.py  log-Mel -> standardised features (per-cell mean/variance)
  model.py        standardised features -> logits (the study's CNN-LSTM)
  bundle.py       weights + config + ONNX session: predict a clip, hand out the torch model
  attacks/        the one attack base class and registry (both domains); feature attacks, one per file
  waveform/       waveform attacks, verified on written 16-bit WAVs, and their differentiable
                  log-Mel front-end
  clip_attack.py  one clip attacked in either domain -> ClipAttackResult
Around them: corpora.py (corpus folders -> utterances), dataset.py (cached chunk tables),
splits.py (paper and speaker protocols), train.py, defence.py (adversarial training),
onnx_export.py, model_card.py, config.py (the study's constants), errors.py (typed errors);
evaluation/ (the systematic evaluation and its report) and serving/ (what the app calls)."""
