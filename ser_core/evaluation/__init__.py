"""The systematic evaluation of Facchinetti et al. 2024 (../shared/PAPER.md), as one grid:
every registered attack at each of its `paper_settings`, on every bundle, broken down by gender.

  examples.py  bundle -> its test examples, `bundle_test_set` (speaker protocol: held-out
               speakers' unaugmented chunks; paper protocol: the study's split recomputed) and
               balanced orders
  waveform.py  waveform attacks (ser_core.attacks.waveform) on held-out speakers' clips: verified
               success against SNR per corpus and gender
  grid.py      bundles x attacks x settings -> tidy rows (JSON lines), resumable; profiles
               and their projected time (costs.json: measured seconds per example)
  cluster.py   Ray as the grid's executor (optional install, requirements-cluster.txt)
  stats.py     Wilson intervals for proportions, Newcombe intervals for their differences
  report.py    rows -> Markdown report beside the study's table, and plots
Adversarial training (the defence whose bundles the grid also attacks) is training, not
evaluation: ser_core/training/adversarial.py."""
from ser_core.data.held_out import HeldOutSet, balanced_order, balanced_subset, bundle_test_set
from ser_core.stats import newcombe_difference, wilson

__all__ = ["HeldOutSet", "balanced_order", "balanced_subset", "bundle_test_set", "wilson", "newcombe_difference"]
