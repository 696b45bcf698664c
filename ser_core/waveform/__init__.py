"""Attacks on the waveform: adversarial audio you can play, its flip verified end to end.

The study attacks standardised log-Mel features; audio made from them by inversion is not what
the model hears (PAPER.md, last paragraph). These attacks perturb the decoded samples of a
whole clip instead:
  chunkmap.py  clip -> fixed index map of its 3 s chunks (trim, windows, re-trim, looping)
  base.py      16-bit arithmetic, budgets (SNR dB or 16-bit units), white-box clip model,
               counted black-box serving path
  pgd.py       "pgd"    Linf PGD/BIM, white-box, fixed budget
  apgd.py      "apgd"   Auto-PGD (adaptive step, momentum, restarts), white-box, fixed budget:
                        Linf (SNR dB or 16-bit units) or under the clip's masking threshold
  cw.py        "cw"     Carlini-Wagner L2, white-box, minimisation (reports the SNR needed)
  square.py    "square" Linf random search (Square Attack), black-box: serving path only
  masking.py   the clip's frequency masking threshold (Qin et al. 2019) and how far a
               perturbation stands above it, reported beside the SNR for every attack
  verify.py    16-bit WAV written, read back, scored by bundle.predict_clip
Every attack runs untargeted (any other emotion) or targeted (`target`: the emotion to land on).
`attack_waveform_clip` runs one of them on a clip and verifies the result; the CLI
(`python -m export attack ... --domain waveform`) and the app call it."""
from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..audio import load_audio, validate_waveform
from ..control import stop_reason
from ..errors import ParameterError
from .apgd import AutoPGD
from .base import Objective, WaveformAttack, from_pcm, snr_db, to_pcm
from .chunkmap import chunk_index_map
from .cw import CarliniWagnerL2
from .masking import MaskingThreshold
from .pgd import LinfPGD
from .square import LinfSquare
from .verify import verify, write_wav16

WAVEFORM_ATTACKS: dict[str, type[WaveformAttack]] = {c.name: c for c in (LinfPGD, AutoPGD, CarliniWagnerL2,
                                                                          LinfSquare)}


@dataclass
class WaveformAttackResult:
    """One attacked clip. label_after / probabilities_after / verified_flipped come from the
    serving path on the written 16-bit WAV; flipped_before_quantisation from the serving path on
    the adversarial samples before rounding to 16 bits. snr_db (inf when nothing changed),
    linf_16bit and l2 (full scale 1) measure the written clip against the clean one. queries:
    clip scorings the attack spent (model forward passes and serving-path calls; the clean and
    verification scorings are not counted). stop_reason: 'deadline' or 'cancelled' when the run
    (ser_core.control) stopped the attack before it finished; the result is then the best so far.
    target: the emotion a targeted attack was asked to land on (None: untargeted);
    target_reached: whether the serving path's decision on the written WAV is that emotion
    (untargeted: the same as verified_flipped). perceptual: the written perturbation against the
    clean clip's masking threshold (masking.py): mask_exceeded_fraction of STFT cells above it,
    pmr_p95_db (95th percentile of the cells' perturbation-to-mask ratio, dB), pmr_max_db."""

    model: str
    attack: str
    params: dict
    label_before: str
    probabilities_before: dict
    label_after: str
    probabilities_after: dict
    verified_flipped: bool
    flipped_before_quantisation: bool
    snr_db: float
    linf_16bit: int
    l2: float
    queries: int
    seconds: float
    wav_path: Path
    adversarial_audio: np.ndarray = field(repr=False)
    sample_rate: int = 16_000
    chunking_unchanged: bool = True
    extra: dict = field(default_factory=dict)
    stop_reason: str | None = None
    target: str | None = None
    target_reached: bool = False
    perceptual: dict = field(default_factory=dict)

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    def to_dict(self) -> dict:
        return {"model": self.model, "attack": self.attack, "params": self.params,
                "label_before": self.label_before, "probabilities_before": self.probabilities_before,
                "label_after": self.label_after, "probabilities_after": self.probabilities_after,
                "verified_flipped": self.verified_flipped,
                "flipped_before_quantisation": self.flipped_before_quantisation,
                "snr_db": None if math.isinf(self.snr_db) else round(self.snr_db, 3),
                "linf_16bit": self.linf_16bit, "l2": self.l2, "queries": self.queries,
                "seconds": round(self.seconds, 3), "wav_path": str(self.wav_path),
                "chunking_unchanged": self.chunking_unchanged,
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
                "target": self.target, "target_reached": self.target_reached,
                "perceptual": self.perceptual,
                "extra": {k: (None if isinstance(v, float) and math.isinf(v) else v)
                          for k, v in self.extra.items()}}


