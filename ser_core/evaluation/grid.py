"""The evaluation grid: bundles x registered attacks x each attack's `paper_settings`, every
cell broken down into three subsets (all, male, female), one tidy row per subset.

A cell attacks the bundle's test examples (full profile) or the first n of a class- and
gender-balanced order of them (quick profile; n per attack family, see `PROFILES`: the study's
black-box and C&W attacks cost 10-1000 times FGSM), in batches, as the study ran ART over its
test set. Every row records how many examples stand behind it and their Wilson interval. Per-example outcomes of every finished batch
are kept in `<results>.cells/`, in a folder per cell keyed by the model's weights, the setting,
the example rows and the batch size, so that an interrupted run resumes inside a cell, and rows
already in the results file are skipped. Each batch file also records where the batch ran (its
device, CPU and wall seconds, threads, executor), and each row lists its batches. Who runs the
batches is an executor: `LocalExecutor` (this process, in order; the default) or
`cluster.RayExecutor` (Ray tasks, an optional install); either way this process alone writes. Accuracy under attack is measured against the true
labels over all attacked examples: an example the model already got wrong counts as an error
(the study's convention). Attacks move away from the model's clean decision by default (ART's
default when no labels are given, which the study's notebooks relied on).

White-box attacks are crafted on the torch model; their adversarial inputs are scored on both
the torch model and ONNX Runtime (`bundle.predict_features`, which the app serves), so each row
also says how often the two agree on the attacked inputs ("transfer")."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ser_core.errors import ParameterError
from ser_core.data.held_out import GENDERS, HeldOutSet, balanced_order, bundle_test_set
from ser_core.stats import wilson, wilson_half_width, wilson_size

SUBSETS = ("all",) + GENDERS


@dataclass(frozen=True)
class Profile:
    """examples: examples attacked per bundle, per attack (None: the whole test set), taken
    from the front of `balanced_order` so that every count is as balanced over classes and
    genders as the test set allows and a smaller count is a subset of a larger one; attacks
    not named get `default`. batch: examples per attack call."""

    name: str
    default: int | None
    examples: dict = field(default_factory=dict)
    batch: int = 64
    seed: int = 0

    def count(self, attack: str) -> int | None:
        return self.examples.get(attack, self.default)


# Quick: every attack at every study setting on every shipped bundle within 30 minutes of this
# 2-core CPU (projection: `python -m export evaluate --profile quick --dry-run`, from the
# single-thread CPU seconds per example in costs.json). Ten examples are one per class and
# gender; the costly attacks get one or two per gender. The intervals in the report say what
# so few examples can and cannot show.
#
# Standard: enough examples that every cell of the study's table can be compared with it. The
# count is the fewest examples whose 95 % Wilson interval is within +/- the margin at any
# accuracy (stats.wilson_size: 381 for 5 points, 93 for 10): 5 points for the white-box
# attacks, 10 for C&W L2, Pixel and Boundary (the costly ones, as the issue sizes them). The
# whole test set where that is cheap: an attack whose every setting on the three paper test sets
# together costs at most STANDARD_WHOLE_CPU_HOURS by costs.json (FGSM, DeepFool, C&W Linf;
# a test checks the split against the table). A test set smaller than the count is attacked
# whole (the speaker bundles). Batches of 32: a batch is the unit a Ray task runs, so smaller
# batches spread a cell over more workers.
STANDARD_MARGINS = {"cw_l2": 0.10, "pixel": 0.10, "boundary": 0.10}
STANDARD_MARGIN = 0.05
STANDARD_WHOLE = ("fgsm", "deepfool", "cw_linf")
STANDARD_WHOLE_CPU_HOURS = 1.0
PROFILES = {
    "quick": Profile("quick", 20, {"bim": 4, "jsma": 10, "cw_l2": 4, "cw_linf": 10, "boundary": 4, "pixel": 2}),
    "standard": Profile("standard", wilson_size(STANDARD_MARGIN),
                        {**{a: wilson_size(m) for a, m in STANDARD_MARGINS.items()},
                         **dict.fromkeys(STANDARD_WHOLE, None)}, batch=32),
    "full": Profile("full", None, batch=128),
}


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ParameterError(f"device {device!r} (accepted: auto, cpu, cuda, cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r}: CUDA is not available here (accepted: auto, cpu)")
    return device


def place(bundle, device: str) -> None:
    """Put the bundle's torch model on `device`; white-box attacks get it from
    bundle.torch_model() and must move their inputs to the model's device."""
    bundle.torch_model().to(device)


