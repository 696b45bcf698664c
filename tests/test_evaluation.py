"""The evaluation grid: its plan (profiles, projected cost), its cells (rows, resume), its
executors and its run, the intervals it reports, and the waveform part.

The grid is exercised with two small attacks defined here (a one-step gradient-sign attack
and a black-box random-sign attack, both real attacks on the real bundle) so that these tests
do not depend on the cost of the study's attacks; the registry's own attacks are run by
`python -m export evaluate`. The report's own tests are test_report.py; adversarial training's
test_defence.py."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ser_core.attacks.base import FixedBudgetAttack
from ser_core.attacks.features.base import FeatureAttack
from ser_core.attacks.params import Param
from ser_core.errors import ParameterError
from ser_core import stats
from ser_core.evaluation import cells, executors, plan, report
from ser_core.evaluation.run import run_grid
from ser_core.data.held_out import HeldOutSet, balanced_order, balanced_subset


class SignStep(FixedBudgetAttack, FeatureAttack):
    """One gradient-sign step away from the reference label (FGSM, Goodfellow et al. 2015)."""

    name = "signstep"
    kind = "white-box"
    params = {"eps": Param(0.5, float, 0.0, 10.0)}
    paper_settings = [{"eps": 0.1}, {"eps": 2.0}]

    def _attack_batch(self, x, objective, query, progress):
        y = objective.classes
        model = self.model()
        xt = torch.from_numpy(x).requires_grad_(True)
        F.cross_entropy(model(xt), torch.from_numpy(y).long()).backward()
        query.count += 1
        return self.clip(xt + self.settings["eps"] * xt.grad.sign()).detach().numpy(), {}


class RandomSign(FixedBudgetAttack, FeatureAttack):
    """Black-box: the best of `tries` random sign perturbations of size eps (lowest confidence
    in the reference label), scored through the query counter."""

    name = "randomsign"
    kind = "black-box"
    params = {"eps": Param(1.0, float, 0.0, 10.0), "tries": Param(2, int, 1, 10)}
    paper_settings = [{"eps": 1.0, "tries": 2}]
    batch_size = None

    def _attack_batch(self, x, objective, query, progress):
        y = objective.classes
        rng = np.random.default_rng(0)
        best, best_p = x.copy(), np.ones(len(x))
        for _ in range(self.settings["tries"]):
            cand = self.clip(x + self.settings["eps"] * rng.choice([-1.0, 1.0], x.shape)).astype(np.float32)
            p = query(cand, np.arange(len(x)))[np.arange(len(x)), y]
            better = p < best_p
            best[better], best_p[better] = cand[better], p[better]
        return best, {}


ATTACKS = {"signstep": SignStep, "randomsign": RandomSign}


@pytest.fixture(scope="module")
def four(test_examples):
    """4 real test-speaker examples, 2 male and 2 female."""
    x, labels, genders = test_examples
    idx = np.concatenate([np.flatnonzero(genders == g)[:2] for g in ("male", "female")])
    return HeldOutSet(x[idx], labels[idx], genders[idx], idx)


@pytest.fixture(scope="module")
def grid_run(bundle, four, tmp_path_factory):
    out = tmp_path_factory.mktemp("grid") / "results.jsonl"
    rows = run_grid([bundle], ATTACKS, out, plan.Profile("test", None, batch=3), device="cpu",
                    test_sets={bundle.name: four})
    return out, rows


def test_wilson_matches_known_values():
    # reference values: the roots p of Wilson's score equation (p - k/n)^2 = z^2 p (1 - p) / n,
    # z = 1.96, solved independently as a quadratic
    assert stats.wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert stats.wilson(5, 10) == pytest.approx((0.23659, 0.76341), abs=1e-5)
    assert stats.wilson(81, 263) == pytest.approx((0.25529, 0.36621), abs=1e-5)
    assert stats.wilson(10, 10)[1] == 1.0
    with pytest.raises(ParameterError):
        stats.wilson(3, 2)


def test_newcombe_difference_excludes_zero_only_for_a_real_gap():
    d, lo, hi = stats.newcombe_difference(56, 70, 48, 80)  # Newcombe 1998, table II example
    assert d == pytest.approx(0.2) and (lo, hi) == pytest.approx((0.0524, 0.3339), abs=1e-3)
    _, lo, hi = stats.newcombe_difference(5, 10, 5, 10)
    assert lo < 0 < hi


def test_wilson_size_is_the_fewest_examples_within_the_margin():
    assert stats.wilson_size(0.05) == 381 and stats.wilson_size(0.10) == 93
    for m in (0.05, 0.10, 0.2):
        n = stats.wilson_size(m)
        assert stats.wilson_half_width(n) <= m < stats.wilson_half_width(n - 1)
    # the widest interval is at half right: any other count of correct answers is narrower
    assert all((hi - lo) / 2 <= stats.wilson_half_width(93) + 1e-12 for lo, hi in (stats.wilson(k, 93) for k in range(94)))


def test_balanced_subset_takes_per_class_and_gender(four):
    ts = HeldOutSet(np.zeros((12, 1, 1)), np.array([0, 0, 0, 1, 1, 1] * 2),
                 np.array(["male"] * 6 + ["female"] * 6), np.arange(12))
    pick = balanced_subset(ts, 1, seed=0)
    assert len(pick) == 4
    assert sorted(zip(ts.labels[pick], ts.genders[pick])) == sorted(
        [(0, "male"), (1, "male"), (0, "female"), (1, "female")])
    assert (balanced_subset(ts, None) == np.arange(12)).all()


def test_balanced_order_prefixes_are_balanced():
    labels = np.repeat(np.arange(5), 6).tolist() * 2
    ts = HeldOutSet(np.zeros((60, 1, 1)), np.array(labels), np.array(["male"] * 30 + ["female"] * 30), np.arange(60))
    order = balanced_order(ts, seed=3)
    assert sorted(order) == list(range(60))  # a permutation: "all" keeps every example
    pairs = set(zip(ts.labels[order[:10]], ts.genders[order[:10]]))
    assert len(pairs) == 10  # the first ten: one per class and gender
    two = order[:2]
    assert set(ts.genders[two]) == {"male", "female"} and ts.labels[two[0]] != ts.labels[two[1]]
    for k in (4, 20):  # genders alternate, classes within one of each other
        assert (ts.genders[order[:k]] == "male").sum() == k // 2
        counts = np.bincount(ts.labels[order[:k]], minlength=5)
        assert counts.max() - counts.min() <= 1


def test_gender_split_is_what_the_balanced_order_takes():
    labels = np.array([0, 1, 2] * 5 + [0, 1] * 2)
    genders = np.array(["male"] * 4 + ["female"] * 15)
    ts = HeldOutSet(np.zeros((19, 1, 1)), labels, genders, np.arange(19))
    order = balanced_order(ts, seed=1)
    for n in range(1, 20):
        m = int((ts.genders[order[:n]] == "male").sum())
        assert plan.gender_split(n, 4, 15) == (m, n - m)
    assert plan.gender_split(None, 4, 15) == (4, 15)


def test_profile_counts_per_attack_family_and_projection(bundle, four, tmp_path):
    profile = plan.Profile("test", 4, {"signstep": 2}, batch=4)
    out = tmp_path / "results.jsonl"
    key = plan.setting_key(RandomSign.paper_settings[0])
    costs = {("signstep", plan.setting_key({"eps": 0.1})): 0.5, ("randomsign", key): 2.0, "overhead_per_bundle": 7.0}
    before = plan.project([bundle], ATTACKS, profile, costs=costs)
    # signstep eps 2.0 is not in the table: it takes the mean of signstep's known settings
    assert before["total_seconds"] == pytest.approx(7.0 + 2 * 0.5 + 2 * 0.5 + 4 * 2.0)
    assert before["per_attack"]["signstep"]["examples"] == {bundle.name: 2}
    rows = run_grid([bundle], ATTACKS, out, profile, device="cpu", test_sets={bundle.name: four}, costs=costs)
    n = {(r["attack"], r["subset"]): r["n"] for r in rows}
    assert n[("randomsign", "all")] == 4 and n[("signstep", "all")] == 2
    assert n[("signstep", "male")] == n[("signstep", "female")] == 1
    assert all(r["cpu_seconds"] > 0 for r in rows if r["subset"] == "all")
    assert plan.project([bundle], ATTACKS, profile, rows, costs)["total_seconds"] == 0  # all done
    table = plan.save_costs(rows, tmp_path / "costs.json", overhead_per_bundle=3.0)
    again = plan.load_costs(tmp_path / "costs.json")
    assert again["overhead_per_bundle"] == 3.0 and len(table["cells"]) == 3
    r = next(r for r in rows if r["attack"] == "randomsign" and r["subset"] == "all")
    assert again[("randomsign", key)] == pytest.approx(r["cpu_seconds"] / 4, abs=1e-4)
    # another count for one attack redoes only its cells; its new rows replace the old ones
    more = plan.Profile("test", 4, {"signstep": 4}, batch=4)
    rows = run_grid([bundle], ATTACKS, out, more, device="cpu", test_sets={bundle.name: four}, costs=costs)
    assert len(rows) == len(cells.read_rows(out)) == 9
    assert {r["n"] for r in rows if r["subset"] == "all"} == {4}


def test_standard_profile_follows_the_wilson_rule_and_the_cost_table():
    from ser_core.models.bundle import ModelBundle
    p = plan.PROFILES["standard"]
    paper = [ModelBundle.load(f"{c}-paper") for c in ("emodb", "emovo", "ravdess")]
    examples = sum(plan.bundle_test_size(b) for b in paper)
    costs = plan.load_costs()
    proj = plan.Projection((), costs)
    for name, cls in plan.select_attacks(domain="features").items():  # the study's attacks the grid runs
        whole_hours = sum(proj.estimate(name, plan.setting_key(s), examples) for s in plan.settings_of(cls)) / 3600
        n = p.count(name)
        if n is None:  # whole test sets: cheap by the cost table
            assert name in plan.STANDARD_WHOLE and whole_hours <= plan.STANDARD_WHOLE_CPU_HOURS
            assert min(plan.bundle_test_size(b) for b in paper) >= stats.wilson_size(plan.STANDARD_MARGIN)
        else:
            margin = plan.STANDARD_MARGINS.get(name, plan.STANDARD_MARGIN)
            assert whole_hours > plan.STANDARD_WHOLE_CPU_HOURS, name
            assert stats.wilson_half_width(n) <= margin < stats.wilson_half_width(n - 1), name
    assert {a: p.count(a) for a in ("cw_l2", "pixel", "boundary", "bim", "jsma")} == {
        "cw_l2": 93, "pixel": 93, "boundary": 93, "bim": 381, "jsma": 381}
    # waveform cells (held-out clips, fewer than the chunks): a 10-point margin, like the costly attacks
    from ser_core.attacks import registry
    assert set(plan.WAVEFORM_ATTACKS) == set(registry("waveform"))
    for name in plan.WAVEFORM_ATTACKS:
        n = p.count(name)
        assert stats.wilson_half_width(n) <= plan.STANDARD_WAVEFORM_MARGIN < stats.wilson_half_width(n - 1)
        assert plan.PROFILES["quick"].count(name) == plan.WAVEFORM_QUICK


def test_dry_run_plan_gives_counts_intervals_and_cpu_hours(bundle):
    from ser_core.attacks import registry
    costs = {("fgsm", plan.setting_key(s)): 0.5 for s in registry()["fgsm"].paper_settings}
    planned = plan.plan_cells([bundle], {"fgsm": registry()["fgsm"], "pixel": registry()["pixel"]},
                            plan.PROFILES["standard"], costs)
    fgsm, pixel = planned
    size = plan.bundle_test_size(bundle)
    assert fgsm["examples"] == size and fgsm["whole_test_set"]  # FGSM: the whole (small) test set
    assert fgsm["male"] + fgsm["female"] == size and fgsm["cpu_seconds"] == pytest.approx(5 * 0.5 * size)
    assert pixel["examples"] == min(93, size) and pixel["cpu_seconds"] is None  # pixel not in this cost table
    assert fgsm["half_width"]["all"] == pytest.approx(stats.wilson_half_width(size), abs=1e-4)
    text = plan.format_plan(planned, plan.PROFILES["standard"])
    assert f"{size} (" in text and "+ 1 unmeasured" in text


def test_dry_run_plan_takes_each_models_measured_cost_before_the_cost_table(bundle):
    from ser_core.attacks import registry
    fgsm = registry()["fgsm"]
    keys = [plan.setting_key(s) for s in fgsm.paper_settings]
    costs = {("fgsm", k): 0.5 for k in keys}
    sha = bundle.config.get("weights_sha")
    assert sha  # the fixture bundle records its weights

    def row(model, key, cpu, weights):
        return dict(model=model, attack="fgsm", setting_key=key, subset="all", n=4, defence=None, device="cpu",
                    cpu_seconds=cpu, seconds=cpu, seconds_per_example=cpu / 4, weights_sha=weights)
    size = plan.bundle_test_size(bundle)
    rows = [row(bundle.name, keys[0], 8.0, sha),            # 2 CPU s an example on this model's weights
            row(bundle.name, keys[1], 400.0, "retrained"),  # measured on weights it no longer has
            row("other", keys[2], 40.0, "x")]               # 10 s an example, on another model
    (cell,) = plan.plan_cells([bundle], {"fgsm": fgsm}, plan.PROFILES["standard"], costs, rows=rows)
    # setting 0 as measured on this model; setting 2 from the other model's row; the stale row
    # does not count, so setting 1 and the other two come from the cost table
    assert cell["cpu_seconds"] == pytest.approx((2.0 + 10.0 + 3 * 0.5) * size)
    (plain,) = plan.plan_cells([bundle], {"fgsm": fgsm}, plan.PROFILES["standard"], costs)
    assert plain["cpu_seconds"] == pytest.approx(5 * 0.5 * size)


def test_projection_counts_cpu_time_not_the_wall_time_of_a_busy_machine():
    # a CPU cell run beside other jobs: 10 CPU seconds over 5 examples, 500 s of wall time
    row = dict(model="m", attack="fgsm", setting_key='{"eps": 0.5}', subset="all", n=5, defence=None,
               device="cpu", cpu_seconds=10.0, seconds=500.0, seconds_per_example=100.0,
               test_examples={"all": 40})
    proj = plan.Projection([row])
    assert proj.estimate("fgsm", '{"eps": 0.5}', 7) == pytest.approx(14.0)
    assert plan.project_full([row])["total_seconds"] == pytest.approx(80.0)
    # on a GPU the CPU time is not what the cell cost: its wall time is
    gpu = dict(row, device="cuda")
    assert plan.Projection([gpu]).estimate("fgsm", '{"eps": 0.5}', 7) == pytest.approx(700.0)
    assert plan.project_full([gpu])["total_seconds"] == pytest.approx(4000.0)


def test_grid_writes_one_row_per_cell_and_subset(grid_run, bundle):
    out, rows = grid_run
    written = cells.read_rows(out)
    assert len(written) == len(rows) == 1 * (2 + 1) * 3  # bundles x settings of both attacks x subsets
    assert {(r["attack"], r["subset"]) for r in written} == {
        (a, s) for a in ATTACKS for s in ("all", "male", "female")}
    for r in written:
        assert r["model"] == bundle.name and r["protocol"] == bundle.config["protocol"]
        assert r["n"] == (4 if r["subset"] == "all" else 2)
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["clean_accuracy"] <= 1
        assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
        assert 0 <= r["confidence_after"] <= 1 and 0 < r["confidence_before"] <= 1
        assert r["linf"] <= bundle.clip_range[1] - bundle.clip_range[0]
        assert r["mean_abs"] <= r["linf"] + 1e-6 and r["seconds"] > 0


def test_grid_redoes_the_cells_of_a_retrained_model_of_the_same_name(grid_run, bundle, four, tmp_path):
    out = tmp_path / "results.jsonl"
    out.write_text(grid_run[0].read_text())
    assert {r["weights_sha"] for r in cells.read_rows(out)} == {bundle.config["weights_sha"]}

    class Counting(SignStep):
        calls = 0

        def __call__(self, *a, **k):
            Counting.calls += 1
            return super().__call__(*a, **k)

    attacks, profile = {"signstep": Counting, "randomsign": RandomSign}, plan.Profile("test", 4, batch=3)
    run_grid([bundle], attacks, out, profile, device="cpu", test_sets={bundle.name: four})
    assert Counting.calls == 0  # same weights: nothing redone
    retrained = copy.copy(bundle)
    retrained.config = dict(bundle.config, weights_sha="0123456789abcdef")
    done = cells.read_rows(out)
    assert plan.project([bundle], attacks, profile, done, {})["total_seconds"] == 0
    assert plan.project([retrained], attacks, profile, done, {})["total_seconds"] > 0
    rows = run_grid([retrained], attacks, out, profile, device="cpu", test_sets={bundle.name: four})
    assert Counting.calls == 4  # 2 signstep settings x 2 batches of the 4 examples (batch 3)
    assert len(rows) == 9 and {r["weights_sha"] for r in rows} == {"0123456789abcdef"}


def test_grid_accuracy_is_consistent_with_flips(grid_run):
    for r in cells.read_rows(grid_run[0]):
        n = r["n"]
        kept = r["clean_accuracy"] - r["success_rate"]  # lowest possible: every flip hit a correct one
        assert r["accuracy"] >= kept - 1e-9
        assert r["accuracy"] <= r["clean_accuracy"] + r["success_rate"] + 1e-9
        assert r["correct"] == round(r["accuracy"] * n)


def test_grid_measures_what_the_attack_did(grid_run):
    rows = {(r["attack"], r["setting"].get("eps"), r["subset"]): r for r in cells.read_rows(grid_run[0])}
    small, large = rows[("signstep", 0.1, "all")], rows[("signstep", 2.0, "all")]
    assert large["linf"] == pytest.approx(2.0, abs=1e-4)  # the budget is spent (up to clipping)
    assert small["mean_abs"] < large["mean_abs"]
    assert small["queries"] == 1 and rows[("randomsign", 1.0, "all")]["queries"] == 2
    # white-box rows carry the torch -> ONNX transfer figures; black-box rows do not
    assert 0 <= large["torch_onnx_agreement"] <= 1 and "torch_accuracy" in large
    assert "torch_onnx_agreement" not in rows[("randomsign", 1.0, "all")]


def test_summarise_counts_wrong_decisions_the_attack_moved_onto_the_label():
    labels = np.array([0, 1, 2, 0, 1, 2])
    ts = HeldOutSet(np.zeros((6, 1, 1)), labels, np.array(["male"] * 3 + ["female"] * 3), np.arange(6))
    ones = np.ones(6)
    outcomes = {"clean_pred": np.array([0, 2, 1, 0, 0, 2]),   # wrong: examples 1, 2, 4
                "adv_pred": np.array([1, 1, 2, 0, 1, 0]),     # right after: 1, 2 (male), 3, 4 (female)
                "mean_abs": ones, "l2": ones, "linf": ones, "conf_before": ones, "conf_after": ones,
                "queries": ones, "seconds": ones}
    rows = {r["subset"]: r for r in cells.summarise(outcomes, ts, {})}
    assert (rows["all"]["restored"], rows["male"]["restored"], rows["female"]["restored"]) == (3, 2, 1)
    assert (rows["all"]["correct"], rows["all"]["clean_correct"]) == (4, 3)


def test_grid_resumes_without_redoing_rows(grid_run, bundle, four):
    out, rows = grid_run
    before = out.read_text()
    lines = before.splitlines()
    out.write_text("\n".join(lines[:-3]) + "\n")  # the last cell "was interrupted"

    class Exploding(SignStep):
        calls = 0

        def __call__(self, *a, **k):
            Exploding.calls += 1
            return super().__call__(*a, **k)

    again = run_grid([bundle], {"signstep": Exploding, "randomsign": RandomSign}, out,
                     plan.Profile("test", None, batch=3), device="cpu", test_sets={bundle.name: four})
    assert Exploding.calls == 0  # every signstep row was there already
    assert len(again) == len(rows) and len(out.read_text().splitlines()) == len(lines)


class _Counting(SignStep):
    calls = 0

    def __call__(self, *a, **k):
        type(self).calls += 1
        return super().__call__(*a, **k)


def test_resuming_with_another_batch_size_does_not_read_the_old_batches(bundle, four, tmp_path):
    out = tmp_path / "results.jsonl"
    attacks = {"signstep": _Counting}
    run_grid([bundle], attacks, out, plan.Profile("test", None, batch=3), device="cpu", test_sets={bundle.name: four})
    assert _Counting.calls == 2 * 2  # 2 settings x 2 batches (3 + 1 examples)
    out.unlink()  # rows lost, batch files kept: the same batch size reads them back
    run_grid([bundle], attacks, out, plan.Profile("test", None, batch=3), device="cpu", test_sets={bundle.name: four})
    assert _Counting.calls == 4
    out.unlink()  # another batch size must attack again, not read batches cut at other examples
    rows = run_grid([bundle], attacks, out, plan.Profile("test", None, batch=2), device="cpu",
                    test_sets={bundle.name: four})
    assert _Counting.calls == 4 + 2 * 2
    for r in rows:  # device and CPU time per batch
        assert [b["examples"] for b in r["batches"]] == [2, 2]
        assert all(b["device"] == "cpu" and b["executor"] == "local" and b["cpu_seconds"] > 0 for b in r["batches"])
        if r["subset"] == "all":
            assert r["cpu_seconds"] == pytest.approx(sum(b["cpu_seconds"] for b in r["batches"]))
    assert len(list((tmp_path / "results.cells" / bundle.name).iterdir())) == 2 * 2  # 2 settings x 2 batch sizes


class _Twice(executors.LocalExecutor):
    """Hands every batch back twice, the second time with other outcomes (a retried task that
    had in fact finished, or a duplicate)."""

    def run(self, jobs):
        for job, out in super().run(jobs):
            yield job, out
            yield job, dict(out, adv_pred=(out["adv_pred"] + 1) % len(job.cell.bundle.labels))


def test_a_batch_result_that_arrives_twice_is_written_once(grid_run, bundle, four, tmp_path):
    out = tmp_path / "results.jsonl"
    rows = run_grid([bundle], ATTACKS, out, plan.Profile("test", None, batch=3), test_sets={bundle.name: four},
                    executor=_Twice("cpu"))
    lines = out.read_text().splitlines()
    assert len(lines) == len({cells.row_key(json.loads(l)) for l in lines}) == 9
    strip = lambda rs: {cells.row_key(r): {k: v for k, v in r.items() if k not in cells.TIMING_FIELDS} for r in rs}
    assert strip(rows) == strip(grid_run[1])  # the first result of each batch stands


def test_report_leaves_out_rows_of_weights_a_model_no_longer_has():
    """A retrained model: its rows measured on the earlier weights leave the report (counted per
    model), its rows on the weights it has now and rows of other or unhashed models stay."""
    rows = [{"model": "emovo", "weights_sha": "old", "attack": "fgsm"},
            {"model": "emovo", "weights_sha": "old", "attack": "bim"},
            {"model": "emovo", "weights_sha": "new", "attack": "fgsm"},
            {"model": "emodb", "weights_sha": "a", "attack": "fgsm"},
            {"model": "emodb", "attack": "bim"},
            {"model": "mine", "weights_sha": "x", "attack": "fgsm"}]
    kept, left = cells.current_rows(rows, {"emovo": "new", "emodb": "a"})
    assert left == {"emovo": 2}
    assert [(r["model"], r["attack"]) for r in kept] == [("emovo", "fgsm"), ("emodb", "fgsm"),
                                                          ("emodb", "bim"), ("mine", "fgsm")]


def test_report_renders_the_paper_comparison(grid_run, tmp_path):
    rows = cells.read_rows(grid_run[0])
    # the same rows, presented as a paper-protocol run of "fgsm" at the study's eps 0.25
    paper = [dict(r, protocol="paper", model="emodb-paper", attack="fgsm", setting={"eps": 0.25},
                  setting_key='{"eps": 0.25}') for r in rows
             if r["attack"] == "signstep" and r["setting"]["eps"] == 2.0]
    text = report.write_report(rows + paper, tmp_path, profile="test")
    assert (tmp_path / "README.md").read_text() == text
    assert "Accuracy under attack" in text and "FGSM 0.25" in text
    line = next(l for l in text.splitlines() if l.startswith("| FGSM 0.25"))
    assert ".171 / .114 / .205" in line  # the study's EmoDB cell beside ours
    assert any(p.suffix == ".png" for p in tmp_path.rglob("*"))
    cpu_h = sum(r["cpu_seconds"] for r in rows + paper if r["subset"] == "all") / 3600
    assert cpu_h > 0 and f"({cpu_h:.2f} CPU-hours" in text  # the cost as run, in CPU time


@pytest.mark.slow  # waveform attacks on whole clips, and `export predict` on each
def test_waveform_attacks_run_as_grid_cells_counting_only_verified_flips(bundle, data_dir, tmp_path, capsys):
    from export.cli import main as cli
    from ser_core.attacks import attack_class
    from ser_core.attacks.clip import attack_clip
    from ser_core.data.corpora import read_corpus
    from ser_core.data.held_out import bundle_test_clips
    quick = {"pgd": [{"snr_db": 20.0, "steps": 2, "step_fraction": 0.5}], "cw": [{"steps": 2, "binary_steps": 1}]}
    attacks = {n: type(f"Quick{n}", (attack_class(n),), {"grid_settings": s}) for n, s in quick.items()}
    profile = plan.Profile("test", 2)
    out = tmp_path / "results-test.jsonl"
    rows = run_grid([bundle], attacks, out, profile, data_dir=data_dir)
    assert [(r["attack"], r["domain"], r["subset"], r["n"]) for r in rows] == [
        (a, "waveform", s, n) for a in ("pgd", "cw") for s, n in (("all", 2), ("male", 1), ("female", 1))]
    # the cell's clips: the first two of the balanced order of every held-out clip (one per gender)
    ts = bundle_test_clips(bundle, data_dir)
    assert sorted(ts.genders[np.sort(balanced_order(ts, 0)[:2])]) == ["female", "male"]
    clips = ts.take(np.sort(balanced_order(ts, 0)[:2]))
    utterances = read_corpus(bundle.config["corpus"], Path(data_dir) / bundle.config["corpus"],
                             tuple(bundle.labels)).utterances
    paths = [utterances[i].path for i in clips.rows]
    for r in (r for r in rows if r["subset"] == "all"):
        # the same attack on the same clips, one at a time from their files: the same verified flips,
        # and the decisions are what `export predict` reads from the clean file and the written WAV
        flips = []
        for path in paths:
            again = attack_clip(bundle, path, r["attack"], r["setting"], out_dir=tmp_path / "again")
            capsys.readouterr()
            assert cli(["predict", "--model", str(bundle.folder), str(path), str(again.wav_path)]) == 0
            printed = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
            assert printed == [again.label_before, again.label_after]
            flips.append(again.flipped)
        assert r["success_rate"] == np.mean(flips)
        if r["attack"] == "pgd" and r["median_snr_db"] is not None:
            assert r["median_snr_db"] >= 20.0 - 1e-6  # the budget holds on the written 16-bit clip
    assert run_grid([bundle], attacks, out, profile, data_dir=data_dir) == rows  # resumed: nothing redone
    text = report.waveform_lines([r for r in rows if r["domain"] == "waveform"])
    assert sum(line.startswith("| EmoDB | pgd ") for line in text) == 3
    assert any(line.startswith("| EmoDB | cw ") and "| all | 2 |" in line for line in text)
