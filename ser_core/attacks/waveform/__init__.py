"""Attacks on the waveform: adversarial audio you can play, its flip verified end to end.

The study attacks standardised log-Mel features; audio made from them by inversion is not what
the model hears (PAPER.md, last paragraph). These attacks perturb the decoded samples of whole
clips instead, the chunking held fixed (ser_core/audio/chunkmap.py) and the log-Mel rebuilt with
gradients (ser_core/audio/frontend.py):
  base.py      `WaveformAttack` (the waveform domain of the one attack call): each clip rounded
               to 16 bits, attacked, written as a 16-bit WAV and verified; 16-bit arithmetic,
               budgets (SNR dB or 16-bit units), white-box clip model, counted serving path
  pgd.py       "pgd"    Linf PGD/BIM, white-box, fixed budget
  apgd.py      "apgd"   Auto-PGD (adaptive step, momentum, restarts), white-box, fixed budget:
                        L2 or Linf (SNR dB or 16-bit units) or under the clip's masking threshold
  cw.py        "cw"     Carlini-Wagner L2, white-box, minimisation (reports the SNR needed)
  square.py    "square" Linf random search (Square Attack), black-box: serving path only
  masking.py   the clip's frequency masking threshold (Qin et al. 2019) and how far a
               perturbation stands above it, reported beside the SNR for every attack
  verify.py    16-bit WAV written, read back, scored by bundle.predict_clip
  eot.py       expectation over transformations (rooms, audio/room.py): the parameters an attack
               declares to offer it, a seeded sampler of transforms, the averaged clip model
Every attack runs untargeted (any other emotion) or targeted (an Objective with targets; in
`attack_clip`, `target`: the emotion to land on), and registers in the one attack registry:
`get_attack("apgd", bundle, snr_db=30)(clips, objective)`, or `attack_clip(bundle, "clip.wav",
"apgd", {"snr_db": 30})` for one clip (the CLI, the app and the evaluation grid use both)."""
from __future__ import annotations

# importing each attack module registers its attack (ser_core.attacks.base.register)
from ser_core.attacks.waveform import apgd, cw, pgd, square  # noqa: F401
from ser_core.attacks.waveform.base import WaveformAttack, WaveformRun, snr_db

__all__ = ["WaveformAttack", "WaveformRun", "snr_db"]
