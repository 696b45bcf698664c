"""The worst-case attack suite on the waveform: how robust is a model, clip by clip.

After AutoAttack (Croce, Hein, "Reliable evaluation of adversarial robustness with an ensemble
of diverse parameter-free attacks", ICML 2020, arXiv 2003.01690; fra31/auto-attack) and
RobustBench's rules: a clip counts as robust at a budget only when it is decided correctly and
no member of a fixed suite of complementary attacks finds a verified flip inside that budget.
Members (all in ser_core/attacks/waveform/, every flip verified on the written 16-bit WAV):

  apgd-ce   untargeted Auto-PGD, cross-entropy loss                     (fixed budget, white-box)
  apgd-t    targeted Auto-PGD, DLR loss, against each of the `targets`
            most probable other classes in turn, until one flips         (fixed budget, white-box)
  square    Square Attack on the serving path (ONNX Runtime) only        (fixed budget, black-box)
  cw        Carlini-Wagner L2, the smallest flipping perturbation: its
            verified SNR is the clip's flip SNR                          (minimisation, white-box)

Budgets (`Budget`): the L2 balls of an SNR (`l2@40dB`, `l2@30dB`) and one Linf ball (`linf@30dB`:
each sample within the 16-bit step that guarantees 30 dB, LinfBudget in waveform/base.py).
Square is an Linf attack; its eps from an SNR guarantees that SNR, so at an L2 budget it runs at
that SNR's Linf eps, inside the ball. A flip found by any run counts at every budget it lies in
(`Budget.admits`: the WAV's SNR at least the budget's for L2, its Linf at most eps for Linf), so a
flip inside the 40 dB ball also counts at 30 dB.

Order and early stop (AutoAttack's): budgets from the smallest ball, members in the order above;
once a clip is flipped at a budget the later fixed-budget members are not run there (the worst
case is already reached). `found_by` of a budget is the first run, in that order, whose flip lies
in it: it says what each member adds on top of the earlier ones, not how much it would flip
alone. `every_member=True` runs every member at every budget regardless, which gives each
member's own accuracy on the same clips (`member_correct`). C&W always runs (once a clip), for the
flip SNR. Clips decided wrongly before any attack count as not robust and are not attacked.
A clip's `flip_snr_db` is the highest SNR of any verified flip (None: it held against every
run)."""
from __future__ import annotations

import math
import time
import zlib
from dataclasses import asdict, dataclass, field

import numpy as np

from ser_core.attacks import get_attack
from ser_core.attacks.objective import Objective
from ser_core.attacks.waveform.base import from_pcm, to_pcm
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.config import stable_hash
from ser_core.errors import ParameterError

MEMBERS = ("apgd-ce", "apgd-t", "square", "cw")
FIXED_MEMBERS = ("apgd-ce", "apgd-t", "square")
NORMS = ("l2", "linf")


@dataclass(frozen=True)
class Budget:
    norm: str
    snr_db: float

    def __post_init__(self):
        if self.norm not in NORMS:
            raise ParameterError(f"budget norm {self.norm!r} (accepted: {', '.join(NORMS)})")

    @property
    def key(self) -> str:
        return f"{self.norm}@{self.snr_db:g}dB"

    @classmethod
    def parse(cls, text: str) -> "Budget":
        """'l2@40', 'l2@40dB', 'linf@30' -> Budget."""
        norm, _, snr = str(text).partition("@")
        try:
            return cls(norm, float(snr.removesuffix("dB")))
        except ValueError:
            raise ParameterError(f"budget {text!r} (accepted: l2@SNR or linf@SNR, e.g. l2@40)") from None

    def admits(self, run: dict, eps: dict) -> bool:
        """Whether a run's verified flip lies inside this budget (eps: budget key -> the clip's
        Linf eps in 16-bit units)."""
        if not run["flipped"]:
            return False
        if self.norm == "l2":
            return run["snr_db"] is not None and run["snr_db"] >= self.snr_db - 1e-9
        return run["linf_16bit"] <= eps[self.key]


