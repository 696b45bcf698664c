"""Universal perturbations: one waveform for every voice, learned once, added to any clip.

A universal adversarial perturbation (Moosavi-Dezfooli et al., CVPR 2017, arXiv 1610.08401; on
speech, Neekhara et al., Interspeech 2019, arXiv 1905.03828; on speech emotion, DARE-GP, Testa
et al. 2023, arXiv 2211.09273) is a single signal that changes the model's decision on clips it
was not crafted on. Here it is a 3 s waveform `delta` (one chunk window), added to the clip's
speech span (librosa's trim bounds, as the serving path finds them) tiled from the span's
start, or cropped when the span is shorter, at a fixed SNR against the speech:

    y_adv[a:b] = y[a:b] + s * tile(delta)[:b - a],  s = sqrt(mean(y[a:b]^2) 10^(-snr/10) / mean(tile^2))

so `speech_snr_db(y, y_adv)` is the stated SNR on a clip of any length (up to 16-bit rounding;
tested). Samples outside the span stay clean: noise in the leading and trailing silence would
move the trim and only shift the chunking.

Crafting (`craft_universal`) is mini-batch gradient descent (Adam) on delta over clips of the
training speakers, the chunking of each clip held fixed (chunkmap), through the differentiable
front-end and the bundle's torch model; the loss is the clip margin of the objective (away from
the clean decision, or onto a target emotion) clamped at -kappa so clips already fooled stop
pulling. With `rooms`, each clip of a batch is first played in a room drawn from them (EOT,
expectation over transformations; Athalye et al., ICML 2018, arXiv 1707.07397), as
ser_core/audio/room.py records it. The perturbation is stored unit-RMS, so the SNR is applied at
use; `UniversalPerturbation.save` writes it as an .npz (16-bit samples and how it was made)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ser_core.attacks.objective import Objective
from ser_core.attacks.waveform.base import from_pcm, to_pcm
from ser_core.audio.chunkmap import chunk_index_map
from ser_core.audio.chunks import trim_bounds
from ser_core.audio.frontend import LogMelFrontEnd
from ser_core.config import PAPER_FEATURES, FeatureConfig
from ser_core.control import should_stop
from ser_core.errors import ParameterError

SNRS_DB = (20.0, 25.0, 30.0)


def speech_span(y: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> tuple[int, int]:
    """[a, b): the clip's speech as the serving path trims it (the whole clip when trim keeps nothing)."""
    a, b = trim_bounds(np.asarray(y, np.float32), cfg)
    return (a, b) if b > a else (0, len(y))


def speech_snr_db(clean: np.ndarray, adversarial: np.ndarray, cfg: FeatureConfig = PAPER_FEATURES) -> float:
    """SNR of the perturbation against the clean clip's speech span, dB."""
    a, b = speech_span(clean, cfg)
    c = np.asarray(clean, np.float64)[a:b]
    d = np.asarray(adversarial, np.float64)[a:b] - c
    noise = float(np.sum(d ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(c ** 2)) / noise)