def select_attacks(names=None, registry=None) -> dict:
    """name -> attack class, in registry order (white-box first, then black-box)."""
    if registry is None:
        from ser_core.attacks import registry as feature_attacks
        registry = feature_attacks("features")
    names = list(names) if names else sorted(registry, key=lambda n: (registry[n].kind != "white-box", n))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ParameterError(f"unknown attacks {unknown} (accepted: {', '.join(sorted(registry)) or 'none registered'})")
    return {n: registry[n] for n in names}


def settings_of(cls) -> list[dict]:
    """The study's settings of an attack; its defaults if it declares none."""
    return [dict(s) for s in cls.paper_settings] or [{}]


def setting_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=float)


def row_key(row: dict) -> tuple:
    return (row["model"], row["attack"], row["setting_key"], row["subset"])


def read_rows(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that cell is simply redone
            # a cell redone with another example count replaces the earlier rows
            rows[row_key(r) if "setting_key" in r else len(rows)] = r
    return list(rows.values())


@torch.no_grad()
def torch_probabilities(bundle, x: np.ndarray, batch: int = 128) -> np.ndarray:
    model = bundle.torch_model()
    device = next(model.parameters()).device
    out = [torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(device)), 1).cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


# per-batch facts stored beside the per-example outcomes: where and how the batch ran
BATCH_META = ("device", "batch_cpu_seconds", "batch_seconds", "threads", "onnx_threads", "executor")
# row fields that depend on where and when a batch ran, not on what the attack did: two runs
# of the same grid (local loop or Ray, any machine) agree on every other field
TIMING_FIELDS = ("seconds", "seconds_per_example", "cpu_seconds", "device", "batches")


def attack_batch(attack, x: np.ndarray, executor: str = "local") -> dict:
    """Per-example outcomes of one attack call, what a row is summarised from, and the batch's
    own facts (BATCH_META): the device it ran on, its process CPU time (all threads; CPU time
    is what projects a run on an idle machine from a loaded one), its wall seconds, the torch
    and ONNX Runtime intra-op threads (0: ONNX Runtime's default, one per core), and the executor. cpu_seconds and seconds per example are the
    batch's shared equally."""
    bundle = attack.bundle
    if attack.kind == "white-box":
        device = str(next(bundle.torch_model().parameters()).device)
    else:
        device = "cuda" if "CUDAExecutionProvider" in bundle.onnx_session().get_providers() else "cpu"
    cpu = time.process_time()
    res = attack(x)
    cpu = time.process_time() - cpu
    out = {"cpu_seconds": np.full(len(x), cpu / len(x)), "clean_pred": res.clean_pred, "adv_pred": res.adv_pred,
           "conf_before": res.clean_probs.max(1), "conf_after": res.adv_probs.max(1),
           "mean_abs": res.mean_abs, "l2": res.l2, "linf": res.linf,
           "queries": res.queries.astype(np.int64), "seconds": np.full(len(x), res.seconds / len(x))}
    if attack.kind == "white-box":
        out["torch_pred"] = torch_probabilities(bundle, res.x_adv).argmax(1)
    out.update(device=device, batch_cpu_seconds=cpu, batch_seconds=res.seconds, threads=torch.get_num_threads(),
               onnx_threads=bundle.onnx_session().get_session_options().intra_op_num_threads, executor=executor)
    return out