def describe_waveform_attacks() -> list[dict]:
    """Name, kind, goal, one-line doc and parameters of each waveform attack."""
    return [{"name": c.name, "kind": c.kind, "goal": c.goal, "doc": (c.__doc__ or "").strip().split("\n")[0],
             "params": {k: {"default": p.default, "type": p.type.__name__, "low": p.low, "high": p.high,
                            "help": p.help} for k, p in c.params.items()}}
            for c in WAVEFORM_ATTACKS.values()]


def get_waveform_attack(name: str, bundle, params: dict | None = None) -> WaveformAttack:
    try:
        cls = WAVEFORM_ATTACKS[name]
    except (KeyError, TypeError):
        raise ParameterError(f"unknown waveform attack {name!r} "
                             f"(accepted: {', '.join(WAVEFORM_ATTACKS)})") from None
    if params is not None and not isinstance(params, dict):
        raise ParameterError(f"{name}: params must be a dict of parameter values, not {type(params).__name__}")
    return cls(bundle, **(params or {}))


def attack_waveform_clip(bundle, audio, attack: str = "pgd", params: dict | None = None,
                         sample_rate: int | None = None, max_seconds: float | None = None,
                         out_dir=None, progress=None, target: str | None = None) -> WaveformAttackResult:
    """Attack one clip on its waveform and verify the flip on the written 16-bit WAV.

    audio: a path, or a waveform with its sample_rate. The clean reference is the decoded clip
    rounded to 16 bits (identical to the decoded samples for 16-bit sources such as the corpora);
    its serving-path decision is the label the attack moves away from. The chunking (trim bounds,
    windows, looping) is computed once from the clean clip and held fixed while attacking;
    `chunking_unchanged` says whether the adversarial clip still chunks the same way, and the
    verified decision recomputes everything from the file either way.

    target: an emotion of the bundle's labels to land on (targeted mode), or None (untargeted:
    any other emotion). A clip already scored as the target is returned unchanged, with
    target_reached True and no query spent."""
    runner = get_waveform_attack(attack, bundle, params)  # bad parameters fail before any work
    check_target(bundle, target)
    sr = bundle.feature_config.sample_rate
    if isinstance(audio, (str, Path)):
        y, stem = load_audio(audio, sr, max_seconds=max_seconds), Path(audio).stem
    else:
        if sample_rate is None:
            raise ParameterError("audio given as samples needs its sample_rate (accepted: an "
                                 "integer rate in Hz, or a file path as audio)")
        y, stem = validate_waveform(audio, sample_rate, sample_rate=sr, max_seconds=max_seconds), "clip"
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
    wav_path = write_wav16(out_dir / f"{stem}-{attack}-adversarial.wav", adv_pcm, sr)
    read_back, after = verify(bundle, wav_path)
    if np.array_equal(adv_pcm, adv):
        before_q = after.label  # already on the 16-bit grid: the same samples were scored
    else:
        before_q = bundle.predict_clip(np.asarray(adv / 32768.0, np.float32), sr).label
    diff = read_back.astype(np.float64) - clean_audio.astype(np.float64)
    return WaveformAttackResult(
        model=bundle.name, attack=attack, params=dict(runner.settings),
        label_before=before.label, probabilities_before=before.probabilities,
        label_after=after.label, probabilities_after=after.probabilities,
        verified_flipped=after.label != before.label,
        flipped_before_quantisation=before_q != before.label,
        snr_db=snr_db(clean_audio, read_back), linf_16bit=int(np.abs(adv_pcm - pcm).max()),
        l2=float(np.linalg.norm(diff)), queries=int(queries), seconds=seconds, wav_path=wav_path,
        adversarial_audio=read_back, sample_rate=sr,
        chunking_unchanged=bool(np.array_equal(chunk_index_map(read_back, bundle.feature_config), index_map)),
        extra=extra, stop_reason=stopped,
        target=target, target_reached=objective.reached(bundle.labels.index(after.label)),
        perceptual=MaskingThreshold.of(pcm, sr).report(to_pcm(read_back) - pcm))


def check_target(bundle, target) -> None:
    """A target must be one of the bundle's emotions (or None: untargeted)."""
    if target is not None and target not in bundle.labels:
        raise ParameterError(f"target emotion {target!r} is not one of model {bundle.name}'s "
                             f"(accepted: {', '.join(bundle.labels)}, or none for untargeted)")


__all__ = ["attack_waveform_clip", "check_target", "Objective", "WaveformAttackResult", "WAVEFORM_ATTACKS",
           "describe_waveform_attacks",
           "get_waveform_attack", "chunk_index_map", "snr_db"]
