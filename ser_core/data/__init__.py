"""Corpus folders -> utterances -> cached chunk tables -> splits, speaker folds, held-out test sets."""
