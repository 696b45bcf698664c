"""Transfer: do flips crafted on one model carry over to models the attacker never saw?

A matrix of source model x target model over the same held-out clips (Papernot et al. 2016,
arXiv 1605.07277; Liu et al., "Delving into transferable adversarial examples", ICLR 2017,
arXiv 1611.02770). Each clip is attacked on the source (waveform Auto-PGD, L2 ball of a fixed
SNR, `shrink=0` so the perturbation stays at the full budget and the flip keeps its margin),
written as a 16-bit WAV, read back, and scored by every target on those samples. An entry is the
share of clips whose target decision on the adversarial WAV differs from the target's decision
on the clean clip: models have different class sets, so "the decision changed" is the measure
that means the same for all of them, and on the diagonal it is exactly the white-box flip rate
on the same clips. Beside it, the share among the clips whose source decision flipped.

Sources: any CNN-LSTM bundle, and `ensemble`: Auto-PGD on the sum (mean) of the untargeted clip
margins of several models, each through its own differentiable front-end (Liu et al. 2017's
ensemble): for a clip of corpus c, every CNN-LSTM source except c's default model, so that
model's column is a black-box transfer for every clip. Targets: CNN-LSTM bundles and
`egemaps-svm`, the eGeMAPS + SVM baseline (ser_core/training/baseline.py) as a black box over
the written WAV, fitted per corpus on the default bundle's training speakers only (its classes).

Defended targets (`DEFENDED`, EmoDB's adversarially trained bundles and the one behind an input
defence) join the same way; the adversarially trained ones are sources too. Rows hold decisions,
not WAVs, so a row written before a target existed is re-attacked to score it (`run_transfer`).

Clips: the held-out speakers of each corpus's default bundle (`over_the_air.unseen_clips`).

The control row, `noise`: Gaussian noise of the same energy (the SNR over the whole clip, as the
attacks' budget), over the clip's speech span, seeded per clip, written the same way. A model
that changes its decision under an attack crafted elsewhere about as often as under this noise
shows no transfer, only sensitivity to any perturbation of that size.

  transfer_clips(corpora, n)           the clips, ids and corpora
  Targets(names, corpora)              decisions of every target on one clip
  EnsembleAutoPGD(members, **params)   Auto-PGD on the ensemble's summed margins
  attack_row(source, clip, snr, ...)   one (clip, source, SNR) row: the source's flip, every
                                       target's decisions before and after, CPU seconds
  run_transfer(...)                    every row not yet in the JSONL file (resumable); a row
                                       that lacks a requested target is re-attacked (same seed)
                                       and scored for it, kept only where the re-run reproduces
                                       every decision the row holds
  matrix(rows)                         entries with 95 % Wilson intervals
The report's tables: ser_core/evaluation/transfer_report.py."""
from __future__ import annotations

import json
import math
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ser_core.attacks import get_attack
from ser_core.attacks.objective import Objective
from ser_core.attacks.waveform.apgd import AutoPGD
from ser_core.attacks.waveform.base import ClipModel, ServingPath, from_pcm, samples_in_use, to_pcm
from ser_core.attacks.waveform.verify import serving_prediction
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.errors import ParameterError

DEFAULT_MODELS = ("emodb", "emovo", "ravdess")
MODELS = DEFAULT_MODELS + ("emodb-paper", "emovo-paper", "ravdess-paper", "any")  # the ensemble's pool
SVM = "egemaps-svm"
ENSEMBLE = "ensemble"
NOISE = "noise"
SOURCES = MODELS + (ENSEMBLE, NOISE)  # the defaults: the matrix as first run
TARGETS = MODELS + (SVM,)
# EmoDB's defended bundles (models/*/config.json "defence"): adversarially trained ones are sources
# too (white-box CNN-LSTMs), the input defence only a target. Never ensemble members.
ADV_TRAINED = ("emodb-pgd-wave", "emodb-trades-wave")
DEFENDED = ADV_TRAINED + ("emodb-resample",)
ALL_SOURCES = MODELS + ADV_TRAINED + (ENSEMBLE, NOISE)
ALL_TARGETS = MODELS + DEFENDED + (SVM,)
PAD = -1e4  # log-probability of the classes a member does not have (never its max, finite gradient)


def transfer_clips(corpora=DEFAULT_MODELS, n: int | None = 24, seed: int = 0, data_dir=None) -> list[dict]:
    """[{id, corpus, speaker, emotion, audio}]: up to n clips (seeded) of each corpus's held-out
    speakers, those its default bundle never trained on, in that bundle's classes."""
    from ser_core.attacks.over_the_air import unseen_clips
    from ser_core.models.bundle import ModelBundle
    out = []
    for corpus in corpora:
        clips, utts = unseen_clips(ModelBundle.load(corpus), n, seed, data_dir)
        out += [{"id": f"{corpus}/{u.name}", "corpus": corpus, "speaker": u.speaker, "emotion": u.emotion, "audio": y}
                for y, u in zip(clips, utts)]
    return out


