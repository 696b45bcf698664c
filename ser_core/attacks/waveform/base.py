"""What waveform attacks share: their base class (`WaveformAttack`, the waveform domain of the
one `ser_core.attacks.base.Attack`), 16-bit sample arithmetic, the budget in SNR or 16-bit
units, the differentiable clip model (white-box) and the counted serving path (black-box).

Waveform attacks work on a whole decoded clip held as 16-bit sample values (floats on the
integer grid -32768..32767, full scale = 32768), because the adversarial audio is delivered as a
16-bit WAV and only the decision on that file counts. A clip's decision is the serving path's:
the mean of its chunks' probabilities (bundle.predict_clip). Every attack has two modes, set by
its `Objective`: untargeted, it moves the clip's decision away from its clean decision, scored by the
margin
  log p_clip[clean] - max_{j != clean} log p_clip[j]      (< 0 means flipped);
targeted, it moves the decision onto a chosen label t, scored by
  max_{j != t} log p_clip[j] - log p_clip[t]             (< 0 means the decision is t).
Both are `ser_core.attacks.base.logit_margin` on clip log-probabilities (negated for a target)."""
from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ser_core.attacks.base import Attack
from ser_core.attacks.objective import Objective
from ser_core.attacks.params import Param
from ser_core.attacks.result import AttackResult
from ser_core.attacks.waveform.masking import MaskingThreshold
from ser_core.attacks.waveform.verify import serving_features, serving_prediction, verify, write_wav16
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.audio.decode import validate_waveform
from ser_core.control import stop_reason
from ser_core.errors import ParameterError
from ser_core.audio.frontend import LogMelFrontEnd

PCM_SCALE = 32768.0
PCM_MIN, PCM_MAX = -32768.0, 32767.0
DEFAULT_SNR_DB = 40.0


def to_pcm(y: np.ndarray) -> np.ndarray:
    """Full-scale float audio -> 16-bit sample values (float64 on the integer grid), as a 16-bit
    WAV stores them (rounded, saturated)."""
    return np.clip(np.round(np.asarray(y, np.float64) * PCM_SCALE), PCM_MIN, PCM_MAX)


def from_pcm(pcm: np.ndarray) -> np.ndarray:
    """16-bit sample values -> float32 audio exactly as soundfile decodes a 16-bit file."""
    return (np.asarray(pcm, np.float64) / PCM_SCALE).astype(np.float32)


