"""Grid rows -> Markdown report (reports/README.md) and plots.

The paper-protocol rows are set beside the study's table "Accuracy under attack"
(../shared/PAPER.md, Facchinetti et al. 2024), cell by cell, with every cell that differs by
more than 5 points marked and a reason given where the data shows one. The speaker-protocol
rows (models the study did not have) are read for differences between genders, languages
(corpora) and protocols, each with the examples behind it and 95 % intervals (Wilson for an
accuracy, Newcombe for a difference).

  study.py    the study's reference numbers: clean accuracy, its table, its defended models
  compare.py  our paper-protocol cells beside the study's, and why a cell differs
  tables.py   examples, differences, transfer, defence, waveform and whole-grid tables
  plots.py    accuracy and confidence plots
  readme.py   write_report: the page, every section in order
  common.py   formatting the sections share"""
from ser_core.evaluation.report.compare import paper_agreement, paper_cells, paper_comparison
from ser_core.evaluation.report.readme import write_report
from ser_core.evaluation.report.study import STUDY_CLEAN, STUDY_DEFENCE, STUDY_GPU_HOURS, STUDY_TABLE
from ser_core.evaluation.report.tables import waveform_lines

__all__ = ["write_report", "paper_cells", "paper_agreement", "paper_comparison", "waveform_lines",
           "STUDY_CLEAN", "STUDY_TABLE", "STUDY_DEFENCE", "STUDY_GPU_HOURS"]
