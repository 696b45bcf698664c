"""Re-measure the cost table behind every projection of the grid (ser_core/evaluation/costs.json):
`evaluate --dry-run` and the report's full-profile line both project a cell as its examples x
its queries per example x the attack's CPU seconds per query (`plan.unit_cost`).

    # after a speed-up: the attacks' CPU seconds per query, one torch and ONNX Runtime thread
    nice -n 10 .venv/bin/python benchmarks/grid_costs.py --units --write
    # after a new standard run: each model's queries per example, from its rows
    .venv/bin/python benchmarks/grid_costs.py --queries reports/results-standard.jsonl --write
    # both, and the waveform attacks' units from a waveform run's rows
    nice -n 10 .venv/bin/python benchmarks/grid_costs.py --units --queries reports/results-standard.jsonl \\
        --waveform-rows /tmp/wf/results-quick.jsonl --write

Queries per example are counted exactly and depend only on the algorithm, the weights and the
examples, so they come from a results file's rows (the bundles' current weights only). CPU
seconds per query are what the code and machine decide: measured here on the first examples of
emodb-paper's class- and gender-balanced test order, one setting per attack (UNIT_SETTINGS:
the study's, cut in iterations where the per-query work is the same), at the standard
profile's batch of 32, after one warm-up call, process CPU time (time.process_time). Waveform
attacks' units come from a waveform run's rows (CPU seconds / queries, over their clips). Prints
each unit and, for rows given, how far the unit model is from the CPU seconds they measured."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# per attack: (setting, examples); same per-query work as the grid's settings, fewer iterations
UNIT_SETTINGS = {
    "fgsm": ({"eps": 0.25}, 32),
    "bim": ({"eps": 0.25, "eps_step": 0.1, "max_iter": 20, "early_stop": False}, 32),
    "deepfool": ({"max_iter": 5, "nb_grads": 5, "overshoot": 1e-5, "range_scaled_step": True}, 32),
    "jsma": ({"theta": 1.0, "gamma": 1.0}, 16),
    "cw_l2": ({"binary_search_steps": 3, "max_iter": 10, "initial_const": 0.01, "learning_rate": 0.01}, 16),
    "cw_linf": (None, 16),  # None: the study's setting (paper_settings[0])
    "boundary": (None, 4),
    "pixel": ({"th": 10, "max_iter": 5}, 2),  # whole graph; by setting where the blocks split
}


def measure_units(model: str, attacks) -> dict:
    import torch
    torch.set_num_threads(1)
    from ser_core.attacks import get_attack
    from ser_core.data.held_out import balanced_order, bundle_test_set
    from ser_core.models.bundle import ModelBundle
    b = ModelBundle.load(model)
    b.configure_onnx(threads=1)
    ts = bundle_test_set(b)
    order = balanced_order(ts)
    from ser_core.attacks import registry
    from ser_core.evaluation.plan import setting_key

    def unit(name, setting, n, blockwise=True):
        x = ts.x[np.sort(order[:n])]
        attack = get_attack(name, b, **setting)
        attack.blockwise = blockwise  # Pixel's changed-blocks scoring (others ignore it)
        attack(x[:2])  # warm-up: session, torch model, first-call allocations
        t = time.process_time()
        res = attack(x)
        cpu = time.process_time() - t
        q = int(res.queries.sum())
        got = {"ms_per_query": round(1000 * cpu / q, 4),
               "basis": f"{cpu:.2f} CPU s / {q} queries: {n} examples of {model}, {json.dumps(setting)}"
                        + ("" if blockwise else ", whole graph") + f", one thread ({datetime.date.today()}, "
                        f"benchmarks/grid_costs.py)"}
        print(json.dumps({"attack": name, **got}), flush=True)
        return got
    out = {}
    for name in attacks:
        setting, n = UNIT_SETTINGS[name]
        if setting is None:
            setting = dict(registry()[name].paper_settings[0])
        out[name] = unit(name, setting, n, blockwise=False)
        if name == "pixel":  # per setting where the model's blocks split (blockwise.py): th decides the work
            from ser_core.attacks.features.blockwise import BlockScorer
            from export.evaluate import shipped_models
            split = [m for m in shipped_models() if BlockScorer.for_bundle(ModelBundle.load(m)) is not None]
            out[name]["by_setting"] = [
                {"setting_key": setting_key(s), "models": split,
                 **unit(name, {**s, "max_iter": UNIT_SETTINGS[name][0]["max_iter"]}, n)}
                for s in registry()[name].paper_settings] if split else []
    return out


def current(rows_path) -> list[dict]:
    from ser_core.evaluation.cells import read_rows
    from export.evaluate import _current_rows
    return _current_rows(read_rows(rows_path))[0]


def queries_from(rows: list[dict]) -> list[dict]:
    return [{"model": r["model"], "attack": r["attack"], "setting_key": r["setting_key"],
             "queries_per_example": round(r["queries"], 4), "n": r["n"]}
            for r in rows if r["subset"] == "all" and r.get("defence") is None and r.get("queries") is not None]


def waveform_units(rows: list[dict]) -> dict:
    out = {}
    for a in sorted({r["attack"] for r in rows if r.get("domain") == "waveform"}):
        rs = [r for r in rows if r["attack"] == a and r["subset"] == "all" and r.get("cpu_seconds")]
        cpu, q = sum(r["cpu_seconds"] for r in rs), sum(r["queries"] * r["n"] for r in rs)
        out[a] = {"ms_per_query": round(1000 * cpu / q, 4),
                  "basis": f"{cpu:.1f} CPU s / {q:.0f} queries over {sum(r['n'] for r in rs)} clips of "
                           f"{len({r['model'] for r in rs})} models' rows ({datetime.date.today()}, "
                           f"benchmarks/grid_costs.py --waveform-rows)"}
    return out


def check(rows: list[dict], units: dict) -> None:
    """How far queries x unit is from the CPU seconds the rows measured, per attack."""
    for a in sorted({r["attack"] for r in rows}):
        rs = [r for r in rows if r["attack"] == a and r["subset"] == "all" and r.get("cpu_seconds") and a in units]
        if rs:
            model = sum(r["queries"] * r["n"] * units[a]["ms_per_query"] / 1000 for r in rs)
            print(json.dumps({"attack": a, "rows_cpu_s": round(sum(r["cpu_seconds"] for r in rs), 1),
                              "queries_x_unit_s": round(model, 1),
                              "ratio": round(model / sum(r["cpu_seconds"] for r in rs), 3)}))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", action="store_true", help="measure the feature attacks' CPU seconds per query")
    ap.add_argument("--attacks", default=",".join(UNIT_SETTINGS))
    ap.add_argument("--model", default="emodb-paper")
    ap.add_argument("--queries", help="results file whose rows give each model's queries per example")
    ap.add_argument("--waveform-rows", help="results file of a waveform run: the waveform attacks' units")
    ap.add_argument("--write", action="store_true", help="update ser_core/evaluation/costs.json")
    args = ap.parse_args(argv)
    from ser_core.evaluation.plan import COSTS
    table = json.loads(COSTS.read_text())
    units = dict(table.get("unit_costs", {}))
    if args.units:
        units.update(measure_units(args.model, args.attacks.split(",")))
    if args.waveform_rows:
        wrows = current(args.waveform_rows)
        units.update(waveform_units(wrows))
        table["queries"] = [q for q in table.get("queries", []) if q["attack"] not in units or
                            q["attack"] not in {r["attack"] for r in wrows}] + queries_from(wrows)
    if args.queries:
        rows = current(args.queries)
        attacks = {r["attack"] for r in rows}
        table["queries"] = [q for q in table.get("queries", []) if q["attack"] not in attacks] + queries_from(rows)
        check(rows, units)
    table["unit_costs"] = dict(sorted(units.items()))
    table["queries"] = sorted(table.get("queries", []), key=lambda q: (q["model"], q["attack"], q["setting_key"]))
    if args.write:
        COSTS.write_text(json.dumps(table, indent=1) + "\n")
        print(f"wrote {COSTS}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
