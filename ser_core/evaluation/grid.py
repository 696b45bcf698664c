"""The evaluation grid: bundles x registered attacks x each attack's `paper_settings`, every
cell broken down into three subsets (all, male, female), one tidy row per subset.

A cell attacks the bundle's test examples (full profile) or the first n of a class- and
gender-balanced order of them (quick profile; n per attack family, see `PROFILES`: the study's
black-box and C&W attacks cost 10-1000 times FGSM), in batches, as the study ran ART over its
test set. Every row records how many examples stand behind it and their Wilson interval. Per-example outcomes of every finished batch
are kept in `<results>.cells/` so that an interrupted run resumes inside a cell, and rows
already in the results file are skipped. Accuracy under attack is measured against the true
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

from ..errors import ParameterError
from .examples import GENDERS, TestSet, balanced_order, test_set
from .stats import wilson

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
PROFILES = {
    "quick": Profile("quick", 20, {"bim": 4, "jsma": 10, "cw_l2": 4, "cw_linf": 10, "boundary": 4, "pixel": 2}),
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
        from ..attacks import REGISTRY as registry
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


def attack_batch(attack, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example outcomes of one attack call: what a row is summarised from. cpu_seconds:
    process CPU time of the call (all threads), shared equally, beside the wall seconds the
    attack reports (CPU time is what projects a run on an idle machine from a loaded one)."""
    cpu = time.process_time()
    res = attack(x)
    cpu = time.process_time() - cpu
    out = {"cpu_seconds": np.full(len(x), cpu / len(x)), "clean_pred": res.clean_pred, "adv_pred": res.adv_pred,
           "conf_before": res.clean_probs.max(1), "conf_after": res.adv_probs.max(1),
           "mean_abs": res.mean_abs, "l2": res.l2, "linf": res.linf,
           "queries": res.queries.astype(np.int64), "seconds": np.full(len(x), res.seconds / len(x))}
    if attack.kind == "white-box":
        out["torch_pred"] = torch_probabilities(attack.bundle, res.x_adv).argmax(1)
    return out


def summarise(cells: dict[str, np.ndarray], ts: TestSet, base: dict) -> list[dict]:
    """Three rows (all / male / female) from per-example outcomes."""
    rows = []
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


def _cell_dir(results: Path, model: str, attack: str, key: str, rows: np.ndarray, weights: str | None = None) -> Path:
    """Per-cell folder, named by the setting, the examples attacked and the model's weights (a
    different count, or a retrained model of the same name, must not reuse another's batches)."""
    h = hashlib.sha256(key.encode() + np.asarray(rows, np.int64).tobytes()
                       + (weights or "").encode()).hexdigest()[:10]
    return results.parent / (results.stem + ".cells") / model / f"{attack}-{h}"


def run_cell(attack, ts: TestSet, batch: int, folder: Path, log) -> dict[str, np.ndarray]:
    """Attack `ts` in batches; finished batches are stored in `folder` and reused on resume."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for b, i in enumerate(range(0, len(ts), batch)):
        f = folder / f"batch{b:05d}.npz"
        if f.is_file():
            parts.append(dict(np.load(f)))
            continue
        out = attack_batch(attack, ts.x[i:i + batch])
        tmp = folder / f"batch{b:05d}.tmp.npz"
        np.savez(tmp, **out)
        tmp.replace(f)
        parts.append(out)
        if len(ts) > batch:
            print(f"    batch {b + 1}/{-(-len(ts) // batch)}", file=log, flush=True)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


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


class Projection:
    """Seconds per example per (attack, setting): measured in this run's results file where a
    row exists (wall seconds, as this machine runs now), else the cost table, else the mean of
    the attack's other settings."""

    def __init__(self, rows=(), costs: dict | None = None):
        self.per_example: dict[tuple, float] = {k: v for k, v in (costs or {}).items() if isinstance(k, tuple)}
        self.overhead = (costs or {}).get("overhead_per_bundle", 0.0)
        for r in rows:
            if r["subset"] == "all" and r["n"]:
                self.per_example[(r["attack"], r["setting_key"])] = r["seconds_per_example"]

    def add(self, attack, key, spe):
        self.per_example[(attack, key)] = spe

    def estimate(self, attack, key, n) -> float | None:
        spe = self.per_example.get((attack, key))
        if spe is None:
            same = [v for (a, _), v in self.per_example.items() if a == attack]
            spe = float(np.mean(same)) if same else None
        return None if spe is None else spe * n