DEFAULT_BUDGETS = (Budget("l2", 40.0), Budget("l2", 30.0), Budget("linf", 30.0))


@dataclass(frozen=True)
class SuiteConfig:
    """The suite's fixed settings (`key` names them in every row, so a resume never mixes two)."""

    budgets: tuple = DEFAULT_BUDGETS
    members: tuple = MEMBERS
    steps: int = 100            # Auto-PGD steps per run (AutoAttack's 100)
    targets: int = 3            # APGD-T: the most probable other classes attacked in turn
    square_queries: int = 300   # Square: serving-path queries a clip and budget
    cw_steps: int = 20          # C&W: Adam steps per value of c
    cw_binary_steps: int = 3    # C&W: values of c
    every_member: bool = False  # run every member at every budget (each member's own accuracy)
    seed: int = 0

    def __post_init__(self):
        bad = [m for m in self.members if m not in MEMBERS]
        if bad:
            raise ParameterError(f"suite members {bad} (accepted: {', '.join(MEMBERS)})")

    def key(self) -> str:
        d = asdict(self)
        d["budgets"] = [b.key for b in self.budgets]
        return stable_hash(d)[:12]

    def describe(self) -> dict:
        d = asdict(self)
        d["budgets"] = [b.key for b in self.budgets]
        return d


@dataclass
class ClipRecord:
    """One clip's worst case: its runs and, per budget, whether it held and who flipped it."""

    clip: str
    speaker: str
    gender: str
    label: int
    clean_pred: int
    runs: list = field(default_factory=list)
    eps: dict = field(default_factory=dict)

    @property
    def clean_correct(self) -> bool:
        return self.clean_pred == self.label

    def found_by(self, budget: Budget) -> str | None:
        """'clean' (wrong before any attack), the first run whose flip lies in the budget
        ('member@budget'), or None (robust)."""
        if not self.clean_correct:
            return "clean"
        return next((f"{r['member']}@{r['budget']}" for r in self.runs if budget.admits(r, self.eps)), None)

    def member_correct(self, member: str, budget: Budget) -> bool | None:
        """Correct under `member` alone at `budget` (None where the member was not run on the
        clip: early stop, or not in the suite)."""
        if not self.clean_correct:
            return False
        runs = [r for r in self.runs if r["member"] == member]
        if any(budget.admits(r, self.eps) for r in runs):
            return False
        ran_here = any(r["budget"] in (budget.key, None) for r in runs)
        return True if ran_here else None

    @property
    def flip_snr_db(self) -> float | None:
        snrs = [r["snr_db"] for r in self.runs if r["flipped"] and r["snr_db"] is not None]
        return max(snrs) if snrs else None


def _run_outcome(member: str, budget: Budget | None, result, cpu: float, wall: float, target=None) -> dict:
    snr = float(result.extra["snr_db"][0])
    return {"member": member, "budget": None if budget is None else budget.key, "target": target,
            "flipped": bool(result.flipped[0]), "adv_pred": int(result.adv_pred[0]),
            "snr_db": None if math.isinf(snr) else round(snr, 3), "linf_16bit": int(result.extra["linf_16bit"][0]),
            "queries": int(result.queries[0]), "cpu_seconds": round(cpu, 3), "seconds": round(wall, 3)}


def _timed(fn):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - c0, time.perf_counter() - w0


