"""Attack one audio clip with any registered attack, and say what the serving path decides before
and after.

    attack_clip(bundle, "clip.wav", "fgsm", {"eps": 0.5})                    # features (the study)
    attack_clip(bundle, "clip.wav", "apgd", {"snr_db": 30}, target="sadness")  # waveform, targeted

The clip is decoded and validated, its clean decision is the serving path's (the mean of its 3 s
chunks' probabilities, `ModelBundle.predict_clip`), and the attack's domain says what is
perturbed and how the decision after is taken (`clip_inputs`, `clip_predictions`, `clip_figures`
of the domain classes):
  - features: every 3 s chunk's standardised log-Mel features, attacked as one batch; the
    decision after is that of the adversarial features. As in the study the attacked input is
    the standardised log-Mel spectrogram, not audio.
  - waveform: the decoded samples of the whole clip (rounded to 16 bits), attacked with the
    chunking held fixed; the result is written as a 16-bit WAV (to out_dir), read back and scored
    by the serving path, and only that decision counts.
Either way the result is one `ClipAttackResult`, whose `to_dict` the CLI, the app and the
evaluation print or store."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_core.attacks import get_attack
from ser_core.attacks.objective import Objective
from ser_core.attacks.result import AttackResult
from ser_core.audio.decode import load_audio, validate_waveform
from ser_core.errors import ParameterError
from ser_core.models.bundle import ClipPrediction


@dataclass
class ClipAttackResult:
    """One attacked clip. before: the clean clip's decision; after: the decision that counts
    (features: on the adversarial features; waveform: the serving path's on the written 16-bit
    WAV, `wav_path`). flipped: the two differ. queries: model evaluations the attack spent
    (features: chunks scored, summed over chunks; waveform: clip scorings, model forward passes
    and serving-path calls); the clean and verification scorings are not counted. target: the
    emotion a targeted attack was asked to land on (None: untargeted); target_reached: whether the
    decision after is that emotion (untargeted: the same as flipped). stop_reason: 'deadline' or
    'cancelled' when the run (ser_core.control) stopped the attack before it finished; the result
    is then the best so far. result: the attack's own result (features: one example per chunk;
    waveform: one clip)."""

    model: str
    attack: str
    params: dict
    before: ClipPrediction
    after: ClipPrediction
    queries: int
    seconds: float
    stop_reason: str | None
    result: AttackResult = field(repr=False, default=None)
    domain: str = "features"
    target: str | None = None
    wav_path: Path | None = None
    figures: dict = field(default_factory=dict)
    files: list = field(default_factory=list)  # what the attack's domain wrote to out_dir
    saver: object = field(repr=False, default=None)  # the domain's `save_clip`

    def save(self, out_dir) -> list[Path]:
        """The result's files in out_dir (features: clean.npy and adversarial.npy; waveform: the
        WAV attack_clip wrote there), for the command line."""
        return self.saver(self.result, self.files, Path(out_dir))

    @property
    def flipped(self) -> bool:
        return self.before.label != self.after.label

    @property
    def target_reached(self) -> bool:
        return self.flipped if self.target is None else self.after.label == self.target

    @property
    def stopped_early(self) -> bool:
        return self.stop_reason is not None

    @property
    def label_before(self) -> str:
        return self.before.label

    @property
    def label_after(self) -> str:
        return self.after.label

    # features: the clip's chunks before and after, standardised (n_chunks, 261, 128)
    @property
    def features(self) -> np.ndarray:
        return self.result.x

    @property
    def adversarial_features(self) -> np.ndarray:
        return self.result.x_adv

    # waveform: the written clip as the serving path decodes it, and the domain's figures
    @property
    def adversarial_audio(self) -> np.ndarray:
        return self.result.x_adv[0]

    @property
    def chunk_result(self) -> AttackResult:
        return self.result

    @property
    def snr_db(self) -> float:
        return self.result.extra["snr_db"][0]

    @property
    def linf_16bit(self) -> int:
        return self.result.extra["linf_16bit"][0]

    @property
    def l2(self) -> float:
        return self.result.extra["l2"][0]

    @property
    def flipped_before_quantisation(self) -> bool:
        return self.result.extra["flipped_before_quantisation"][0]

    @property
    def chunking_unchanged(self) -> bool:
        return self.result.extra["chunking_unchanged"][0]

    @property
    def perceptual(self) -> dict:
        return self.result.extra["perceptual"][0]

    @property
    def extra(self) -> dict:
        """The attack's own figures for this clip (waveform)."""
        return self.result.extra["run"][0]

    @property
    def sample_rate(self) -> int:
        return self.result.extra.get("sample_rate", 16_000)

    def to_dict(self) -> dict:
        head, tail = self.figures.get("head", {}), self.figures.get("tail", {})
        return {"model": self.model, "attack": self.attack, "domain": self.domain, "params": self.params,
                "label_before": self.before.label, "probabilities_before": self.before.probabilities,
                "label_after": self.after.label, "probabilities_after": self.after.probabilities,
                **head, "queries": int(self.queries), "seconds": round(float(self.seconds), 4),
                "stopped_early": self.stopped_early, "stop_reason": self.stop_reason,
                "target": self.target, "target_reached": self.target_reached, **tail}


def attack_clip(bundle, audio, attack: str, params: dict | None = None, domain: str | None = None,
                sample_rate: int | None = None, max_seconds: float | None = None, out_dir=None,
                progress=None, target: str | None = None) -> ClipAttackResult:
    """Attack `audio` (a path, or a waveform with its sample_rate) with the registered attack
    `attack` and `params` (checked first: ParameterError on bad ones, before any audio work).
    domain: optional, and when given must be the attack's. target: an emotion of the bundle's
    labels to land on (attacks with a targeted mode), or None (any other emotion). Files the
    attack's domain writes go to out_dir (waveform: the 16-bit WAV, in a new temporary folder when
    out_dir is None; features write nothing: `ClipAttackResult.save` writes their arrays). progress(fraction, message) is called now and then."""
    if params is not None and not isinstance(params, dict):
        raise ParameterError(f"{attack}: params must be a dict of parameter values, not {type(params).__name__}")
    runner = get_attack(attack, bundle, domain=domain, **(params or {}))
    t = runner.check_target(target)
    y, stem = _decode(bundle, audio, sample_rate, max_seconds)
    inputs = runner.clip_inputs(y)
    objective = None if t is None else Objective(targets=np.full(len(inputs), t, np.int64))
    result = runner(inputs, objective, progress)
    before, after = runner.clip_predictions(result)
    files = runner.write_clip(result, None if out_dir is None else Path(out_dir), stem)
    wav_path = next((f for f in files if f.suffix == ".wav"), None)
    return ClipAttackResult(bundle.name, attack, dict(runner.settings), before, after, int(result.queries.sum()),
                            float(result.seconds), result.stop_reason, result, runner.domain, target, wav_path,
                            runner.clip_figures(result, before, after, wav_path), files, runner.save_clip)


def _decode(bundle, audio, sample_rate, max_seconds) -> tuple[np.ndarray, str]:
    """(decoded, validated clip at the bundle's rate, a file stem for what is written)."""
    sr = bundle.feature_config.sample_rate
    if isinstance(audio, (str, Path)):
        return load_audio(audio, sr, max_seconds=max_seconds), Path(audio).stem
    if sample_rate is None:
        raise ParameterError("audio given as samples needs its sample_rate (accepted: an "
                             "integer rate in Hz, or a file path as audio)")
    return validate_waveform(audio, sample_rate, sample_rate=sr, max_seconds=max_seconds), "clip"