def save_batch(path: Path, out: dict) -> None:
    """Write a batch file atomically (a cut write leaves no file, so the batch is redone)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)


def load_batch(path: Path) -> dict:
    with np.load(path) as f:
        out = {k: f[k] for k in f.files}
    for k in BATCH_META:
        if k in out:
            out[k] = out[k].item()
    return out


def combine(parts: list[dict]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Batches in order -> (per-example outcomes of the cell, the batches' own facts)."""
    keys = [k for k in parts[0] if k not in BATCH_META]
    cells = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    batches = [{"examples": len(p["adv_pred"]), "device": p.get("device", "unknown"),
                "cpu_seconds": float(p.get("batch_cpu_seconds", p["cpu_seconds"].sum())),
                "seconds": float(p.get("batch_seconds", p["seconds"].sum())),
                "threads": p.get("threads"), "onnx_threads": p.get("onnx_threads"),
                "executor": p.get("executor")} for p in parts]
    return cells, batches


def summarise(cells: dict[str, np.ndarray], ts: HeldOutSet, base: dict, batches: list[dict] | None = None) -> list[dict]:
    """Three rows (all / male / female) from per-example outcomes; `batches` (from `combine`)
    give each row the devices its batches ran on and their own timings."""
    rows = []
    if batches is not None:
        base = dict(base, device=",".join(sorted({b["device"] for b in batches})), batches=batches)
    for subset in SUBSETS:
        m = np.ones(len(ts), bool) if subset == "all" else ts.genders == subset
        n = int(m.sum())
        y = ts.labels[m]
        correct = int((cells["adv_pred"][m] == y).sum())
        clean_correct = int((cells["clean_pred"][m] == y).sum())
        mean = (lambda a: float(a[m].mean()) if n else None)
        row = dict(base, subset=subset, n=n,
                   clean_accuracy=clean_correct / n if n else None, clean_correct=clean_correct,
                   accuracy=correct / n if n else None, correct=correct,
                   # wrong before the attack, right after: the attack moved a wrong decision onto the label
                   restored=int(((cells["clean_pred"][m] != y) & (cells["adv_pred"][m] == y)).sum()),
                   accuracy_ci=list(wilson(correct, n)),
                   success_rate=mean(cells["adv_pred"] != cells["clean_pred"]),
                   mean_abs=mean(cells["mean_abs"]), l2=mean(cells["l2"]), linf=mean(cells["linf"]),
                   confidence_before=mean(cells["conf_before"]), confidence_after=mean(cells["conf_after"]),
                   queries=mean(cells["queries"]),
                   seconds=float(cells["seconds"].sum()),
                   seconds_per_example=float(cells["seconds"].mean()),
                   cpu_seconds=float(cells["cpu_seconds"].sum()) if "cpu_seconds" in cells else None)
        if "torch_pred" in cells:
            row.update(torch_accuracy=mean(cells["torch_pred"] == ts.labels),
                       torch_onnx_agreement=mean(cells["torch_pred"] == cells["adv_pred"]))
        rows.append(row)
    return rows


def _cell_dir(results: Path, model: str, attack: str, key: str, rows: np.ndarray, weights: str | None = None,
              batch: int | None = None) -> Path:
    """Per-cell folder, named by the setting, the examples attacked, the model's weights and the
    batch size (a different count, a retrained model of the same name, or batches cut at other
    examples must not reuse another's batch files)."""
    h = hashlib.sha256(key.encode() + np.asarray(rows, np.int64).tobytes()
                       + (weights or "").encode() + f"|batch={batch}".encode()).hexdigest()[:10]
    return results.parent / (results.stem + ".cells") / model / f"{attack}-{h}"


