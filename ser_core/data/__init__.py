"""The corpora and what is cut from them:

  corpora.py   corpus folders -> utterances (emotion, speaker, gender, sentence); CORPORA, the
               one list of corpora and their classes
  dataset.py   utterances -> cached chunk tables (log-Mel features, labels, speakers, genders)
  room_copies.py  a chunk table's chunks recorded in simulated rooms, row for row (room and
               noise augmentation)
  splits.py    the study's split (stratified 80/20 over augmented chunks) and speaker splits
  folds.py     fixed speaker folds of the cross-validation
  held_out.py  a bundle's held-out test examples: chunks (feature attacks) or whole clips
               (waveform attacks), balanced orders, the data folder"""