class SvmTarget:
    """The eGeMAPS + SVM baseline of one corpus as a black box: fitted on the eGeMAPSv02
    functionals of the default bundle's training speakers' clips (its classes), decides a clip
    from its samples alone."""

    def __init__(self, corpus: str, data_dir=None):
        from ser_core.data.corpora import read_corpus
        from ser_core.data.held_out import data_root
        from ser_core.models.bundle import ModelBundle
        from ser_core.training.baseline import egemaps, svm_pipeline
        b = ModelBundle.load(corpus)
        train = set(b.config["split"]["speakers"]["train"])
        c = read_corpus(corpus, Path(data_dir or data_root()) / corpus)
        x = egemaps(c, progress=False)
        keep = [i for i, u in enumerate(c.utterances) if u.speaker in train and u.emotion in b.labels]
        self.labels = list(b.labels)
        self.n_train = len(keep)
        self.speakers = sorted(train)
        self.clf = svm_pipeline()
        self.clf.fit(x[keep], [self.labels.index(c.utterances[i].emotion) for i in keep])
        self._smile = None

    def decide(self, y: np.ndarray) -> str:
        if self._smile is None:
            from ser_core.training.baseline import egemaps_extractor
            self._smile = egemaps_extractor()
        f = self._smile.process_signal(np.asarray(y, np.float32), 16_000).to_numpy()
        return self.labels[int(self.clf.predict(f)[0])]


class Targets:
    """Every target's decision on a clip (16 kHz samples, as decoded from a 16-bit WAV): a CNN-LSTM
    bundle through its serving path (ONNX), `egemaps-svm` by the SVM of the clip's corpus."""

    def __init__(self, names=TARGETS, corpora=DEFAULT_MODELS, data_dir=None, bundles: dict | None = None):
        from ser_core.models.bundle import ModelBundle
        self.names = list(names)
        self.bundles = dict(bundles or {})
        for n in self.names:
            if n != SVM and n not in self.bundles:
                self.bundles[n] = ModelBundle.load(n)
                self.bundles[n].configure_onnx(threads=1)
        self.svm = {c: SvmTarget(c, data_dir) for c in corpora} if SVM in self.names else {}

    def decide(self, y: np.ndarray, corpus: str) -> dict[str, str]:
        out = {}
        for n in self.names:
            if n == SVM:
                out[n] = self.svm[corpus].decide(y)
            else:
                b = self.bundles[n]
                out[n] = b.predict_clip(y, b.feature_config.sample_rate).label
        return out


# --- the ensemble source ----------------------------------------------------------------------
class EnsembleClipModel(nn.Module):
    """(1, samples) clip in 16-bit units -> (members, classes) clip log-probabilities, one row per
    member (its own front-end, model and chunking of the clean clip), each padded to the widest
    class set with PAD. `objective_for` gives each row its member's clean decision, so the mean
    of the rows' margins is the ensemble's untargeted loss (the sum over members, scaled)."""

    def __init__(self, members: list, clean_pcm: np.ndarray):
        super().__init__()
        clean = from_pcm(clean_pcm)
        self.members = nn.ModuleList([ClipModel(b, chunk_index_map(clean, b.feature_config)) for b in members])
        self.width = max(len(b.labels) for b in members)
        self.labels = np.array([b.labels.index(serving_prediction(b, clean).label) for b in members], np.int64)

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        rows = []
        for m in self.members:
            lp = m(pcm)
            rows.append(torch.nn.functional.pad(lp, (0, self.width - lp.shape[1]), value=PAD))
        return torch.cat(rows)

    def objective_for(self, objective: Objective) -> Objective:
        if objective.targeted:
            raise ParameterError("the ensemble source is untargeted only (models have different class sets)")
        return Objective(self.labels)


class EnsembleAutoPGD(AutoPGD):
    """Auto-PGD (waveform/apgd.py, its parameters) on the mean of several models' untargeted clip
    margins. The first member is the one whose serving path verifies the written WAV; the attack
    stops once every member's model margin is below 0 and that member's WAV decision changed (or at
    its step budget). Not registered: a source of the transfer matrix, not an attack of the app."""

    name = "apgd-ensemble"

    def __init__(self, members: list, **params):
        if not members:
            raise ParameterError("ensemble: no members (accepted: one bundle or more)")
        super().__init__(members[0], **params)
        self.members = list(members)

    def white_box(self, pcm: np.ndarray, index_map: np.ndarray):
        return (EnsembleClipModel(self.members, pcm), ServingPath(self.bundle),
                samples_in_use(len(pcm), index_map), torch.from_numpy(pcm).float())