def snr_db(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """Signal-to-noise ratio of the perturbation over the whole clip, in dB (inf when unchanged)."""
    clean = np.asarray(clean, np.float64)
    noise = float(np.sum((np.asarray(adversarial, np.float64) - clean) ** 2))
    return math.inf if noise == 0 else 10.0 * math.log10(float(np.sum(clean ** 2)) / noise)


def samples_in_use(n_samples: int, index_map: np.ndarray) -> torch.Tensor:
    """(n_samples,) mask: 1 where some chunk reads the sample, 0 elsewhere (such samples stay
    clean: no chunk would hear a change there)."""
    used = torch.zeros(n_samples)
    used[torch.from_numpy(np.unique(index_map))] = 1.0
    return used


class WaveformRun(NamedTuple):
    """What a waveform attack's `run` returns. pcm: the adversarial clip as 16-bit sample values
    (possibly off the integer grid); queries: clip scorings spent (model forward passes and
    serving-path calls); extra: the attack's own figures."""

    pcm: np.ndarray
    queries: int
    extra: dict


class WaveformAttack(Attack):
    """An attack on the 16-bit samples of whole clips. inputs: decoded clips (one array of samples
    each, full scale 1, at the bundle's rate; a single array is one clip). Each clip is rounded to
    16 bits, its clean decision is the serving path's (`bundle.predict_clip`), its chunking is
    computed once and held fixed while attacking, and the attack's one override point,
    `_attack_clip(pcm, objective, index_map, progress) -> WaveformRun`, perturbs it. The result
    is written as a 16-bit WAV, read back and scored by the serving path: only that decision
    counts (`verify.py`). A clip already decided as the target is returned unchanged, with no
    query spent. Per clip, `extra` holds: snr_db (inf when unchanged), linf_16bit, l2 (full scale
    1), flipped_before_quantisation (the serving decision on the samples before rounding),
    chunking_unchanged (the written WAV chunks as the clean clip does), perceptual (the written
    perturbation against the clean clip's masking threshold, masking.py) and run (the attack's
    own figures); `predictions` holds the serving path's ClipPrediction before and after."""

    domain = "waveform"

    def _as_inputs(self, clips):
        """One clip (a 1-D array) or several (a list, or an array of clips: object or 2-D)."""
        if isinstance(clips, np.ndarray) and clips.ndim == 1 and clips.dtype != object:
            return [clips]
        if not isinstance(clips, (np.ndarray, list, tuple)) or (isinstance(clips, np.ndarray) and clips.ndim > 2):
            raise ParameterError(f"{self.name}: clips as a list of 1-D sample arrays (got "
                                 f"{type(clips).__name__}{getattr(clips, 'shape', '')})")
        return list(clips)

    def _attack(self, clips, objective: Objective, progress) -> AttackResult:
        sr = self.bundle.feature_config.sample_rate
        rows, t_attack = [], 0.0
        for i, y in enumerate(clips):
            def clip_progress(f, m="", i=i):
                progress((i + f) / len(clips), m)
            row, seconds = self._one(np.asarray(y, np.float32), objective[i], clip_progress, sr)
            rows.append(row)
            t_attack += seconds
        labels = list(self.bundle.labels)

        def probs(pred):
            return np.array([pred.probabilities[l] for l in labels], np.float64)
        clean = np.stack([probs(r["before"]) for r in rows]) if rows else np.zeros((0, len(labels)))
        adv = np.stack([probs(r["after"]) for r in rows]) if rows else np.zeros((0, len(labels)))
        full = Objective(np.array([r["label"] for r in rows], np.int64), objective.targets)
        extra = {k: [r[k] for r in rows] for k in ("snr_db", "linf_16bit", "l2", "flipped_before_quantisation",
                                                   "chunking_unchanged", "perceptual", "run")}
        result = AttackResult(self.name, dict(self.settings), [r["clean"] for r in rows], [r["adv"] for r in rows],
                              np.array([labels.index(r["before"].label) for r in rows], np.int64),
                              np.array([labels.index(r["after"].label) for r in rows], np.int64),
                              clean, adv, np.array([r["queries"] for r in rows], np.int64), t_attack, full, extra,
                              stop_reason(), self.domain)
        result.predictions = [(r["before"], r["after"]) for r in rows]
        return result

    def _one(self, y: np.ndarray, objective: Objective, progress, sr: int) -> tuple[dict, float]:
        """One clip attacked and verified: (its row, seconds spent attacking)."""
        pcm = to_pcm(y)
        clean_audio = from_pcm(pcm)
        before = serving_prediction(self.bundle, validate_waveform(clean_audio, sr, sample_rate=sr))
        label = self.bundle.labels.index(before.label)
        if objective.labels is None:
            objective = objective.with_clean(np.array([label]))
        index_map = chunk_index_map(clean_audio, self.bundle.feature_config)
        t0 = time.perf_counter()
        if objective.targeted and objective.target == label:
            adv, queries, run = pcm.copy(), 0, {"note": "the clean clip is already scored as the target"}
        else:
            adv, queries, run = self._attack_clip(pcm, objective, index_map, progress)
        seconds = time.perf_counter() - t0
        adv_pcm = to_pcm(adv / PCM_SCALE)
        with tempfile.TemporaryDirectory(prefix="ser-verify-") as d:
            read_back, after = verify(self.bundle, write_wav16(Path(d) / "adversarial.wav", adv_pcm, sr))
        if np.array_equal(adv_pcm, adv):
            before_q = after.label  # already on the 16-bit grid: the same samples were scored
        else:
            before_q = serving_prediction(self.bundle, validate_waveform(np.asarray(adv / PCM_SCALE, np.float32), sr,
                                                                        sample_rate=sr)).label
        diff = read_back.astype(np.float64) - clean_audio.astype(np.float64)
        return {"clean": clean_audio, "adv": read_back, "before": before, "after": after, "label": label,
                "queries": int(queries), "snr_db": snr_db(clean_audio, read_back),
                "linf_16bit": int(np.abs(adv_pcm - pcm).max()), "l2": float(np.linalg.norm(diff)),
                "flipped_before_quantisation": before_q != before.label,
                "chunking_unchanged": bool(np.array_equal(chunk_index_map(read_back, self.bundle.feature_config),
                                                          index_map)),
                "perceptual": MaskingThreshold.of(pcm, sr).report(to_pcm(read_back) - pcm), "run": run}, seconds

    # --- one audio clip (ser_core.attacks.clip): the clip itself, its WAV written -----------
    def clip_inputs(self, y: np.ndarray) -> list:
        return [y]

    def clip_predictions(self, result: AttackResult):
        return result.predictions[0]

    def write_clip(self, result: AttackResult, out_dir: Path | None, stem: str) -> list[Path]:
        """The verified clip as a 16-bit WAV (the same samples the verification scored), in
        out_dir or a new temporary folder."""
        out_dir = out_dir if out_dir is not None else Path(tempfile.mkdtemp(prefix="ser-waveform-"))
        return [write_wav16(out_dir / f"{stem}-{self.name}-adversarial.wav", to_pcm(result.x_adv[0]),
                            self.bundle.feature_config.sample_rate)]

    def save_clip(self, result: AttackResult, files: list[Path], out_dir: Path) -> list[Path]:
        """The WAV written by `write_clip` (attack_clip writes it to its out_dir)."""
        return files

    def clip_figures(self, result: AttackResult, before, after, wav_path) -> dict:
        x = {k: v[0] for k, v in result.extra.items()}
        finite = (lambda v: None if isinstance(v, float) and math.isinf(v) else v)
        return {"head": {"verified_flipped": before.label != after.label,
                         "flipped_before_quantisation": x["flipped_before_quantisation"],
                         "snr_db": None if math.isinf(x["snr_db"]) else round(x["snr_db"], 3),
                         "linf_16bit": x["linf_16bit"], "l2": x["l2"]},
                "tail": {"wav_path": str(wav_path), "chunking_unchanged": x["chunking_unchanged"],
                         "perceptual": x["perceptual"], "extra": {k: finite(v) for k, v in x["run"].items()}}}

    def _attack_clip(self, pcm: np.ndarray, objective: Objective, index_map: np.ndarray, progress) -> WaveformRun:
        """pcm: clean clip as 16-bit sample values; objective: this clip's (its clean decision as
        `label`, and `target` when targeted); index_map: its chunks (chunkmap)."""
        raise NotImplementedError

    def white_box(self, pcm: np.ndarray, index_map: np.ndarray):
        """What a white-box attack starts from: (the clip model with this chunking held fixed (under
        EOT, settings eot > 0: the transforms' average, waveform/eot.py),
        the counted serving path that verifies its candidates, the (samples,) mask of samples
        some chunk reads, the clean clip as a float32 tensor)."""
        from ser_core.attacks.waveform.eot import eot_model  # EOT: the model averages over transforms
        model = eot_model(self, pcm) or ClipModel(self.bundle, index_map)
        return (model, ServingPath(self.bundle), samples_in_use(len(pcm), index_map), torch.from_numpy(pcm).float())


class LinfBudget:
    """Mixin for attacks bounded in Linf: the budget is `eps_16bit` (16-bit units) or `snr_db`.

    From snr_db the budget is the largest whole number of 16-bit steps that guarantees the SNR:
    a perturbation bounded by eps on the k samples the chunks use has energy at most k eps^2, so
    eps = floor(sqrt(clip energy / k) * 10^(-snr_db / 20))."""

    budget_params = ("snr_db", "eps_16bit")
    linf_params = {
        "snr_db": Param(None, float, 0.0, 100.0, help="budget as the lowest SNR allowed, dB "
                        f"(default {DEFAULT_SNR_DB:g} when eps_16bit is not given)"),
        "eps_16bit": Param(None, int, 1, 32767, help="budget as the largest change of a sample, "
                           "in 16-bit units (full scale 32768)"),
    }

    def _validate(self):
        if self.settings["snr_db"] is not None and self.settings["eps_16bit"] is not None:
            raise ParameterError(f"{self.name}: give the budget as snr_db or eps_16bit, not both")

    def epsilon(self, pcm: np.ndarray, index_map: np.ndarray) -> int:
        if self.settings["eps_16bit"] is not None:
            return int(self.settings["eps_16bit"])
        snr = self.settings["snr_db"] if self.settings["snr_db"] is not None else DEFAULT_SNR_DB
        k = len(np.unique(index_map))
        eps = math.floor(math.sqrt(float(np.sum(pcm ** 2)) / k) * 10 ** (-snr / 20))
        if eps < 1:
            raise ParameterError(f"{self.name}: snr_db={snr:g} leaves less than one 16-bit step "
                                 f"for this clip (accepted: a lower snr_db, or eps_16bit >= 1)")
        return eps


class ClipModel(nn.Module):
    """White-box view of the serving path with the chunking held fixed: (batch, samples) clips in
    16-bit units -> (batch, classes) clip log-probabilities (log of the mean chunk probability)."""

    def __init__(self, bundle, index_map: np.ndarray):
        super().__init__()
        self.frontend = LogMelFrontEnd.for_bundle(bundle)
        self.model = bundle.gradient_model()  # the torch model rewritten for speed (models/fast.py)
        self.register_buffer("index", torch.from_numpy(np.ascontiguousarray(index_map)))
        # what the attacker differentiates of the bundle's input defence (audio/defences.py
        # DefenceView: BPDA, EOT); None: it attacks the undefended model
        self.defence_view = getattr(bundle, "defence_view", None)

    def chunk_log_probs(self, pcm: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, n_chunks, classes) log-probabilities of each chunk."""
        b = pcm.shape[0]
        chunks = (pcm / PCM_SCALE)[:, self.index]  # (batch, n_chunks, samples): a gather
        feats = self.frontend(chunks.reshape(-1, chunks.shape[-1]).float())
        return torch.log_softmax(self.model(feats), dim=1).reshape(b, self.index.shape[0], -1)

    @staticmethod
    def clip_log_probs(chunk_log_probs: torch.Tensor) -> torch.Tensor:
        """(batch, n_chunks, classes) -> (batch, classes) log of the mean chunk probability."""
        n = chunk_log_probs.shape[1]
        return torch.logsumexp(chunk_log_probs, dim=1) - math.log(n)

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        if self.defence_view is not None:
            return self.defence_view.expect(pcm, lambda x: self.clip_log_probs(self.chunk_log_probs(x)), PCM_SCALE)
        return self.clip_log_probs(self.chunk_log_probs(pcm))

    def objective_for(self, objective: Objective) -> Objective:
        """The objective of forward's rows (one row: the clip's; EOT models: one per transform)."""
        return objective


class ServingPath:
    """Black-box access: clips (16-bit sample values) -> clip probabilities through the serving
    path (bundle.features: trim, chunks, librosa log-Mel, standardiser, each clip's computed once:
    verify.serving_features; then ONNX Runtime), one ONNX call per batch of clips. `count` is
    the number of clips scored."""

    def __init__(self, bundle):
        self.bundle = bundle
        self.count = 0

    def __call__(self, pcm_batch: np.ndarray) -> np.ndarray:
        feats = [serving_features(self.bundle, from_pcm(p)) for p in np.atleast_2d(pcm_batch)]
        self.count += len(feats)
        probs = self.bundle.predict_features(np.concatenate(feats))
        bounds = np.cumsum([0] + [len(f) for f in feats])
        return np.stack([probs[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
