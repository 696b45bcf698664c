"""Attack one audio clip in the feature domain: clip -> standardised chunks -> attack all chunks
as one batch -> clip decision before and after.

The clip's decision is the mean of its chunks' probabilities (`ModelBundle.prediction_from_
probabilities`), so a clip "flips" when that mean changes its top class. As in the study the
attacked input is the standardised log-Mel spectrogram, not the waveform (see
`ser_core.waveform` for attacks whose audio is verified)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .attacks import AttackResult, get_attack
from .audio import load_audio, validate_waveform
from .bundle import ClipPrediction


@dataclass
class ClipAttackResult:
    bundle_name: str
    before: ClipPrediction          # of the clean clip
    after: ClipPrediction           # of the adversarial features
    result: AttackResult            # chunk-level result of the attack
    features: np.ndarray            # standardised clean features (n_chunks, 261, 128)
    adversarial_features: np.ndarray

    @property
    def flipped(self) -> bool:
        """The clip-level decision changed."""
        return self.before.label != self.after.label

    def to_dict(self) -> dict:
        r = self.result
        return {"model": self.bundle_name, "attack": r.attack, "params": r.params,
                "label_before": self.before.label, "label_after": self.after.label,
                "probabilities_before": self.before.probabilities,
                "probabilities_after": self.after.probabilities,
                "flipped": self.flipped, "chunks": int(len(r.x)),
                "chunks_flipped": int(r.flipped.sum()),
                "mean_perturbation": float(r.mean_abs.mean()), "l2": float(r.l2.mean()),
                "linf": float(r.linf.max()), "changed_cells": int(r.changed_cells.sum()),
                "queries": int(r.queries.sum()), "seconds": round(float(r.seconds), 4),
                "stopped_early": r.stopped_early, "stop_reason": r.stop_reason}


def attack_clip(bundle, audio, attack: str, params: dict | None = None, sample_rate: int | None = None,
                max_seconds: float | None = None, progress=None) -> ClipAttackResult:
    """Attack every 3 s chunk of `audio` (a path, or a waveform with its sample_rate) with the
    registered attack `attack` and `params` (checked: ParameterError on bad ones), untargeted
    against each chunk's clean decision. progress(fraction, message) as for attacks."""
    attacker = get_attack(attack, bundle, **(params or {}))
    if isinstance(audio, (str, Path)):
        y = load_audio(audio, bundle.feature_config.sample_rate, max_seconds=max_seconds)
    else:
        y = validate_waveform(audio, sample_rate, sample_rate=bundle.feature_config.sample_rate,
                              max_seconds=max_seconds)
    x = bundle.features(y)
    result = attacker(x, progress=progress)
    return ClipAttackResult(bundle.name, bundle.prediction_from_probabilities(result.clean_probs),
                            bundle.prediction_from_probabilities(result.adv_probs), result,
                            result.x, result.x_adv)