def apply_universal(y: np.ndarray, delta: np.ndarray, snr_db: float,
                    cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
    """The clip y (float, full scale 1) with delta tiled or cropped over its speech span at
    snr_db against the speech, rounded to 16 bits as a WAV would hold it (float32)."""
    y = np.asarray(y, np.float32)
    a, b = speech_span(y, cfg)
    tile = np.resize(np.asarray(delta, np.float64), b - a)
    speech = float(np.mean(y[a:b].astype(np.float64) ** 2))
    power = float(np.mean(tile ** 2))
    if speech == 0 or power == 0:
        return from_pcm(to_pcm(y))
    out = y.astype(np.float64)
    out[a:b] += tile * math.sqrt(speech * 10 ** (-snr_db / 10) / power)
    return from_pcm(to_pcm(out))


@dataclass
class UniversalPerturbation:
    """delta: (samples,) float32, unit RMS; snr_db: the level it was crafted for; target: the
    emotion it pushes every clip to (None: untargeted); meta: how it was made (model, weights,
    seed, steps, training speakers and clips, rooms, seconds)."""

    delta: np.ndarray
    snr_db: float
    target: str | None = None
    meta: dict = field(default_factory=dict)

    @staticmethod
    def file_name(snr_db: float, target: str | None = None) -> str:
        return f"universal-{snr_db:g}db" + (f"-{target}" if target else "") + ".npz"

    def apply(self, y: np.ndarray, snr_db: float | None = None, cfg: FeatureConfig = PAPER_FEATURES) -> np.ndarray:
        return apply_universal(y, self.delta, self.snr_db if snr_db is None else snr_db, cfg)

    def save(self, folder) -> Path:
        """folder/universal-<snr>db[-<target>].npz: the delta as 16-bit samples (peak at full
        scale) and its metadata as JSON."""
        path = Path(folder) / self.file_name(self.snr_db, self.target)
        peak = float(np.abs(self.delta).max()) or 1.0
        pcm = np.round(self.delta / peak * 32767).astype(np.int16)
        meta = dict(self.meta, snr_db=self.snr_db, target=self.target)
        np.savez_compressed(path, delta=pcm, meta=np.array(json.dumps(meta)))
        return path

    @classmethod
    def load(cls, path) -> "UniversalPerturbation":
        with np.load(Path(path), allow_pickle=False) as z:
            d = z["delta"].astype(np.float64)
            meta = json.loads(str(z["meta"]))
        d = (d / max(np.sqrt(np.mean(d ** 2)), 1e-30)).astype(np.float32)
        return cls(d, float(meta["snr_db"]), meta.get("target"), meta)


def shipped_universal(bundle) -> list[dict]:
    """The universal perturbations shipped in a bundle's folder: [{snr_db, target, file}]."""
    out = []
    for p in sorted(Path(bundle.folder).glob("universal-*db*.npz")):
        meta = UniversalPerturbation.load(p).meta
        out.append({"snr_db": meta["snr_db"], "target": meta.get("target"), "file": p.name})
    return out


def load_universal(bundle, snr_db: float = 25.0, target: str | None = None) -> UniversalPerturbation:
    """The bundle's shipped perturbation for snr_db and target (ParameterError naming those shipped)."""
    path = Path(bundle.folder) / UniversalPerturbation.file_name(snr_db, target)
    if not path.is_file():
        have = ", ".join(f"{d['snr_db']:g} dB" + (f" -> {d['target']}" if d["target"] else "")
                         for d in shipped_universal(bundle)) or "none"
        raise ParameterError(f"model {bundle.name} ships no universal perturbation for {snr_db:g} dB"
                             f"{' -> ' + target if target else ''} (shipped: {have})")
    return UniversalPerturbation.load(path)


class _Clip:
    """A training clip prepared once: samples (tensor), speech span, speech power, clean chunk
    map, and per room the room's noise and the chunk map of the clean clip's recording."""

    def __init__(self, y: np.ndarray, cfg: FeatureConfig):
        self.y = from_pcm(to_pcm(y))
        self.x = torch.from_numpy(self.y.astype(np.float32))
        self.a, self.b = speech_span(self.y, cfg)
        self.power = float(np.mean(self.y[self.a:self.b].astype(np.float64) ** 2))
        self.index = torch.from_numpy(chunk_index_map(self.y, cfg))
        self.cfg, self._rooms = cfg, {}

    def in_room(self, room):
        key = room.spec
        if key not in self._rooms:
            rec = room.recording(self.y)
            self._rooms[key] = (torch.from_numpy(room.noise(self.y.astype(np.float64)).astype(np.float32)),
                                torch.from_numpy(chunk_index_map(rec, self.cfg)))
        return self._rooms[key]

    def perturbed(self, v: torch.Tensor, snr_db: float) -> torch.Tensor:
        """The clip with unit-free v tiled over its speech span at snr_db (differentiable in v)."""
        n = self.b - self.a
        tile = v.repeat(-(-n // len(v)))[:n]
        scale = torch.sqrt(self.power * 10 ** (-snr_db / 10) / tile.square().mean().clamp_min(1e-30))
        return torch.cat([self.x[:self.a], self.x[self.a:self.b] + scale * tile, self.x[self.b:]])


def craft_universal(bundle, clips: list, snr_db: float, target: str | None = None, steps: int = 200,
                    batch: int = 16, lr: float = 0.05, kappa: float = 2.0, seed: int = 0, length: int | None = None,
                    rooms: list | None = None, schedule: str = "constant", progress=None,
                    log=None) -> UniversalPerturbation:
    """A universal perturbation for `bundle`, learned on `clips` (decoded arrays at the bundle's
    rate, the training speakers'): `steps` Adam steps (learning rate `lr` on a unit-RMS delta) on
    mini-batches of `batch` clips drawn in seeded order, each clip perturbed at `snr_db`, the clip
    margin of the objective (away from the clean decision, in a room the clean recording's decision
    there; onto `target` when given) clamped at -kappa and averaged. rooms: a list of `Room` (training rooms) to play each clip in (EOT), one
    drawn per clip and step; None: digital. length: samples of delta (default one 3 s window).
    schedule: "constant" step size, or "cosine" (lr 0.5 (1 + cos(pi t / steps))).
    log(step, dict) is called every 10 steps with the batch's loss and share of clips fooled."""
    cfg = bundle.feature_config
    if schedule not in ("constant", "cosine"):
        raise ParameterError(f"craft_universal: schedule {schedule!r} (accepted: constant, cosine)")
    if not clips:
        raise ParameterError("craft_universal: no clips to learn from (accepted: a list of decoded clips)")
    t_index = None if target is None else bundle.labels.index(target)
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    prepared = [_Clip(y, cfg) for y in clips]
    clean = np.array([bundle.labels.index(bundle.predict_clip(c.y, cfg.sample_rate).label) for c in prepared])
    frontend, model = LogMelFrontEnd.for_bundle(bundle), bundle.torch_model()
    v = torch.randn(length or cfg.window_samples, generator=torch.Generator().manual_seed(seed)).requires_grad_(True)
    momentum = torch.zeros_like(v)
    order, t0, cpu0 = np.array([], int), time.perf_counter(), time.process_time()
    room_labels = {}  # (clip, room) -> the clean recording's decision there: what a flip is measured against
    for step in range(steps):
        if should_stop():
            break
        if len(order) < batch:
            order = np.concatenate([order, rng.permutation(len(prepared))])
        pick, order = order[:batch], order[batch:]
        unit = v / v.square().mean().sqrt()
        chunks, counts, labels = [], [], []
        for i in pick:
            c = prepared[i]
            x = c.perturbed(unit, snr_db)
            index, label = c.index, clean[i]
            if rooms:
                room = rooms[rng.integers(len(rooms))]
                noise, index = c.in_room(room)
                x = room.apply_torch(x[None], noise)[0]
                label = _room_label(room_labels, (int(i), room.spec), model, frontend,
                                    room.apply_torch(c.x[None], noise)[0][index])
            chunks.append(x[index])
            counts.append(len(index))
            labels.append(label)
        lp = torch.log_softmax(model(frontend(torch.cat(chunks))), dim=1)
        clip_lp = torch.stack([torch.logsumexp(part, 0) - math.log(len(part)) for part in torch.split(lp, counts)])
        objective = Objective(np.array(labels), None if t_index is None else np.full(len(pick), t_index))
        margin = objective.margin(clip_lp)
        loss = margin.clamp_min(-kappa).mean()
        grad, = torch.autograd.grad(loss, v)
        with torch.no_grad():  # normalised-gradient step with momentum: keeps the gradient's spectrum
            momentum.mul_(0.9).add_(grad / grad.norm().clamp_min(1e-30))
            eta = lr if schedule == "constant" else lr * 0.5 * (1 + math.cos(math.pi * step / steps))
            v -= eta * math.sqrt(len(v)) * momentum / momentum.norm().clamp_min(1e-30)
            v /= v.square().mean().sqrt()
        if log and step % 10 == 0:
            log(step, {"loss": round(loss.item(), 4), "fooled": float((margin < 0).float().mean()),
                       "seconds": round(time.perf_counter() - t0, 1)})
        if progress:
            progress((step + 1) / steps, f"universal step {step + 1}/{steps}")
    delta = (v / v.square().mean().sqrt()).detach().numpy().astype(np.float32)
    meta = {"model": bundle.name, "weights_sha": bundle.config.get("weights_sha"), "seed": seed, "steps": step + 1,
            "batch": batch, "lr": lr, "schedule": schedule, "kappa": kappa, "clips": len(clips), "samples": len(delta),
            "rooms": len(rooms) if rooms else 0, "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - cpu0, 1)}
    return UniversalPerturbation(delta, float(snr_db), target, meta)



@torch.no_grad()
def _room_label(cache: dict, key, model, frontend, chunks: torch.Tensor) -> int:
    if key not in cache:
        cache[key] = int(torch.softmax(model(frontend(chunks)), 1).mean(0).argmax())
    return cache[key]


CARD_MARK = "<!-- universal perturbations: ser_core.attacks.universal.write_card_section -->"


def card_section(folder) -> str:
    """Markdown for a model card: each universal perturbation shipped in `folder`, how it was made
    (data, seed, steps, step size, rooms, CPU time) and the command that remakes it."""
    files = sorted(Path(folder).glob("universal-*.npz"))
    if not files:
        return ""
    out = [CARD_MARK, "## Universal perturbations", "",
           "One waveform each, added over a clip's speech span (tiled or cropped) at the stated SNR against "
           "the speech (`ser_core.attacks.universal`; docs/attacks.md). Crafted on the training speakers' clips "
           "only; fooling rates on the held-out speakers: reports/over-the-air/README.md.", "",
           "| file | SNR dB | target | length s | training clips (speakers) | seed | steps x batch | step size "
           "| rooms (EOT) | CPU min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for f in files:
        m = UniversalPerturbation.load(f).meta
        cpu = m.get("cpu_seconds")
        out.append(f"| {f.name} | {m['snr_db']:g} | {m.get('target') or 'none (untargeted)'} | "
                   f"{m['samples'] / 16000:g} | {m['clips']} ({', '.join(m.get('speakers', []))}) | {m['seed']} | "
                   f"{m['steps']} x {m['batch']} | {m['lr']:g} {m.get('schedule', 'constant')} | {m['rooms']} | "
                   f"{'-' if cpu is None else f'{cpu / 60:.1f}'} |")
    out += ["", "Remake: " + "; ".join(f"`{UniversalPerturbation.load(f).meta.get('command', '')}`" for f in files), ""]
    return "\n".join(out)


def write_card_section(folder) -> None:
    """Replace (or append) the universal-perturbation section of folder/README.md."""
    readme = Path(folder) / "README.md"
    text = readme.read_text()
    head = text.split(CARD_MARK)[0].rstrip("\n") + "\n\n"
    readme.write_text(head + card_section(folder))
