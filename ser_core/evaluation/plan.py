"""What the grid runs and what it will cost: bundles x registered attacks (both domains) x each
attack's settings (the study's `paper_settings`; a waveform attack's `grid_settings`), the
examples each cell attacks (a profile), and the projected time from the measured cost table
(costs.json) or the results file itself (`--dry-run`).

A cell attacks the bundle's test examples of the attack's domain (`data.held_out.TEST_SETS`:
feature attacks the test chunks, as the study ran ART over its test set; waveform attacks the
whole clips of the held-out speakers, so only speaker-protocol bundles have waveform cells), all
of them (full profile) or the first n of a class- and gender-balanced order of them (quick and
standard profiles; n per attack family, see `PROFILES`: the study's black-box and C&W attacks
cost 10-1000 times FGSM)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_core.errors import ParameterError
from ser_core.evaluation.cells import bundle_weights, current_rows, done_cells
from ser_core.stats import wilson_half_width, wilson_size


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
# Waveform attacks (clips of held-out speakers, verified on the written WAV): quick, three clips
# per gender (what the separate waveform part ran before it became cells); standard, a 10-point
# margin like the costly feature attacks (capped by the clips there are); full, every clip.
WAVEFORM_ATTACKS = ("apgd", "cw", "pgd", "square")
WAVEFORM_QUICK = 6
STANDARD_WAVEFORM_MARGIN = 0.10
STANDARD_MARGIN = 0.05
STANDARD_WHOLE = ("fgsm", "deepfool", "cw_linf")
STANDARD_WHOLE_CPU_HOURS = 1.0
PROFILES = {
    "quick": Profile("quick", 20, {"bim": 4, "jsma": 10, "cw_l2": 4, "cw_linf": 10, "boundary": 4, "pixel": 2,
                                   **dict.fromkeys(WAVEFORM_ATTACKS, WAVEFORM_QUICK)}),
    "standard": Profile("standard", wilson_size(STANDARD_MARGIN),
                        {**{a: wilson_size(m) for a, m in STANDARD_MARGINS.items()},
                         **dict.fromkeys(STANDARD_WHOLE, None),
                         **dict.fromkeys(WAVEFORM_ATTACKS, wilson_size(STANDARD_WAVEFORM_MARGIN))}, batch=32),
    "full": Profile("full", None, batch=128),
}


def select_attacks(names=None, registry=None, domain: str | None = None) -> dict:
    """name -> attack class, in run order (the study's feature attacks first, white-box before
    black-box, then the waveform attacks); domain: only that domain's, when no names are given."""
    if registry is None:
        from ser_core.attacks import registry as all_attacks
        registry = all_attacks(None if names else domain)
    names = list(names) if names else sorted(registry, key=lambda n: (registry[n].domain != "features",
                                                                      registry[n].kind != "white-box", n))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ParameterError(f"unknown attacks {unknown} (accepted: {', '.join(sorted(registry)) or 'none registered'})")
    return {n: registry[n] for n in names}


def settings_of(cls) -> list[dict]:
    """The study's settings of an attack, else its grid settings, else its defaults."""
    return [dict(s) for s in (cls.paper_settings or getattr(cls, "grid_settings", []))] or [{}]


def setting_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=float)


def bundle_test_size(bundle, domain: str = "features") -> int | None:
    """Test examples of a domain the bundle records (checked against the corpus when the grid
    loads them): test chunks, or the held-out speakers' clips."""
    from ser_core.data.held_out import TEST_SIZES
    return TEST_SIZES[domain](bundle)[0]


def examples_for(profile: Profile, attack: str, size: int | None) -> int | None:
    n = profile.count(attack)
    return size if n is None else (n if size is None else min(n, size))


def plan_grid(bundles, attacks: dict) -> list[tuple]:
    """(bundle, attack name, attack class, setting) of every cell, in run order; a bundle gets an
    attack's cells when it has test examples of the attack's domain."""
    from ser_core.data.held_out import HAS_TEST_SET
    return [(b, name, cls, s) for b in bundles for name, cls in attacks.items()
            if HAS_TEST_SET[cls.domain](b) for s in settings_of(cls)]


# --- costs ---------------------------------------------------------------------------------
COSTS = Path(__file__).with_name("costs.json")


def load_costs(path=COSTS) -> dict:
    """The cost table (costs.json) as one dict: (attack, setting_key) -> seconds per example
    (cells measured or estimated as a whole), ("unit", attack) -> CPU seconds per query (one
    thread, benchmarks/grid_costs.py), ("queries", model, attack, setting_key) -> queries per
    example measured on that model (a results file's rows), and "overhead_per_bundle"."""
    path = Path(path)
    if not path.is_file():
        return {}
    table = json.loads(path.read_text())
    costs = {(r["attack"], r["setting_key"]): r["seconds_per_example"] for r in table["cells"]}
    for a, u in table.get("unit_costs", {}).items():
        costs[("unit", a)] = u["ms_per_query"] / 1000
        for v in u.get("by_setting", []):  # a setting's own unit on some models (Pixel's changed blocks)
            for m in v["models"]:
                costs[("unit", a, v["setting_key"], m)] = v["ms_per_query"] / 1000
    costs.update({("queries", q["model"], q["attack"], q["setting_key"]): q["queries_per_example"]
                  for q in table.get("queries", [])})
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