def ensemble_members(corpus: str, bundles: dict) -> list:
    """The ensemble for a clip of `corpus`: every CNN-LSTM but the corpus's default model."""
    return [bundles[n] for n in MODELS if n != corpus and n in bundles]


# --- rows -------------------------------------------------------------------------------------
def noise_clip(y: np.ndarray, snr_db: float, key: str, seed: int = 0) -> np.ndarray:
    """The control: y (rounded to 16 bits) plus Gaussian noise over its speech span with the
    energy of snr_db against the whole clip, seeded by (seed, key), rounded to 16 bits."""
    from ser_core.attacks.universal import speech_span
    y = from_pcm(to_pcm(y)).astype(np.float64)
    a, b = speech_span(y)
    d = np.zeros_like(y)
    d[a:b] = np.random.default_rng([seed, zlib.crc32(key.encode())]).standard_normal(b - a)
    d *= np.linalg.norm(y) * 10 ** (-snr_db / 20) / max(np.linalg.norm(d), 1e-30)
    return from_pcm(to_pcm(y + d))


def attack_row(source: str, clip: dict, snr_db: float, targets: Targets, clean: dict[str, str],
               steps: int = 40, seed: int = 0, confidence: float = 0.0) -> dict:
    """One clip attacked on `source` at snr_db (Auto-PGD, L2 ball, shrink 0; confidence: the
    clip margin below which it stops, 0: the first verified flip), its WAV scored by every
    target. clean: the targets' decisions on the clean clip (Targets.decide)."""
    params = {"snr_db": float(snr_db), "steps": steps, "shrink": 0, "seed": seed, "confidence": float(confidence)}
    if source == NOISE:
        from ser_core.attacks.waveform.base import snr_db as measured_snr
        t0 = time.process_time()
        adv = noise_clip(clip["audio"], snr_db, clip["id"], seed)
        cpu = time.process_time() - t0
        after = targets.decide(adv, clip["corpus"])
        return {"clip": clip["id"], "corpus": clip["corpus"], "speaker": clip["speaker"], "emotion": clip["emotion"],
                "source": source, "members": [], "snr_db": float(snr_db), "confidence": float(confidence),
                "steps": 0, "shrink": 0, "written_snr_db": round(measured_snr(from_pcm(to_pcm(clip["audio"])), adv), 3),
                "source_flipped": None, "clean": clean, "adversarial": after, "iterations": 0,
                "cpu_seconds": round(cpu, 3)}
    if source == ENSEMBLE:
        members = ensemble_members(clip["corpus"], targets.bundles)
        attack = EnsembleAutoPGD(members, **params)
    else:
        attack = get_attack("apgd", targets.bundles[source], domain="waveform", **params)
        members = [targets.bundles[source]]
    t0 = time.process_time()
    r = attack([clip["audio"]])
    cpu = time.process_time() - t0
    adv = r.x_adv[0]  # the written 16-bit WAV as read back: what every target decides
    after = targets.decide(adv, clip["corpus"])
    member_names = [m.name for m in members]
    flipped = (all(after[n] != clean[n] for n in member_names) if source == ENSEMBLE
               else bool(r.flipped[0]))
    return {"clip": clip["id"], "corpus": clip["corpus"], "speaker": clip["speaker"], "emotion": clip["emotion"],
            "source": source, "members": member_names, "snr_db": float(snr_db), "confidence": float(confidence),
            "steps": steps, "shrink": 0,
            "written_snr_db": round(float(r.extra["snr_db"][0]), 3) if math.isfinite(r.extra["snr_db"][0]) else None,
            "source_flipped": bool(flipped), "clean": clean, "adversarial": after,
            "iterations": r.extra["run"][0].get("iterations"), "cpu_seconds": round(cpu, 3)}


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _key(row: dict) -> tuple:
    return row["clip"], row["source"], row["snr_db"], row.get("confidence", 0.0)