def _done(rows, bundles=()) -> dict:
    """(model, attack, setting_key) -> examples behind its rows, for cells with all three rows.
    Rows written for other weights than those of the same-named bundle in `bundles` (a
    retrained model) do not count; rows from before weights were recorded do."""
    weights = {b.name: b.config.get("weights_sha") for b in bundles}
    have = {}
    for r in rows:
        if r.get("weights_sha") not in (None, weights.get(r["model"], r.get("weights_sha"))):
            continue
        have.setdefault((r["model"], r["attack"], r["setting_key"]), {})[r["subset"]] = r["n"]
    return {k: v["all"] for k, v in have.items() if set(SUBSETS) <= set(v)}


def test_size(bundle) -> int | None:
    """Test examples the bundle records (checked against the corpus when the grid loads them)."""
    return bundle.config.get("split", {}).get("rows", {}).get("test")


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
        n = examples_for(profile, name, test_size(bundle))
        a = per_attack.setdefault(name, {"examples": {}, "seconds": 0.0, "cells": 0})
        a["examples"][bundle.name] = n
        if done.get((bundle.name, name, key)) == n:
            continue
        sec = proj.estimate(name, key, n if n is not None else 0)
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
             costs: dict | None = None) -> list[dict]:
    """Run every (bundle, attack, setting) cell not yet in `results` (JSON lines), appending
    three rows per cell. test_sets: bundle name -> TestSet, to skip loading from the corpora
    (tests). Returns all rows of the results file."""
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    done_rows = read_rows(results)
    done = _done(done_rows, bundles)
    proj = Projection(done_rows, load_costs() if costs is None else costs)
    t_start = time.perf_counter()
    plan = plan_grid(bundles, attacks)
    fulls: dict[str, TestSet] = dict(test_sets or {})
    orders: dict[str, np.ndarray] = {}
    for i, (bundle, name, cls, settings) in enumerate(plan):
        key = setting_key(settings)
        size = len(fulls[bundle.name]) if bundle.name in fulls else test_size(bundle)
        if done.get((bundle.name, name, key)) == examples_for(profile, name, size):
            continue
        if bundle.name not in orders:
            place(bundle, device)
            if bundle.name not in fulls:
                fulls[bundle.name] = test_set(bundle, data_dir)
            orders[bundle.name] = balanced_order(fulls[bundle.name], profile.seed)
        total = fulls[bundle.name]
        pick = orders[bundle.name][:examples_for(profile, name, len(total))]
        ts = total.take(np.sort(pick))
        attack = cls(bundle, **settings)
        t0 = time.perf_counter()
        cells = run_cell(attack, ts, profile.batch, _cell_dir(results, bundle.name, name, key, ts.rows,
                                                                 bundle.config.get("weights_sha")), log)
        base = dict(bundle_meta(bundle), profile=profile.name, attack=name, kind=cls.kind, goal=cls.goal,
                    setting=settings, setting_key=key, device=device,
                    selection="whole test set" if len(ts) == len(total) else
                    f"first {len(ts)} of a class- and gender-balanced order (seed {profile.seed})",
                    test_examples={"all": len(total), **{g: int((total.genders == g).sum()) for g in GENDERS}})
        rows = summarise(cells, ts, base)
        with results.open("a") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=_json_default) + "\n")
        done_rows += rows
        proj.add(name, key, rows[0]["seconds_per_example"])
        left = [proj.estimate(nm, setting_key(s), examples_for(profile, nm, test_size(b) or len(ts)))
                for b, nm, _, s in plan[i + 1:]]
        known = [v for v in left if v is not None]
        eta = f", about {sum(known) / 60:.1f} min left" + ("" if len(known) == len(left) else " (+ unmeasured)") if left else ""
        a = rows[0]
        print(f"[{i + 1}/{len(plan)}] {bundle.name} {name} {key}: accuracy {a['accuracy']:.3f} "
              f"(clean {a['clean_accuracy']:.3f}, n={a['n']}), {time.perf_counter() - t0:.1f} s; "
              f"elapsed {(time.perf_counter() - t_start) / 60:.1f} min{eta}", file=log, flush=True)
    return read_rows(results)


def project_full(rows: list[dict]) -> dict:
    """Projected seconds of the full profile (whole test sets) from the seconds per example
    measured in `rows`, per model and in total."""
    per_model: dict[str, float] = {}
    for r in rows:
        if r["subset"] == "all" and r.get("defence") is None:
            per_model[r["model"]] = per_model.get(r["model"], 0.0) + r["seconds_per_example"] * r["test_examples"]["all"]
    return {"per_model_seconds": per_model, "total_seconds": sum(per_model.values())}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