def unit_cost(row: dict, costs: dict) -> float | None:
    """One projection for every caller: an example of a row's cell costs its queries per example
    (counted exactly, a property of the algorithm, the model and the data) times the attack's
    CPU seconds per query (costs.json "unit_costs": the attack's, or its setting's on that model
    where they differ, as Pixel's with the model's blocks split; re-measured by
    benchmarks/grid_costs.py when the code gets faster); None where the table has no unit."""
    unit = costs.get(("unit", row["attack"], row.get("setting_key"), row.get("model")), costs.get(("unit", row["attack"])))
    return None if unit is None or row.get("queries") is None else row["queries"] * unit


class Projection:
    """Seconds per example per (attack, setting): measured on the same model in this run's
    results file where a row exists (`cost_per_example`: CPU seconds on a CPU, as the cost table
    counts; an attack's cost per example differs between models: Pixel took 12-14 CPU s an
    example on the paper bundles and a fraction of that on the speaker ones), else that model's
    queries per example in the cost table times the attack's seconds per query (`unit_cost`,
    what the report's full-profile projection uses), else measured on another model, else the
    cost table's seconds per example, else the mean of the attack's other settings."""

    def __init__(self, rows=(), costs: dict | None = None):
        costs = costs or {}
        self.per_example: dict[tuple, float] = {k: v for k, v in costs.items() if isinstance(k, tuple) and len(k) == 2
                                                and k[0] != "unit"}
        self.per_model: dict[tuple, float] = {}
        self.overhead = costs.get("overhead_per_bundle", 0.0)
        for (_, model, attack, key), q in ((k, v) for k, v in costs.items() if isinstance(k, tuple) and k[0] == "queries"):
            spe = unit_cost({"model": model, "attack": attack, "setting_key": key, "queries": q}, costs)
            if spe is not None:
                self.per_model.setdefault((model, attack, key), spe)
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


# --- projections and the dry-run plan -------------------------------------------------------
def project(bundles, attacks: dict, profile: Profile, rows=(), costs: dict | None = None) -> dict:
    """Projected seconds of the cells not yet in `rows`: per attack (with the examples each
    attacks per bundle), per bundle, and in total (including a per-bundle overhead: loading
    the test set and the model)."""
    proj = Projection(rows, load_costs() if costs is None else costs)
    done = done_cells(rows, bundles)
    per_attack: dict[str, dict] = {}
    per_bundle: dict[str, float] = {}
    unknown = []
    for bundle, name, cls, settings in plan_grid(bundles, attacks):
        key = setting_key(settings)
        n = examples_for(profile, name, bundle_test_size(bundle, cls.domain))
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
    from ser_core.data.held_out import HAS_TEST_SET
    proj = Projection(current_rows(list(rows), bundle_weights(bundles))[0], load_costs() if costs is None else costs)
    out = []
    from ser_core.data.held_out import TEST_SIZES
    for b in bundles:
        for name, cls in attacks.items():
            if not HAS_TEST_SET[cls.domain](b):
                continue
            size, n_male, n_female = TEST_SIZES[cls.domain](b)
            n = examples_for(profile, name, size)
            m, f = gender_split(n, n_male, n_female)
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


def project_full(rows: list[dict], costs: dict | None = None) -> dict:
    """Projected CPU seconds of the full profile (whole test sets) from the cells in `rows`:
    each cell's test examples times its queries per example measured in the rows times the
    attack's seconds per query (`unit_cost`; the cost table's, `load_costs()` when None), or the
    row's own cost per example (`cost_per_example`) for an attack without a unit cost. Per model,
    per attack and in total. `--dry-run --profile full` projects the same cells the same way from
    costs.json's queries (written from these rows by benchmarks/grid_costs.py), so the two agree
    (tests/test_projection.py)."""
    costs = load_costs() if costs is None else costs
    per_model: dict[str, float] = {}
    per_attack: dict[str, float] = {}
    for r in rows:
        if r["subset"] == "all" and r.get("defence") is None:
            spe = unit_cost(r, costs)
            sec = (cost_per_example(r) if spe is None else spe) * r["test_examples"]["all"]
            per_model[r["model"]] = per_model.get(r["model"], 0.0) + sec
            per_attack[r["attack"]] = per_attack.get(r["attack"], 0.0) + sec
    return {"per_model_seconds": per_model, "per_attack_seconds": per_attack, "total_seconds": sum(per_model.values())}
