"""Attack one audio clip, in either domain, and say what the serving path decides before and after.

    attack_clip(bundle, "clip.wav", "fgsm", {"eps": 0.5})                            # features
    attack_clip(bundle, "clip.wav", "apgd", {"snr_db": 30}, domain="waveform")        # waveform

Both start the same way: the clip is decoded and validated, and its clean decision is the serving
path's (the mean of its 3 s chunks' probabilities, `ModelBundle.predict_clip`). They differ in
what is perturbed and in how a flip is verified:
  - features (the study): clip -> standardised chunks -> every chunk attacked as one batch; the
    decision after is that of the adversarial features (`ModelBundle.prediction_from_probabilities`).
    As in the study the attacked input is the standardised log-Mel spectrogram, not audio.
  - waveform: the decoded samples of the whole clip (rounded to 16 bits) are attacked with the
    chunking held fixed (`ser_core.attacks.waveform`); the result is written as a 16-bit WAV, read back
    and scored by the serving path, and only that decision counts.
Either way the result is a `ClipAttackResult`, whose `to_dict` the CLI, the app and the
waveform evaluation print or store."""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

from ser_core.attacks import DOMAINS, AttackResult, get_attack
from ser_core.audio.decode import load_audio, validate_waveform
from ser_core.models.bundle import ClipPrediction
from ser_core.control import stop_reason
from ser_core.errors import ParameterError


@dataclass
class ClipAttackResult:
    """One attacked clip. before: the clean clip's decision; after: the decision that counts
    (features: on the adversarial features; waveform: the serving path's on the written 16-bit
    WAV). flipped: the two differ. queries: model evaluations the attack spent (features: chunks
    scored, summed over chunks; waveform: clip scorings, model forward passes and serving-path
    calls); the clean and verification scorings are not counted. stop_reason: 'deadline' or
    'cancelled' when the run (ser_core.control) stopped the attack before it finished; the
    result is then the best so far."""

    domain: ClassVar[str] = ""
    seconds_digits: ClassVar[int] = 3  # rounding of `seconds` in to_dict, as each domain has printed it

    model: str
    attack: str
    params: dict
    before: ClipPrediction
    after: ClipPrediction
    queries: int
    seconds: float
    stop_reason: str | None

    @property
    def flipped(self) -> bool:
        return self.before.label != self.after.label

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    @property
    def label_before(self) -> str:
        return self.before.label

    @property
    def label_after(self) -> str:
        return self.after.label

    def to_dict(self) -> dict:
        return {"model": self.model, "attack": self.attack, "params": self.params,
                "label_before": self.before.label, "probabilities_before": self.before.probabilities,
                "label_after": self.after.label, "probabilities_after": self.after.probabilities,
                **self._figures(),
                "queries": int(self.queries), "seconds": round(float(self.seconds), self.seconds_digits),
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
                **self._files()}

    def _figures(self) -> dict:
        """The domain's flip flag and perturbation figures."""
        raise NotImplementedError

    def _files(self) -> dict:
        return {}


@dataclass
class FeatureClipResult(ClipAttackResult):
    """chunk_result: the attack's result on the clip's chunks (one example each); features and
    adversarial_features: standardised (n_chunks, 261, 128)."""

    domain: ClassVar[str] = "features"
    seconds_digits: ClassVar[int] = 4
    chunk_result: AttackResult = field(repr=False, default=None)

    @property
    def features(self) -> np.ndarray:
        return self.chunk_result.x

    @property
    def adversarial_features(self) -> np.ndarray:
        return self.chunk_result.x_adv

    def _figures(self) -> dict:
        r = self.chunk_result
        return {"flipped": self.flipped, "chunks": int(len(r.x)), "chunks_flipped": int(r.flipped.sum()),
                "mean_perturbation": float(r.mean_abs.mean()), "l2": float(r.l2.mean()),
                "linf": float(r.linf.max()), "changed_cells": int(r.changed_cells.sum())}


