"""The systematic evaluation of Facchinetti et al. 2024 (../shared/PAPER.md), as one grid:
every registered attack, both domains, at each of its settings (the study's `paper_settings`; a
waveform attack's `grid_settings`), on every bundle with test examples of its domain, broken
down by gender; one results file format, one resume rule, one report.

  plan.py       what runs and what it costs: profiles (examples per attack family), the cells,
                the cost table (costs.json: measured seconds per example), projections and the
                dry-run plan
  cells.py      a cell's storage: batch files and resume, per-example outcomes -> tidy rows
                (JSON lines), rows measured on a model's current weights
  executors.py  who runs the batches: this process (LocalExecutor) or Ray tasks (RayExecutor,
                optional install, requirements-cluster.txt)
  run.py        run_grid: the plan's cells not yet done, through an executor, into the results file
  report/       rows -> Markdown report beside the study's table, the waveform attacks' verified
                success against SNR, and plots
  transfer.py   the transfer matrix: waveform flips crafted on a source model (or an ensemble)
                and scored by every target model and the eGeMAPS + SVM baseline, same clips
  transfer_report.py  its Markdown tables (entries with Wilson intervals, conditioned on the
                source's flip, CPU seconds)
  robustness/   how robust is a model: the worst case over a suite of waveform attacks per clip
                (robust accuracy with intervals, who flipped each clip), input defences attacked
                naively and adaptively, randomized smoothing's certificate
Test examples (`bundle_test_set`, balanced orders) are data: ser_core/data/held_out.py;
intervals are ser_core/stats.py. Adversarial training (the defence whose bundles the grid also
attacks) is training, not evaluation: ser_core/training/adversarial.py."""
from ser_core.data.held_out import HeldOutSet, balanced_order, balanced_subset, bundle_test_set
from ser_core.stats import newcombe_difference, wilson

__all__ = ["HeldOutSet", "balanced_order", "balanced_subset", "bundle_test_set", "wilson", "newcombe_difference"]