@dataclass(eq=False)
class Cell:
    """One (bundle, attack, setting) cell in a run: its examples, its batch folder, the batches
    it has so far (number -> outcomes) and whether its rows are written."""

    index: int
    bundle: object
    name: str
    cls: type
    settings: dict
    key: str
    ts: HeldOutSet
    total: HeldOutSet
    folder: Path
    batch: int
    parts: dict = field(default_factory=dict)
    written: bool = False

    @property
    def batches(self) -> int:
        return -(-len(self.ts) // self.batch)

    def span(self, number: int) -> tuple[int, int]:
        return number * self.batch, min(len(self.ts), (number + 1) * self.batch)

    def path(self, number: int) -> Path:
        return self.folder / f"batch{number:05d}.npz"


@dataclass(frozen=True, eq=False)
class BatchJob:
    """One attack call: batch `number` of `cell`."""

    cell: Cell
    number: int

    @property
    def x(self) -> np.ndarray:
        start, stop = self.cell.span(self.number)
        return self.cell.ts.x[start:stop]


class LocalExecutor:
    """Today's loop: every batch in this process, in plan order, on `device`."""

    name = "local"

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._attacks: dict[int, object] = {}

    def prepare(self, bundle) -> None:
        place(bundle, self.device)

    def run(self, jobs):
        for job in jobs:
            cell = job.cell
            attack = self._attacks.get(id(cell))
            if attack is None:
                self._attacks = {id(cell): cell.cls(cell.bundle, **cell.settings)}  # one cell at a time
                attack = self._attacks[id(cell)]
            yield job, attack_batch(attack, job.x, self.name)

    def close(self) -> None:
        pass


COSTS = Path(__file__).with_name("costs.json")


def load_costs(path=COSTS) -> dict:
    """(attack, setting_key) -> seconds per example, and "overhead_per_bundle" -> seconds,
    from a cost table written by `python -m export evaluate --measure-costs`."""
    path = Path(path)
    if not path.is_file():
        return {}
    table = json.loads(path.read_text())
    costs = {(r["attack"], r["setting_key"]): r["seconds_per_example"] for r in table["cells"]}
    costs["overhead_per_bundle"] = table.get("overhead_per_bundle", 0.0)
    return costs


def save_costs(rows: list[dict], path=COSTS, overhead_per_bundle: float | None = None, note: str = "") -> dict:
    """Write the cost table: CPU seconds per example of every (attack, setting) in `rows`
    (process CPU time, all threads: on an idle machine a CPU-bound run takes at most that
    long). Existing entries for other cells, and the overhead unless given, are kept."""
    path = Path(path)
    old = json.loads(path.read_text()) if path.is_file() else {}
    cells = {(c["attack"], c["setting_key"]): c for c in old.get("cells", [])}
    for r in rows:
        if r["subset"] == "all" and r["n"] and r.get("cpu_seconds") is not None:
            cells[(r["attack"], r["setting_key"])] = {
                "attack": r["attack"], "setting_key": r["setting_key"], "model": r["model"], "n": r["n"],
                "seconds_per_example": round(r["cpu_seconds"] / r["n"], 4)}
    table = {"note": note or old.get("note", ""),
             "overhead_per_bundle": old.get("overhead_per_bundle", 0.0) if overhead_per_bundle is None else overhead_per_bundle,
             "cells": sorted(cells.values(), key=lambda c: (c["attack"], c["setting_key"]))}
    path.write_text(json.dumps(table, indent=1) + "\n")
    return table


def cost_per_example(row: dict) -> float:
    """What an example of a results row cost: its CPU seconds per example when it ran on a CPU
    (wall time there says how busy the machine was: a cell run at nice 19 beside training took
    40 times its CPU time), else its wall seconds per example (a GPU's time is not CPU time)."""
    if row.get("device") == "cpu" and row.get("cpu_seconds") is not None and row["n"]:
        return row["cpu_seconds"] / row["n"]
    return row["seconds_per_example"]


class Projection:
    """Seconds per example per (attack, setting): measured on the same model in this run's
    results file where a row exists (`cost_per_example`: CPU seconds on a CPU, as the cost table
    counts; an attack's cost per example differs between models: Pixel took 12-14 CPU s an
    example on the paper bundles and a fraction of that on the speaker ones), else measured on
    another model, else the cost table, else the mean of the attack's other settings."""

    def __init__(self, rows=(), costs: dict | None = None):
        self.per_example: dict[tuple, float] = {k: v for k, v in (costs or {}).items() if isinstance(k, tuple)}
        self.per_model: dict[tuple, float] = {}
        self.overhead = (costs or {}).get("overhead_per_bundle", 0.0)
        for r in rows:
            if r["subset"] == "all" and r["n"]:
                self.add(r["attack"], r["setting_key"], cost_per_example(r), r["model"])

    def add(self, attack, key, spe, model=None):
        self.per_example[(attack, key)] = spe
        if model is not None:
            self.per_model[(model, attack, key)] = spe

    def estimate(self, attack, key, n, model=None) -> float | None:
        spe = self.per_model.get((model, attack, key))
        if spe is None:
            spe = self.per_example.get((attack, key))
        if spe is None:
            same = [v for (a, _), v in self.per_example.items() if a == attack]
            spe = float(np.mean(same)) if same else None
        return None if spe is None else spe * n


def bundle_weights(bundles) -> dict[str, str | None]:
    """Model name -> the weights_sha of the loaded bundle of that name (what `current_rows` reads)."""
    return {b.name: b.config.get("weights_sha") for b in bundles}


def current_rows(rows: list[dict], weights: dict[str, str | None]) -> tuple[list[dict], dict[str, int]]:
    """The rows measured on each model's weights now (`weights`: model name -> weights_sha of
    the bundle of that name), and per model the count of rows left out because they were
    measured on weights the bundle no longer has (a retrained model whose cells have not all been
    rerun; a bundle without a recorded hash matches none). Rows of a model not in `weights`, or
    without a recorded hash, stay. The resume check (`_done`) and the report share this rule."""
    kept, left = [], {}
    for r in rows:
        if r["model"] in weights and r.get("weights_sha") and r["weights_sha"] != weights[r["model"]]:
            left[r["model"]] = left.get(r["model"], 0) + 1
        else:
            kept.append(r)
    return kept, left


def _done(rows, bundles=()) -> dict:
    """(model, attack, setting_key) -> examples behind its rows, for cells with all three rows.
    Rows written for other weights than those of the same-named bundle in `bundles` (a
    retrained model) do not count; rows from before weights were recorded do."""
    have = {}
    for r in current_rows(rows, bundle_weights(bundles))[0]:
        have.setdefault((r["model"], r["attack"], r["setting_key"]), {})[r["subset"]] = r["n"]
    return {k: v["all"] for k, v in have.items() if set(SUBSETS) <= set(v)}


def bundle_test_size(bundle) -> int | None:
    """Test examples the bundle records (checked against the corpus when the grid loads them)."""
    return bundle.held_out_rows


def examples_for(profile: Profile, attack: str, size: int | None) -> int | None:
    n = profile.count(attack)
    return size if n is None else (n if size is None else min(n, size))


def plan_grid(bundles, attacks: dict) -> list[tuple]:
    """(bundle, attack name, attack class, setting) of every cell, in run order."""
    return [(b, name, cls, s) for b in bundles for name, cls in attacks.items() for s in settings_of(cls)]


def project(bundles, attacks: dict, profile: Profile, rows=(), costs: dict | None = None) -> dict:
    """Projected seconds of the cells not yet in `rows`: per attack (with the examples each
    attacks per bundle), per bundle, and in total (including a per-bundle overhead: loading
    the test set and the model)."""
    proj = Projection(rows, load_costs() if costs is None else costs)
    done = _done(rows, bundles)
    per_attack: dict[str, dict] = {}
    per_bundle: dict[str, float] = {}
    unknown = []
    for bundle, name, _, settings in plan_grid(bundles, attacks):
        key = setting_key(settings)
        n = examples_for(profile, name, bundle_test_size(bundle))
        a = per_attack.setdefault(name, {"examples": {}, "seconds": 0.0, "cells": 0})
        a["examples"][bundle.name] = n
        if done.get((bundle.name, name, key)) == n:
            continue
        sec = proj.estimate(name, key, n if n is not None else 0, bundle.name)
        if sec is None:
            unknown.append(f"{name} {key}")
            continue
        a["seconds"] += sec
        a["cells"] += 1
        per_bundle[bundle.name] = per_bundle.get(bundle.name, proj.overhead) + sec
    return {"per_attack": per_attack, "per_bundle": per_bundle, "unmeasured": unknown,
            "total_seconds": sum(per_bundle.values())}


def format_projection(p: dict, profile: Profile) -> str:
    lines = [f"projection ({profile.name} profile; seconds per example from {COSTS.name} or this results file):"]
    for name, a in p["per_attack"].items():
        counts = sorted(set(a["examples"].values()), key=lambda v: (v is None, v))
        lines.append(f"  {name:9} examples per model {'/'.join('all' if v is None else str(v) for v in counts):>7}: "
                     f"{a['cells']:3d} cells left, {a['seconds'] / 60:6.1f} min")
    overhead = p["total_seconds"] - sum(a["seconds"] for a in p["per_attack"].values())
    lines.append(f"  loading test sets and models: {overhead / 60:.1f} min")
    lines.append(f"  total {p['total_seconds'] / 60:.1f} min over {len(p['per_bundle'])} models"
                 + (f" (+ {len(p['unmeasured'])} unmeasured cells)" if p["unmeasured"] else ""))
    return "\n".join(lines)


def gender_split(n: int | None, n_male: int | None, n_female: int | None) -> tuple[int | None, int | None]:
    """(male, female) examples among the first n of `balanced_order` (None: the whole test set):
    genders alternate, male first, until one runs out."""
    if n_male is None or n_female is None:
        return None, None
    if n is None:
        return n_male, n_female
    n = min(n, n_male + n_female)
    m = min(n_male, max((n + 1) // 2, n - n_female))
    return m, n - m


def plan_cells(bundles, attacks: dict, profile: Profile, costs: dict | None = None, rows=()) -> list[dict]:
    """Per (bundle, attack): the examples each of its settings attacks (all, male, female), the
    widest 95 % Wilson half-width those counts allow whatever the accuracy, and the projected
    CPU seconds of all its settings, done or not: from `rows` (a results file's rows measured
    on the bundles' current weights) where they measured the cell, else from the cost table
    (single-thread CPU seconds per example; None where a setting is unmeasured)."""
    proj = Projection(current_rows(list(rows), bundle_weights(bundles))[0], load_costs() if costs is None else costs)
    out = []
    for b in bundles:
        t = b.config.get("metrics", {}).get("test", {})
        size = bundle_test_size(b)
        for name, cls in attacks.items():
            n = examples_for(profile, name, size)
            m, f = gender_split(n, t.get("n_male"), t.get("n_female"))
            n = size if n is None else n
            secs = [proj.estimate(name, setting_key(st), n or 0, b.name) for st in settings_of(cls)]
            out.append({"model": b.name, "attack": name, "settings": len(secs), "examples": n, "male": m, "female": f,
                        "whole_test_set": n == size,
                        "half_width": {k: (None if v is None else round(wilson_half_width(v), 4))
                                       for k, v in (("all", n), ("male", m), ("female", f))},
                        "cpu_seconds": None if None in secs else sum(secs)})
    return out


def format_plan(cells: list[dict], profile: Profile) -> str:
    lines = [f"plan ({profile.name} profile): examples per cell (male/female), the widest 95 % Wilson half-width "
             "they allow all/male/female, CPU-hours of the attack's settings (one thread: as measured in the results "
             "file where it has the cell, else projected from costs.json)",
             f"  {'model':16} {'attack':9} {'settings':>8} {'examples':>16} {'+/- all/male/female':>22} {'CPU-h':>7}"]
    for c in cells:
        hw = "/".join("-" if v is None else f"{v:.3f}".lstrip("0") for v in c["half_width"].values())
        ex = f"{c['examples']}" + ("" if c["male"] is None else f" ({c['male']}/{c['female']})")
        ex += "*" if c["whole_test_set"] else ""
        cost = "?" if c["cpu_seconds"] is None else f"{c['cpu_seconds'] / 3600:.2f}"
        lines.append(f"  {c['model']:16} {c['attack']:9} {c['settings']:8d} {ex:>16} {hw:>22} {cost:>7}")
    known = [c["cpu_seconds"] for c in cells if c["cpu_seconds"] is not None]
    lines.append(f"  * whole test set. Total {sum(known) / 3600:.2f} CPU-hours over {len({c['model'] for c in cells})} models "
                 f"and {sum(c['settings'] for c in cells)} cells"
                 + ("" if len(known) == len(cells) else f" (+ {len(cells) - len(known)} unmeasured attack x model pairs)")
                 + " (+ loading test sets and models)")
    return "\n".join(lines)


def bundle_meta(bundle) -> dict:
    c = bundle.config
    meta = {"model": bundle.name, "weights_sha": c.get("weights_sha"), "corpus": c["corpus"], "language": c.get("language"),
            "protocol": c.get("protocol", c["split"]["protocol"]),
            "defence": (c.get("defence") or {}).get("method"),
            "base_model": (c.get("defence") or {}).get("base", bundle.name)}
    if c.get("defence"):
        # defended bundles are not shipped (models/ holds the undefended ones only), so the rows
        # carry what the report needs about them: the recipe, how long training took, where
        # the bundle was, and its clean accuracy on the whole test set
        t = c.get("training", {})
        meta["defence_config"] = dict(c["defence"], trained_epochs=t.get("epochs"), trained_steps=t.get("steps"),
                                      training_seconds=t.get("seconds"), hardware=t.get("hardware"),
                                      folder=str(bundle.folder))
        meta["bundle_test_metrics"] = {k: v for k, v in c.get("metrics", {}).get("test", {}).items() if k != "confusion"}
    return meta


def run_grid(bundles, attacks: dict, results, profile: Profile = PROFILES["quick"],
             device: str = "auto", data_dir=None, log=sys.stderr, test_sets: dict | None = None,
             costs: dict | None = None, executor=None) -> list[dict]:
    """Run every (bundle, attack, setting) cell not yet in `results` (JSON lines), appending
    three rows per cell. test_sets: bundle name -> HeldOutSet, to skip loading from the corpora
    (tests). executor: who runs the batches (default `LocalExecutor(device)`, this process;
    `cluster.RayExecutor` for Ray tasks). Whoever runs them, this process alone writes: each
    batch file as its result arrives (a batch already there, from a retried or duplicated task
    or an earlier run, is kept and the new result dropped), and a cell's rows once, when its
    last batch is in. Returns all rows of the results file."""
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    if executor is None:
        executor = LocalExecutor(resolve_device(device))
    done_rows = read_rows(results)
    done = _done(done_rows, bundles)
    proj = Projection(done_rows, load_costs() if costs is None else costs)
    t_start = time.perf_counter()
    plan = plan_grid(bundles, attacks)
    fulls: dict[str, HeldOutSet] = dict(test_sets or {})
    orders: dict[str, np.ndarray] = {}
    finished: set[int] = set()

    def todo(i) -> bool:
        bundle, name, _, settings = plan[i]
        size = len(fulls[bundle.name]) if bundle.name in fulls else bundle_test_size(bundle)
        return i not in finished and done.get((bundle.name, name, setting_key(settings))) != examples_for(profile, name, size)

    def finish(cell: Cell) -> None:
        if cell.written:
            return
        cells, batches = combine([cell.parts[b] for b in range(cell.batches)])
        base = dict(bundle_meta(cell.bundle), profile=profile.name, attack=cell.name, kind=cell.cls.kind,
                    goal=cell.cls.goal, setting=cell.settings, setting_key=cell.key,
                    selection="whole test set" if len(cell.ts) == len(cell.total) else
                    f"first {len(cell.ts)} of a class- and gender-balanced order (seed {profile.seed})",
                    test_examples={"all": len(cell.total), **{g: int((cell.total.genders == g).sum()) for g in GENDERS}})
        rows = summarise(cells, cell.ts, base, batches)
        with results.open("a") as fh:
            fh.write("".join(json.dumps(r, default=_json_default) + "\n" for r in rows))
        cell.written = True
        cell.parts = {}
        finished.add(cell.index)
        done_rows.extend(rows)
        proj.add(cell.name, cell.key, cost_per_example(rows[0]), cell.bundle.name)
        left = [proj.estimate(nm, setting_key(st), examples_for(profile, nm, bundle_test_size(b) or len(cell.ts)), b.name)
                for j, (b, nm, _, st) in enumerate(plan) if todo(j)]
        known = [v for v in left if v is not None]
        eta = f", about {sum(known) / 60:.1f} min left" + ("" if len(known) == len(left) else " (+ unmeasured)") if left else ""
        a = rows[0]
        print(f"[{cell.index + 1}/{len(plan)}] {cell.bundle.name} {cell.name} {cell.key}: accuracy {a['accuracy']:.3f} "
              f"(clean {a['clean_accuracy']:.3f}, n={a['n']}), {sum(b['seconds'] for b in batches):.1f} s attacking; "
              f"elapsed {(time.perf_counter() - t_start) / 60:.1f} min{eta}", file=log, flush=True)

    def jobs():
        for i, (bundle, name, cls, settings) in enumerate(plan):
            if not todo(i):
                continue
            if bundle.name not in orders:
                if bundle.name not in fulls:
                    fulls[bundle.name] = bundle_test_set(bundle, data_dir)
                orders[bundle.name] = balanced_order(fulls[bundle.name], profile.seed)
                executor.prepare(bundle)
            total = fulls[bundle.name]
            ts = total.take(np.sort(orders[bundle.name][:examples_for(profile, name, len(total))]))
            key = setting_key(settings)
            cell = Cell(i, bundle, name, cls, settings, key, ts, total,
                        _cell_dir(results, bundle.name, name, key, ts.rows, bundle.config.get("weights_sha"),
                                  profile.batch), profile.batch)
            cell.folder.mkdir(parents=True, exist_ok=True)
            for b in range(cell.batches):
                if cell.path(b).is_file():
                    cell.parts[b] = load_batch(cell.path(b))
            if len(cell.parts) == cell.batches:  # every batch on disk from an earlier run
                finish(cell)
                continue
            for b in range(cell.batches):
                if b not in cell.parts:
                    yield BatchJob(cell, b)

    def accept(job: BatchJob, out: dict) -> None:
        cell = job.cell
        if cell.written or job.number in cell.parts:
            return  # a retried or duplicated task: the first result stands
        path = cell.path(job.number)
        if path.is_file():
            out = load_batch(path)
        else:
            save_batch(path, out)
        cell.parts[job.number] = out
        if cell.batches > 1:
            print(f"    {cell.bundle.name} {cell.name} {cell.key}: batch {job.number + 1}/{cell.batches} "
                  f"({len(cell.parts)} done)", file=log, flush=True)
        if len(cell.parts) == cell.batches:
            finish(cell)

    try:
        for job, out in executor.run(jobs()):
            accept(job, out)
    finally:
        executor.close()
    return read_rows(results)


def project_full(rows: list[dict]) -> dict:
    """Projected seconds of the full profile (whole test sets) from the cost per example
    measured in `rows` (`cost_per_example`), per model and in total."""
    per_model: dict[str, float] = {}
    for r in rows:
        if r["subset"] == "all" and r.get("defence") is None:
            per_model[r["model"]] = per_model.get(r["model"], 0.0) + cost_per_example(r) * r["test_examples"]["all"]
    return {"per_model_seconds": per_model, "total_seconds": sum(per_model.values())}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