@dataclass
class WaveformClipResult(ClipAttackResult):
    """after: the serving path on the written 16-bit WAV (`wav_path`), so `flipped` is a
    verified flip; flipped_before_quantisation: the serving path on the adversarial samples
    before rounding to 16 bits. snr_db (inf when nothing changed), linf_16bit and l2 (full
    scale 1) measure the written clip against the clean one. target: the emotion a targeted
    attack was asked to land on (None: untargeted); target_reached: whether the decision on the
    written WAV is that emotion (untargeted: the same as flipped). perceptual: the written
    perturbation against the clean clip's masking threshold (masking.py): mask_exceeded_fraction
    of STFT cells above it, pmr_p95_db (95th percentile of the cells' perturbation-to-mask
    ratio, dB), pmr_max_db. chunking_unchanged: the written WAV chunks as the clean clip does."""

    domain: ClassVar[str] = "waveform"
    flipped_before_quantisation: bool = False
    snr_db: float = math.inf
    linf_16bit: int = 0
    l2: float = 0.0
    wav_path: Path | None = None
    adversarial_audio: np.ndarray | None = field(repr=False, default=None)
    sample_rate: int = 16_000
    chunking_unchanged: bool = True
    extra: dict = field(default_factory=dict)
    target: str | None = None
    target_reached: bool = False
    perceptual: dict = field(default_factory=dict)

    def _figures(self) -> dict:
        return {"verified_flipped": self.flipped, "flipped_before_quantisation": self.flipped_before_quantisation,
                "snr_db": None if math.isinf(self.snr_db) else round(self.snr_db, 3),
                "linf_16bit": self.linf_16bit, "l2": self.l2}

    def _files(self) -> dict:
        return {"wav_path": str(self.wav_path), "chunking_unchanged": self.chunking_unchanged,
                "target": self.target, "target_reached": self.target_reached, "perceptual": self.perceptual,
                "extra": {k: (None if isinstance(v, float) and math.isinf(v) else v) for k, v in self.extra.items()}}


def attack_clip(bundle, audio, attack: str, params: dict | None = None, domain: str = "features",
                sample_rate: int | None = None, max_seconds: float | None = None, out_dir=None,
                progress=None, target: str | None = None) -> ClipAttackResult:
    """Attack `audio` (a path, or a waveform with its sample_rate) with the registered attack
    `attack` of `domain` and `params` (checked first: ParameterError on bad ones, before any
    audio work). progress(fraction, message) is called now and then.

    features: every 3 s chunk attacked, untargeted against its clean decision; returns a
    FeatureClipResult. waveform: the whole clip attacked and its flip verified on the 16-bit
    WAV written to out_dir (default: a new temporary folder); target: an emotion of the
    bundle's labels to land on, or None (any other emotion); returns a WaveformClipResult."""
    if domain not in DOMAINS:
        raise ParameterError(f"unknown domain {domain!r} (accepted: {', '.join(DOMAINS)})")
    if params is not None and not isinstance(params, dict):
        raise ParameterError(f"{attack}: params must be a dict of parameter values, not {type(params).__name__}")
    runner = get_attack(attack, bundle, domain=domain, **(params or {}))
    if domain == "features":
        if target is not None:
            raise ParameterError("a target emotion is for waveform attacks (accepted: domain 'waveform', "
                                 "or no target)")
        y, _ = _decode(bundle, audio, sample_rate, max_seconds)
        result = runner(bundle.features(y), progress=progress)
        return FeatureClipResult(bundle.name, attack, dict(runner.settings),
                                 bundle.prediction_from_probabilities(result.clean_probs),
                                 bundle.prediction_from_probabilities(result.adv_probs),
                                 int(result.queries.sum()), float(result.seconds), result.stop_reason,
                                 chunk_result=result)
    check_target(bundle, target)
    y, stem = _decode(bundle, audio, sample_rate, max_seconds)
    return _attack_waveform(bundle, runner, y, stem, out_dir, progress, target)


