"""Attacks on the waveform: adversarial audio you can play, its flip verified end to end.

The study attacks standardised log-Mel features; audio made from them by inversion is not what
the model hears (PAPER.md, last paragraph). These attacks perturb the decoded samples of a
whole clip instead:
  chunkmap.py  clip -> fixed index map of its 3 s chunks (trim, windows, re-trim, looping)
  frontend.py  3 s chunks -> standardised log-Mel features in torch, differentiably (the
               serving path's librosa features, rebuilt with gradients)
  base.py      `WaveformAttack` (the waveform domain of ser_core.attacks.base.Attack), 16-bit
               arithmetic, budgets (SNR dB or 16-bit units), white-box clip model, counted
               black-box serving path
  pgd.py       "pgd"    Linf PGD/BIM, white-box, fixed budget
  apgd.py      "apgd"   Auto-PGD (adaptive step, momentum, restarts), white-box, fixed budget:
                        Linf (SNR dB or 16-bit units) or under the clip's masking threshold
  cw.py        "cw"     Carlini-Wagner L2, white-box, minimisation (reports the SNR needed)
  square.py    "square" Linf random search (Square Attack), black-box: serving path only
  masking.py   the clip's frequency masking threshold (Qin et al. 2019) and how far a
               perturbation stands above it, reported beside the SNR for every attack
  verify.py    16-bit WAV written, read back, scored by bundle.predict_clip
Every attack runs untargeted (any other emotion) or targeted (`target`: the emotion to land on).
Each registers in the one attack registry (`ser_core.attacks.get_attack(name, bundle,
domain="waveform")`); `ser_core.attacks.clip.attack_clip(..., domain="waveform")` runs one on a
clip and verifies the result, for the CLI (`python -m export attack ... --domain waveform`), the
app and the evaluation."""
from __future__ import annotations

# importing each attack module registers its attack (ser_core.attacks.base.register)
from ser_core.attacks.waveform import apgd, cw, pgd, square  # noqa: F401
from ser_core.attacks.waveform.base import Objective, WaveformAttack, WaveformRun, snr_db
from ser_core.audio.chunkmap import chunk_index_map

__all__ = ["Objective", "WaveformAttack", "WaveformRun", "chunk_index_map", "snr_db"]
