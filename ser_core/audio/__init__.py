"""From a file to the model's input, one step a module:

  decode.py       audio file or samples -> mono float32 clip at 16 kHz, validated (typed errors)
  chunks.py       clip -> trimmed -> 3 s chunks (split and looped as the study does)
  chunkmap.py     the same chunking as a fixed index map of samples (what waveform attacks hold)
  features.py     chunks -> log-Mel features (261 frames x 128 bands), librosa, as served
  frontend.py     the same log-Mel in torch, differentiable (white-box waveform attacks)
  standardize.py  log-Mel -> standardised features (per-cell mean and variance)
  augment.py      trimmed clip -> pitch-shifted and time-stretched copies (training only)
  room.py         a clip played in a simulated room (pyroomacoustics): reverberation, noise,
                  microphone band; seeded training and held-out banks (EOT, over-the-air scoring)
  speech.py       is there speech in the clip (voice activity), for the app's warning
  level.py        how long and how loud a clip is (a model's training range, the app's note)
  defences.py     cheap input defences on the clip before its features (resample, quantise, MP3,
                  low-pass, noise), as a bundle's config applies them, and what an attacker
                  differentiates of them (BPDA, EOT)"""
