"""The systematic evaluation of Facchinetti et al. 2024 (../shared/PAPER.md), as one grid:
every registered attack at each of its `paper_settings`, on every bundle, broken down by gender.

  examples.py  bundle -> its test examples (speaker protocol: held-out speakers' unaugmented
               chunks; paper protocol: the study's split recomputed) and balanced orders
  waveform.py  waveform attacks (ser_core.waveform) on held-out speakers' clips: verified
               success against SNR per corpus and gender
  grid.py      bundles x attacks x settings -> tidy rows (JSON lines), resumable; profiles
               and their projected time (costs.json: measured seconds per example)
  cluster.py   Ray as the grid's executor (optional install, requirements-cluster.txt)
  stats.py     Wilson intervals for proportions, Newcombe intervals for their differences
  report.py    rows -> Markdown report beside the study's table, and plots
  defence.py   adversarial training (the study's FGSM recipe, and PGD) -> a new bundle"""
from .examples import TestSet, balanced_order, balanced_subset, test_set
from .stats import newcombe_difference, wilson

__all__ = ["TestSet", "balanced_order", "balanced_subset", "test_set", "wilson", "newcombe_difference"]
