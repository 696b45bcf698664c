"""Speech emotion recognition under adversarial attack.

The data flows through one module per step:
  audio.py        audio file -> decoded clip (mono, 16 kHz, validated)
  chunks.py       decoded clip -> trimmed -> 3 s chunks (split and looped as the study does)
  augment.py      trimmed clip -> pitch-shifted and time-stretched copies (training only)
  features.py     chunks -> log-Mel features (261 frames x 128 bands)
  standardize.py  log-Mel -> standardised features (per-cell mean/variance)
  model.py        standardised features -> logits (the study's CNN-LSTM)
  bundle.py       weights + config + ONNX session: predict a clip, hand out the torch model
  attacks/        one attack per file, registry by name
Around them: corpora.py (corpus folders -> utterances), dataset.py (cached chunk tables),
splits.py (paper and speaker protocols), train.py, onnx_export.py, model_card.py, config.py
(the study's constants), errors.py (typed errors)."""
