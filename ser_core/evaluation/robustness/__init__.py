"""How robust is a model: the worst case over a fixed suite of waveform attacks, clip by clip,
and the cheap input defences attacked naively and adaptively (docs/robustness.md).

  suite.py     the members (APGD-CE, APGD-T with DLR, Square on ONNX, C&W L2), the budgets (L2
               balls of an SNR, one Linf ball), one clip's worst case and who flipped it
  run.py       the held-out clips, a defended copy of a bundle and its attacker view, the
               resumable run over clips (one JSON line a clip), fold bundles for --crossval
  report.py    rows -> robust accuracy with Wilson and speaker-bootstrap intervals, per class
               and gender, median flip SNR, member contributions; Markdown tables
  defences.py  each input defence naive against adaptive, clean accuracy with it, the table of
               which only look robust; randomized smoothing's certified radius in dB SNR
  page.py      the README.md of a robustness folder, generated from its results files
  card.py      a bundle's measured robust accuracy written into its config.json ("robustness")
               and its model card, where the app reads it (`robustness-card`)
The input defences themselves are audio transforms: ser_core/audio/defences.py."""
from ser_core.evaluation.robustness.suite import DEFAULT_BUDGETS, MEMBERS, Budget, SuiteConfig, attack_one

__all__ = ["DEFAULT_BUDGETS", "MEMBERS", "Budget", "SuiteConfig", "attack_one"]