def _write_all(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def rescore(row: dict, fresh: dict, missing: list[str]) -> dict:
    """`row` with the targets `missing` scored from `fresh`, the same (clip, source, SNR,
    confidence) attacked again (same seed): their clean and adversarial decisions are added only if
    the re-run reproduced the source's flip and every decision `row` holds (the same WAV, as far as
    the stored targets can tell); either way row["rescored"] records the attempt."""
    same = (fresh["source_flipped"] == row["source_flipped"]
            and all(fresh[k].get(n) == v for k in ("clean", "adversarial") for n, v in row[k].items()))
    out = dict(row, clean=dict(row["clean"]), adversarial=dict(row["adversarial"]))
    if same:
        for k in ("clean", "adversarial"):
            out[k].update({n: fresh[k][n] for n in missing})
        out["targets"] = list(row.get("targets", row["adversarial"])) + list(missing)
    out["rescored"] = list(row.get("rescored", [])) + [{"targets": list(missing), "reproduced": bool(same),
                                                         "cpu_seconds": fresh["cpu_seconds"],
                                                         "folders": fresh.get("folders", {})}]
    return out


def run_transfer(out, sources=SOURCES, targets=TARGETS, corpora=DEFAULT_MODELS, snrs=(20.0, 30.0), n: int = 24,
                 seed: int = 0, steps: int = 40, confidence: float = 0.0, data_dir=None, log=None,
                 folders: dict | None = None) -> int:
    """Every (SNR, clip, source) row not yet in `out` (JSON lines), SNRs in the order given, so a
    stopped run leaves whole matrices of the first SNRs; a row already there that lacks one of
    `targets` (and has not tried it) is re-attacked and `rescore`d in place. folders: {name: bundle
    folder} read in place of models/<name> (the bundle an older row was made with), recorded in the
    rows. Returns the number of rows written or rescored."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for s in sources:
        if s not in ALL_SOURCES:
            raise ParameterError(f"source {s!r} (accepted: {', '.join(ALL_SOURCES)})")
    for t in targets:
        if t not in ALL_TARGETS:
            raise ParameterError(f"target {t!r} (accepted: {', '.join(ALL_TARGETS)})")
    names = list(dict.fromkeys(list(targets) + [s for s in sources if s not in (ENSEMBLE, NOISE)]
                               + (list(MODELS) if ENSEMBLE in sources else [])))
    from ser_core.models.bundle import ModelBundle
    folders = {k: str(v) for k, v in (folders or {}).items()}
    bundles = {k: ModelBundle.load(v) for k, v in folders.items()}
    for b in bundles.values():
        b.configure_onnx(threads=1)
    t = Targets(names, corpora, data_dir, bundles)
    clips = transfer_clips(corpora, n, seed, data_dir)
    rows = read_rows(out) if out.is_file() else []
    index = {_key(r): i for i, r in enumerate(rows)}
    written, clean = 0, {}
    for snr in snrs:
        for clip in clips:
            for source in sources:
                i = index.get((clip["id"], source, float(snr), float(confidence)))
                tried = set() if i is None else {n for r in rows[i].get("rescored", []) for n in r["targets"]}
                missing = [] if i is None else [n for n in targets if n not in rows[i]["adversarial"] and n not in tried]
                if i is not None and not missing:
                    continue
                if clip["id"] not in clean:
                    clean[clip["id"]] = t.decide(from_pcm(to_pcm(clip["audio"])), clip["corpus"])
                row = attack_row(source, clip, snr, t, clean[clip["id"]], steps, seed, confidence)
                row["targets"] = names
                if folders:
                    row["folders"] = folders
                if i is None:
                    with out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    index[_key(row)] = len(rows)
                    rows.append(row)
                else:
                    rows[i] = row = rescore(rows[i], row, missing)
                    _write_all(out, rows)
                written += 1
                if log:
                    log(row)
    return written


def matrix(rows: list[dict], snr_db: float, confidence: float = 0.0) -> dict:
    """{(source, target): {changed, changed_given_source_flip}} over the rows at snr_db, each a
    `rate` (k, n, share, 95 % Wilson interval); changed_given_source_flip counts only the clips
    whose source decision flipped. For the ensemble, also (ensemble, 'own default'): the column of
    each clip's own corpus default model, never a member."""
    from ser_core.attacks.over_the_air import rate
    rows = [r for r in rows if r["snr_db"] == snr_db and r.get("confidence", 0.0) == confidence]
    out = {}
    for source in dict.fromkeys(r["source"] for r in rows):
        mine = [r for r in rows if r["source"] == source]
        columns = dict.fromkeys(n for r in mine for n in r["adversarial"])
        for target in columns:
            have = [r for r in mine if target in r["adversarial"]]
            changed = [r["adversarial"][target] != r["clean"][target] for r in have]
            given = [c for c, r in zip(changed, have) if r["source_flipped"]]
            out[(source, target)] = {"changed": rate(sum(changed), len(changed)),
                                     "changed_given_source_flip": rate(sum(given), len(given))}
        if source == ENSEMBLE:
            changed = [r["adversarial"][r["corpus"]] != r["clean"][r["corpus"]] for r in mine]
            given = [c for c, r in zip(changed, mine) if r["source_flipped"]]
            out[(source, "own default")] = {"changed": rate(sum(changed), len(changed)),
                                            "changed_given_source_flip": rate(sum(given), len(given))}
    return out