def run_member(bundle, member: str, budget: Budget | None, clip: np.ndarray, label: int,
               clean_probs: np.ndarray, cfg: SuiteConfig, seed: int) -> list[dict]:
    """One member on one clip (at `budget`; cw: budget None) -> its runs (apgd-t: one a target
    tried, stopping at the first flip)."""
    obj = Objective(labels=np.array([label]))
    if member == "cw":
        attack = get_attack("cw", bundle, steps=cfg.cw_steps, binary_steps=cfg.cw_binary_steps)
        r, cpu, wall = _timed(lambda: attack([clip], obj))
        return [_run_outcome(member, None, r, cpu, wall)]
    if member == "square":
        attack = get_attack("square", bundle, snr_db=budget.snr_db, max_queries=cfg.square_queries, seed=seed)
        r, cpu, wall = _timed(lambda: attack([clip], obj))
        return [_run_outcome(member, budget, r, cpu, wall)]
    common = dict(snr_db=budget.snr_db, budget=budget.norm, steps=cfg.steps, seed=seed)
    if member == "apgd-ce":
        attack = get_attack("apgd", bundle, loss="ce", **common)
        r, cpu, wall = _timed(lambda: attack([clip], obj))
        return [_run_outcome(member, budget, r, cpu, wall)]
    runs = []
    others = [int(c) for c in np.argsort(-clean_probs) if c != label][:cfg.targets]
    attack = get_attack("apgd", bundle, loss="dlr", **common)
    for t in others:
        r, cpu, wall = _timed(lambda: attack([clip], Objective(np.array([label]), np.array([t]))))
        runs.append(_run_outcome(member, budget, r, cpu, wall, target=t))
        if runs[-1]["flipped"]:
            break
    return runs


def clip_seed(cfg: SuiteConfig, clip_id: str) -> int:
    """The seed of a clip's random members: the suite's seed and the clip's name (so a resumed run
    draws as an uninterrupted one does)."""
    return (cfg.seed * 1_000_003 + zlib.crc32(clip_id.encode())) % (2 ** 31 - 1)


def attack_one(bundle, clip: np.ndarray, label: int, cfg: SuiteConfig, clip_id: str = "",
               speaker: str = "", gender: str = "") -> ClipRecord:
    """The suite on one decoded clip (float32 at the bundle's rate) of true class `label`."""
    sr = bundle.feature_config.sample_rate
    pcm = to_pcm(clip)
    audio = from_pcm(pcm)
    pred = bundle.predict_clip(audio, sr)
    clean_probs = np.array([pred.probabilities[l] for l in bundle.labels])
    rec = ClipRecord(clip_id, speaker, gender, int(label), bundle.labels.index(pred.label))
    index_map = chunk_index_map(audio, bundle.feature_config)
    for b in cfg.budgets:
        if b.norm == "linf":
            rec.eps[b.key] = int(get_attack("square", bundle, snr_db=b.snr_db).epsilon(pcm, index_map))
    if not rec.clean_correct:
        return rec
    seed = clip_seed(cfg, clip_id)
    for b in cfg.budgets:
        for m in (m for m in cfg.members if m in FIXED_MEMBERS):
            if not cfg.every_member and rec.found_by(b) is not None:
                break
            rec.runs += run_member(bundle, m, b, audio, label, clean_probs, cfg, seed)
    if "cw" in cfg.members:
        rec.runs += run_member(bundle, "cw", None, audio, label, clean_probs, cfg, seed)
    return rec


def record_row(rec: ClipRecord, cfg: SuiteConfig, model: str, weights_sha: str | None, extra: dict | None = None) -> dict:
    """A clip's JSON row: who it is, its runs, and per budget whether it held and who flipped it."""
    budgets = {}
    for b in cfg.budgets:
        who = rec.found_by(b)
        budgets[b.key] = {"robust": who is None, "found_by": who,
                          "member_correct": {m: rec.member_correct(m, b) for m in cfg.members}}
    return {"model": model, "weights_sha": weights_sha, "suite": cfg.key(), "clip": rec.clip,
            "speaker": rec.speaker, "gender": rec.gender, "label": rec.label, "clean_pred": rec.clean_pred,
            "clean_correct": rec.clean_correct, "eps_16bit": rec.eps, "budgets": budgets,
            "flip_snr_db": rec.flip_snr_db, "cpu_seconds": round(sum(r["cpu_seconds"] for r in rec.runs), 3),
            "runs": rec.runs, **(extra or {})}


def record_from_row(row: dict) -> ClipRecord:
    return ClipRecord(row["clip"], row["speaker"], row["gender"], row["label"], row["clean_pred"],
                      row["runs"], row.get("eps_16bit", {}))