def check_target(bundle, target) -> None:
    """A target must be one of the bundle's emotions (or None: untargeted)."""
    if target is not None and target not in bundle.labels:
        raise ParameterError(f"target emotion {target!r} is not one of model {bundle.name}'s "
                             f"(accepted: {', '.join(bundle.labels)}, or none for untargeted)")


def _decode(bundle, audio, sample_rate, max_seconds) -> tuple[np.ndarray, str]:
    """(decoded, validated clip at the bundle's rate, a file stem for what is written)."""
    sr = bundle.feature_config.sample_rate
    if isinstance(audio, (str, Path)):
        return load_audio(audio, sr, max_seconds=max_seconds), Path(audio).stem
    if sample_rate is None:
        raise ParameterError("audio given as samples needs its sample_rate (accepted: an "
                             "integer rate in Hz, or a file path as audio)")
    return validate_waveform(audio, sample_rate, sample_rate=sr, max_seconds=max_seconds), "clip"


def _attack_waveform(bundle, runner, y, stem, out_dir, progress, target) -> WaveformClipResult:
    """The clean reference is the decoded clip rounded to 16 bits (identical to the decoded
    samples for 16-bit sources such as the corpora); its serving-path decision is the label the
    attack moves away from. The chunking (trim bounds, windows, looping) is computed once from
    the clean clip and held fixed while attacking; `chunking_unchanged` says whether the
    adversarial clip still chunks the same way, and the verified decision recomputes everything
    from the file either way. A clip already scored as the target is returned unchanged, with
    target_reached True and no query spent."""
    from ser_core.attacks.waveform.base import Objective, from_pcm, snr_db, to_pcm
    from ser_core.audio.chunkmap import chunk_index_map
    from ser_core.attacks.waveform.masking import MaskingThreshold
    from ser_core.attacks.waveform.verify import verify, write_wav16
    sr = bundle.feature_config.sample_rate
    progress = progress or (lambda f, m="": None)
    pcm = to_pcm(y)
    clean_audio = from_pcm(pcm)
    before = bundle.predict_clip(clean_audio, sr)
    label = bundle.labels.index(before.label)
    index_map = chunk_index_map(clean_audio, bundle.feature_config)

    objective = Objective(label, None if target is None else bundle.labels.index(target))
    t0 = time.perf_counter()
    if objective.target == label:
        adv, queries, extra = pcm.copy(), 0, {"note": "the clean clip is already scored as the target"}
    else:
        adv, queries, extra = runner.run(pcm, objective, index_map, progress)
    seconds = time.perf_counter() - t0
    stopped = stop_reason()

    out_dir = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="ser-waveform-"))
    adv_pcm = to_pcm(adv / 32768.0)
    wav_path = write_wav16(out_dir / f"{stem}-{runner.name}-adversarial.wav", adv_pcm, sr)
    read_back, after = verify(bundle, wav_path)
    if np.array_equal(adv_pcm, adv):
        before_q = after.label  # already on the 16-bit grid: the same samples were scored
    else:
        before_q = bundle.predict_clip(np.asarray(adv / 32768.0, np.float32), sr).label
    diff = read_back.astype(np.float64) - clean_audio.astype(np.float64)
    return WaveformClipResult(
        bundle.name, runner.name, dict(runner.settings), before, after, int(queries), seconds, stopped,
        flipped_before_quantisation=before_q != before.label,
        snr_db=snr_db(clean_audio, read_back), linf_16bit=int(np.abs(adv_pcm - pcm).max()),
        l2=float(np.linalg.norm(diff)), wav_path=wav_path, adversarial_audio=read_back, sample_rate=sr,
        chunking_unchanged=bool(np.array_equal(chunk_index_map(read_back, bundle.feature_config), index_map)),
        extra=extra, target=target, target_reached=objective.reached(bundle.labels.index(after.label)),
        perceptual=MaskingThreshold.of(pcm, sr).report(to_pcm(read_back) - pcm))
