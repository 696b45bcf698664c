"""One projection of the grid's cost: the dry run (`evaluate --dry-run`, plan.plan_cells) and the
report's full-profile line (plan.project_full) both price a cell as its examples x its queries
per example x the attack's CPU seconds per query (plan.unit_cost, ser_core/evaluation/costs.json).
The committed cost table's queries are the committed standard run's, so the two agree on every
model and attack; this fails when either side changes its rule or the table falls out of step
with the results (benchmarks/grid_costs.py rewrites it)."""
from __future__ import annotations

import pytest

from ser_core.evaluation import plan
from ser_core.evaluation.cells import bundle_weights, current_rows, read_rows

from tests.conftest import REPO


def test_unit_cost_is_queries_times_seconds_per_query():
    costs = {("unit", "pixel"): 0.002}
    assert plan.unit_cost({"attack": "pixel", "queries": 4000.0}, costs) == pytest.approx(8.0)
    assert plan.unit_cost({"attack": "fgsm", "queries": 1.0}, costs) is None  # no unit: the row's own cost
    row = dict(model="m", attack="pixel", setting_key='{"th": 1}', subset="all", n=5, defence=None, device="cpu",
               cpu_seconds=50.0, seconds=60.0, seconds_per_example=12.0, queries=4000.0, test_examples={"all": 100})
    assert plan.project_full([row], costs)["total_seconds"] == pytest.approx(800.0)  # 100 x 4000 x 2 ms
    assert plan.project_full([row], {})["total_seconds"] == pytest.approx(1000.0)  # 100 x 10 CPU s as measured
    # the dry run prices the same cell from the table's queries of that model, the same way
    table = {**costs, ("queries", "m", "pixel", '{"th": 1}'): 4000.0}
    assert plan.Projection((), table).estimate("pixel", '{"th": 1}', 100, "m") == pytest.approx(800.0)


def test_dry_run_and_report_project_the_full_profile_alike():
    from ser_core.models.bundle import ModelBundle
    bundles = [ModelBundle.load(n) for n in ("emodb", "emodb-paper", "emovo", "emovo-paper", "ravdess", "ravdess-paper")]
    rows = current_rows(read_rows(REPO / "reports" / "results-standard.jsonl"), bundle_weights(bundles))[0]
    rows = [r for r in rows if r.get("domain", "features") == "features"]
    costs = plan.load_costs()
    report = plan.project_full(rows, costs)
    attacks = plan.select_attacks(domain="features")
    cells = plan.plan_cells(bundles, attacks, plan.PROFILES["full"], costs)  # no full-profile rows: the table
    by_model: dict[str, float] = {}
    by_attack: dict[str, float] = {}
    for c in cells:
        assert c["cpu_seconds"] is not None, (c["model"], c["attack"])
        by_model[c["model"]] = by_model.get(c["model"], 0.0) + c["cpu_seconds"]
        by_attack[c["attack"]] = by_attack.get(c["attack"], 0.0) + c["cpu_seconds"]
    assert by_model == pytest.approx(report["per_model_seconds"], rel=1e-6)
    assert by_attack == pytest.approx(report["per_attack_seconds"], rel=1e-6)
    assert sum(by_model.values()) == pytest.approx(report["total_seconds"], rel=1e-6)
