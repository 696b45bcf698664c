"""The evaluation grid, its statistics, its report and the adversarial-training defence.

The grid is exercised with two small attacks defined here (a one-step gradient-sign attack
and a black-box random-sign attack, both real attacks on the real bundle) so that these tests
do not depend on the cost of the study's attacks; the registry's own attacks are run by
`python -m export evaluate`."""
from __future__ import annotations

import copy
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ser_core.attacks.base import FeatureAttack, Param
from ser_core.errors import ParameterError
from ser_core import stats
from ser_core.evaluation import grid, report
from ser_core.data.held_out import HeldOutSet, balanced_order, balanced_subset


class SignStep(FeatureAttack):
    """One gradient-sign step away from the reference label (FGSM, Goodfellow et al. 2015)."""

    name = "signstep"
    kind = "white-box"
    params = {"eps": Param(0.5, float, 0.0, 10.0)}
    paper_settings = [{"eps": 0.1}, {"eps": 2.0}]

    def _run(self, x, y, query, progress):
        model = self.model()
        xt = torch.from_numpy(x).requires_grad_(True)
        F.cross_entropy(model(xt), torch.from_numpy(y).long()).backward()
        query.count += 1
        return self.clip(xt + self.settings["eps"] * xt.grad.sign()).detach().numpy(), {}


class RandomSign(FeatureAttack):
    """Black-box: the best of `tries` random sign perturbations of size eps (lowest confidence
    in the reference label), scored through the query counter."""

    name = "randomsign"
    kind = "black-box"
    params = {"eps": Param(1.0, float, 0.0, 10.0), "tries": Param(2, int, 1, 10)}
    paper_settings = [{"eps": 1.0, "tries": 2}]

    def _run(self, x, y, query, progress):
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
    rows = grid.run_grid([bundle], ATTACKS, out, grid.Profile("test", None, batch=3), device="cpu",
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


def test_profile_counts_per_attack_family_and_projection(bundle, four, tmp_path):
    profile = grid.Profile("test", 4, {"signstep": 2}, batch=4)
    out = tmp_path / "results.jsonl"
    key = grid.setting_key(RandomSign.paper_settings[0])
    costs = {("signstep", grid.setting_key({"eps": 0.1})): 0.5, ("randomsign", key): 2.0, "overhead_per_bundle": 7.0}
    before = grid.project([bundle], ATTACKS, profile, costs=costs)
    # signstep eps 2.0 is not in the table: it takes the mean of signstep's known settings
    assert before["total_seconds"] == pytest.approx(7.0 + 2 * 0.5 + 2 * 0.5 + 4 * 2.0)
    assert before["per_attack"]["signstep"]["examples"] == {bundle.name: 2}
    rows = grid.run_grid([bundle], ATTACKS, out, profile, device="cpu", test_sets={bundle.name: four}, costs=costs)
    n = {(r["attack"], r["subset"]): r["n"] for r in rows}
    assert n[("randomsign", "all")] == 4 and n[("signstep", "all")] == 2
    assert n[("signstep", "male")] == n[("signstep", "female")] == 1
    assert all(r["cpu_seconds"] > 0 for r in rows if r["subset"] == "all")
    assert grid.project([bundle], ATTACKS, profile, rows, costs)["total_seconds"] == 0  # all done
    table = grid.save_costs(rows, tmp_path / "costs.json", overhead_per_bundle=3.0)
    again = grid.load_costs(tmp_path / "costs.json")
    assert again["overhead_per_bundle"] == 3.0 and len(table["cells"]) == 3
    r = next(r for r in rows if r["attack"] == "randomsign" and r["subset"] == "all")
    assert again[("randomsign", key)] == pytest.approx(r["cpu_seconds"] / 4, abs=1e-4)
    # another count for one attack redoes only its cells; its new rows replace the old ones
    more = grid.Profile("test", 4, {"signstep": 4}, batch=4)
    rows = grid.run_grid([bundle], ATTACKS, out, more, device="cpu", test_sets={bundle.name: four}, costs=costs)
    assert len(rows) == len(grid.read_rows(out)) == 9
    assert {r["n"] for r in rows if r["subset"] == "all"} == {4}


def test_grid_writes_one_row_per_cell_and_subset(grid_run, bundle):
    out, rows = grid_run
    written = grid.read_rows(out)
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
    assert {r["weights_sha"] for r in grid.read_rows(out)} == {bundle.config["weights_sha"]}

    class Counting(SignStep):
        calls = 0

        def __call__(self, *a, **k):
            Counting.calls += 1
            return super().__call__(*a, **k)

    attacks, profile = {"signstep": Counting, "randomsign": RandomSign}, grid.Profile("test", 4, batch=3)
    grid.run_grid([bundle], attacks, out, profile, device="cpu", test_sets={bundle.name: four})
    assert Counting.calls == 0  # same weights: nothing redone
    retrained = copy.copy(bundle)
    retrained.config = dict(bundle.config, weights_sha="0123456789abcdef")
    done = grid.read_rows(out)
    assert grid.project([bundle], attacks, profile, done, {})["total_seconds"] == 0
    assert grid.project([retrained], attacks, profile, done, {})["total_seconds"] > 0
    rows = grid.run_grid([retrained], attacks, out, profile, device="cpu", test_sets={bundle.name: four})
    assert Counting.calls == 4  # 2 signstep settings x 2 batches of the 4 examples (batch 3)
    assert len(rows) == 9 and {r["weights_sha"] for r in rows} == {"0123456789abcdef"}


def test_grid_accuracy_is_consistent_with_flips(grid_run):
    for r in grid.read_rows(grid_run[0]):
        n = r["n"]
        kept = r["clean_accuracy"] - r["success_rate"]  # lowest possible: every flip hit a correct one
        assert r["accuracy"] >= kept - 1e-9
        assert r["accuracy"] <= r["clean_accuracy"] + r["success_rate"] + 1e-9
        assert r["correct"] == round(r["accuracy"] * n)


def test_grid_measures_what_the_attack_did(grid_run):
    rows = {(r["attack"], r["setting"].get("eps"), r["subset"]): r for r in grid.read_rows(grid_run[0])}
    small, large = rows[("signstep", 0.1, "all")], rows[("signstep", 2.0, "all")]
    assert large["linf"] == pytest.approx(2.0, abs=1e-4)  # the budget is spent (up to clipping)
    assert small["mean_abs"] < large["mean_abs"]
    assert small["queries"] == 1 and rows[("randomsign", 1.0, "all")]["queries"] == 2
    # white-box rows carry the torch -> ONNX transfer figures; black-box rows do not
    assert 0 <= large["torch_onnx_agreement"] <= 1 and "torch_accuracy" in large
    assert "torch_onnx_agreement" not in rows[("randomsign", 1.0, "all")]


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

    again = grid.run_grid([bundle], {"signstep": Exploding, "randomsign": RandomSign}, out,
                          grid.Profile("test", None, batch=3), device="cpu", test_sets={bundle.name: four})
    assert Exploding.calls == 0  # every signstep row was there already
    assert len(again) == len(rows) and len(out.read_text().splitlines()) == len(lines)


def test_report_renders_the_paper_comparison(grid_run, tmp_path):
    rows = grid.read_rows(grid_run[0])
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


def test_defence_examples_stay_in_the_ball_and_raise_the_loss(bundle, four):
    from ser_core.training.adversarial import fgsm_examples, pgd_examples
    model = bundle.torch_model()
    x, y = torch.from_numpy(four.x[1:3]), torch.from_numpy(four.labels[1:3]).long()  # a male and a female
    lo, hi = bundle.clip_range
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y).item()
    for xa in (fgsm_examples(model, x, y, 0.5, lo, hi),
               pgd_examples(model, x, y, 0.5, lo, hi, 2, torch.Generator().manual_seed(0))):
        assert (xa - x).abs().max().item() <= 0.5 + 1e-5 and xa.min() >= lo and xa.max() <= hi
        with torch.no_grad():
            assert F.cross_entropy(model(xa), y).item() > clean


def test_defence_writes_a_bundle_that_records_its_recipe(bundle, tmp_path, data_dir):
    from ser_core.models.bundle import ModelBundle
    from ser_core.training.adversarial import DefenceConfig, adversarial_train
    with pytest.raises(ParameterError):
        DefenceConfig(adversarial_fraction=1.5).check()
    out = adversarial_train(bundle, tmp_path / "defended", DefenceConfig("fgsm", batch_size=8, max_steps=1, train_rows=8),
                            data_dir=data_dir)
    again = ModelBundle.load(out.folder)
    d = again.config["defence"]
    assert d["method"] == "fgsm-at" and d["base"] == bundle.name and d["eps"] == 1.25
    assert d["adversarial_fraction"] == 0.6 and again.config["training"]["steps"] == 1
    assert again.config["retrain_command"] == (f"python -m export defend --model {bundle.name} --method fgsm "
                                               f"--batch-size 8 --out {tmp_path / 'defended'}")
    assert again.config["onnx_parity"]["same_decisions"]
    before = bundle.torch_model().state_dict()
    after = again.torch_model().state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if before[k].is_floating_point())


class _StopAfterFirstEpoch(io.StringIO):
    """A log that interrupts training when the first epoch's row is written."""

    def write(self, text):
        if '"epoch": 1,' in text:
            raise KeyboardInterrupt("simulated interruption")
        return super().write(text)


def test_defence_resumes_after_interruption_to_the_same_weights(bundle, tmp_path, data_dir):
    from ser_core.training.adversarial import CHECKPOINT, DefenceConfig, adversarial_train
    cfg = DefenceConfig("fgsm", epochs=2, batch_size=8, train_rows=16)
    straight = adversarial_train(bundle, tmp_path / "straight", cfg, data_dir=data_dir, log=io.StringIO())
    with pytest.raises(KeyboardInterrupt):
        adversarial_train(bundle, tmp_path / "resumed", cfg, data_dir=data_dir, log=_StopAfterFirstEpoch())
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    with pytest.raises(ParameterError, match="eps"):  # another recipe does not pick it up
        adversarial_train(bundle, tmp_path / "resumed", dataclasses.replace(cfg, eps=0.5), data_dir=data_dir,
                          log=io.StringIO())
    log = io.StringIO()
    resumed = adversarial_train(bundle, tmp_path / "resumed", cfg, data_dir=data_dir, log=log)
    lines = [json.loads(l) for l in log.getvalue().splitlines()]
    assert lines[0]["epochs_done"] == 1 and [l["epoch"] for l in lines[1:]] == [2]
    assert not (tmp_path / "resumed" / CHECKPOINT).exists()
    h0, h1 = straight.config["training"]["history"], resumed.config["training"]["history"]
    assert [r["loss"] for r in h0] == [r["loss"] for r in h1] and h1[-1]["steps"] == 4
    a, b = straight.torch_model().state_dict(), resumed.torch_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], bundle.torch_model().state_dict()[k]) for k in a if a[k].is_floating_point())


def test_waveform_part_counts_only_verified_flips_and_resumes(bundle, data_dir, tmp_path, capsys):
    from export.cli import main as cli
    from ser_core.attacks.clip import attack_clip
    from ser_core.evaluation.waveform import WaveformPlan, run_waveform, summarise, bundle_test_clips
    plan = WaveformPlan(1, snrs=(20.0,), pgd_steps=2, cw_steps=2, cw_binary_steps=1)
    clips = bundle_test_clips(bundle, 1, data_dir=data_dir)
    assert [u.gender for u in clips] == ["male", "female"]
    assert {u.speaker for u in clips} <= set(bundle.held_out_speakers)
    out = tmp_path / "waveform.jsonl"
    rows = run_waveform([bundle], out, plan, data_dir)
    assert len(rows) == 2 * 2 and {r["attack"] for r in rows} == {"pgd", "cw"}
    for r in rows:
        if r["attack"] == "pgd" and r["snr_db"] is not None:
            assert r["snr_db"] >= 20.0 - 1e-6  # the budget holds on the written 16-bit clip
    # a row's labels are what `export predict` reads from the clean file and from the WAV the
    # attack writes (the evaluation keeps no WAV: each run is redone here, deterministic)
    paths = {u.path.name: u.path for u in clips}
    for r in rows:
        again = attack_clip(bundle, paths[r["clip"]], r["attack"], r["params_requested"], domain="waveform",
                            out_dir=tmp_path / "again")
        capsys.readouterr()
        assert cli(["predict", "--model", str(bundle.folder), str(paths[r["clip"]]), str(again.wav_path)]) == 0
        printed = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
        assert printed == [r["label_before"], r["label_after"]]
        assert r["verified_flipped"] is (printed[1] != printed[0])
    assert run_waveform([bundle], out, plan, data_dir) == rows  # resumed: nothing redone
    table = {(s["setting"], s["subset"]): s for s in summarise(rows)}
    a = table[("PGD, SNR >= 20 dB", "all")]
    assert a["clips"] == 2 and a["verified"] == sum(r["verified_flipped"] for r in rows if r["attack"] == "pgd")
    assert a["rate_ci"][0] <= a["rate"] <= a["rate_ci"][1]
    assert table[("C&W L2 (minimum SNR)", "male")]["clips"] == 1
    text = report.waveform_lines(rows)
    assert any("C&W L2 (minimum SNR)" in line and "| all |" in line for line in text)


def _row(model, attack, setting, subset, n, correct, clean_correct, defence=None, **extra):
    """One results row as grid.summarise writes it (synthetic counts)."""
    lo, hi = stats.wilson(correct, n)
    return dict({"model": model, "corpus": "emodb", "language": "German", "protocol": "paper", "defence": defence,
                 "base_model": "emodb-paper", "profile": "quick", "attack": attack,
                 "kind": "black-box" if attack == "boundary" else "white-box", "goal": "fixed-budget",
                 "setting": setting, "setting_key": grid.setting_key(setting), "device": "cpu",
                 "selection": f"first {n}", "test_examples": {"all": 837, "male": 315, "female": 522},
                 "subset": subset, "n": n, "clean_accuracy": clean_correct / n, "clean_correct": clean_correct,
                 "accuracy": correct / n, "correct": correct, "accuracy_ci": [lo, hi], "success_rate": 0.5,
                 "mean_abs": 0.1, "l2": 1.0, "linf": 0.5, "confidence_before": 0.9, "confidence_after": 0.6,
                 "queries": 10.0, "seconds": 2.0, "seconds_per_example": 2.0 / n, "cpu_seconds": 2.0}, **extra)


def _cells(model, counts, defence=None, **extra):
    """counts: [(attack, setting, ((n, correct, clean) for all, male, female))]."""
    return [_row(model, a, s, subset, *c, defence=defence, **extra)
            for a, s, per in counts for subset, c in zip(("all", "male", "female"), per)]


def test_report_sets_defended_bundles_beside_their_base(tmp_path):
    fgsm, bim = ("fgsm", {"eps": 1.25}), ("bim", {"eps": 0.25, "max_iter": 100})
    base = _cells("emodb-paper", [(*fgsm, ((20, 2, 18), (10, 1, 9), (10, 1, 9))), (*bim, ((4, 0, 4), (2, 0, 2), (2, 0, 2)))])
    cfg = {"method": "pgd-at", "base": "emodb-paper", "eps": 1.25, "adversarial_fraction": 0.6, "epochs": 12,
           "learning_rate": 1e-4, "batch_size": 128, "pgd_steps": 3, "trained_epochs": 12, "trained_steps": 252,
           "training_seconds": 1800.0, "hardware": "x86_64, 1 threads", "folder": "models-defended/emodb-paper-pgd"}
    metrics = {"n": 837, "accuracy": 0.8124, "n_male": 315, "accuracy_male": 0.8, "n_female": 522, "accuracy_female": 0.82}
    defended = _cells("emodb-paper-pgd", [(*fgsm, ((20, 15, 17), (10, 7, 9), (10, 8, 8))), (*bim, ((4, 1, 4), (2, 1, 2), (2, 0, 2)))],
                      defence="pgd-at", defence_config=cfg, bundle_test_metrics=metrics)
    plain = report.write_report(base, tmp_path / "plain", profile="quick", waveform_rows=[])
    text = report.write_report(base + defended, tmp_path / "both", profile="quick", waveform_rows=[])
    section = text.split("## Defence: adversarial training")[1].split("\n## ")[0]
    lines = section.splitlines()
    # the recipe as ours, and a command that rebuilds it with the non-default flags
    assert "our choice, not the study's" in section and "3 PGD steps" in section and "252 steps" in section
    assert ("python -m export defend --model emodb-paper --method pgd --epochs 12 --pgd-steps 3 "
            "--out models-defended/emodb-paper-pgd") in lines
    assert "--models models-defended/emodb-paper-pgd" in section
    # clean accuracy of the defended bundle on the whole test set, with its counts
    assert "| emodb-paper-pgd | pgd-at | .812 (837) | .800 (315) | .820 (522) |" in lines
    # under attack: the undefended and defended cells side by side with k/n, and the study's range
    row = next(l for l in lines if l.startswith("| fgsm | eps 1.25"))
    assert row.startswith("| fgsm | eps 1.25 | .100 (2/20) [") and "| .750 (15/20) [" in row and row.endswith("| .68-.89 |")
    row = next(l for l in lines if l.startswith("| bim |"))
    assert "| .000 (0/4) [" in row and "| .250 (1/4) [" in row and row.endswith("| .06 |")
    head = lines.index(next(l for l in lines if l.startswith("| attack | setting | emodb-paper (undefended)")))
    assert lines[head].count("|") == lines[head + 1].count("|") == 6  # attack, setting, 2 models, study
    # appending defended rows leaves the other sections as they were
    for title in ("## Paper protocol", "## Speaker protocol"):
        assert plain.split(title)[1].split("\n## ")[0] == text.split(title)[1].split("\n## ")[0]
    assert "No defended bundle was evaluated" in plain
    assert "- Not in these results: fgsm-at of `emodb-paper` (`python -m export defend --model emodb-paper --method fgsm" in section
    assert report.paper_comparison(base) == report.paper_comparison(base + defended)
    assert grid.project_full(base) == grid.project_full(base + defended)


def test_defend_command_reproduces_the_study_recipe_with_no_flags():
    from ser_core.training.adversarial import DefenceConfig, defend_command
    d = {**dataclasses.asdict(DefenceConfig()), "method": "fgsm-at", "base": "emodb-paper", "folder": "models-defended/x"}
    assert defend_command(d) == "python -m export defend --model emodb-paper --method fgsm --out models-defended/x"


def test_defend_options_and_the_rebuild_command_come_from_the_one_recipe():
    """`export defend` parses its options into DefenceConfig, and the report's rebuild command
    of that recipe parses back into the same DefenceConfig (both read DefenceConfig's fields)."""
    from export.cli import build_parser
    from ser_core.training.adversarial import config_from_arguments, defend_command
    argv = ["defend", "--model", "emodb-paper", "--method", "pgd", "--eps", "0.5", "--fraction", "0.5",
            "--epochs", "3", "--lr", "0.001", "--batch-size", "64", "--pgd-steps", "3", "--out", "models-defended/x"]
    cfg = config_from_arguments(build_parser().parse_args(argv))
    assert (cfg.method, cfg.eps, cfg.adversarial_fraction, cfg.epochs, cfg.learning_rate, cfg.batch_size,
            cfg.pgd_steps, cfg.max_steps) == ("pgd", 0.5, 0.5, 3, 0.001, 64, 3, None)
    command = defend_command({**dataclasses.asdict(cfg), "base": "emodb-paper", "folder": "models-defended/x"})
    again = build_parser().parse_args(command.split()[3:])
    assert config_from_arguments(again) == cfg


class _Counting(SignStep):
    calls = 0

    def __call__(self, *a, **k):
        type(self).calls += 1
        return super().__call__(*a, **k)


def test_resuming_with_another_batch_size_does_not_read_the_old_batches(bundle, four, tmp_path):
    out = tmp_path / "results.jsonl"
    attacks = {"signstep": _Counting}
    grid.run_grid([bundle], attacks, out, grid.Profile("test", None, batch=3), device="cpu", test_sets={bundle.name: four})
    assert _Counting.calls == 2 * 2  # 2 settings x 2 batches (3 + 1 examples)
    out.unlink()  # rows lost, batch files kept: the same batch size reads them back
    grid.run_grid([bundle], attacks, out, grid.Profile("test", None, batch=3), device="cpu", test_sets={bundle.name: four})
    assert _Counting.calls == 4
    out.unlink()  # another batch size must attack again, not read batches cut at other examples
    rows = grid.run_grid([bundle], attacks, out, grid.Profile("test", None, batch=2), device="cpu",
                         test_sets={bundle.name: four})
    assert _Counting.calls == 4 + 2 * 2
    for r in rows:  # device and CPU time per batch
        assert [b["examples"] for b in r["batches"]] == [2, 2]
        assert all(b["device"] == "cpu" and b["executor"] == "local" and b["cpu_seconds"] > 0 for b in r["batches"])
        if r["subset"] == "all":
            assert r["cpu_seconds"] == pytest.approx(sum(b["cpu_seconds"] for b in r["batches"]))
    assert len(list((tmp_path / "results.cells" / bundle.name).iterdir())) == 2 * 2  # 2 settings x 2 batch sizes


class _Twice(grid.LocalExecutor):
    """Hands every batch back twice, the second time with other outcomes (a retried task that
    had in fact finished, or a duplicate)."""

    def run(self, jobs):
        for job, out in super().run(jobs):
            yield job, out
            yield job, dict(out, adv_pred=(out["adv_pred"] + 1) % len(job.cell.bundle.labels))


def test_a_batch_result_that_arrives_twice_is_written_once(grid_run, bundle, four, tmp_path):
    out = tmp_path / "results.jsonl"
    rows = grid.run_grid([bundle], ATTACKS, out, grid.Profile("test", None, batch=3), test_sets={bundle.name: four},
                         executor=_Twice("cpu"))
    lines = out.read_text().splitlines()
    assert len(lines) == len({grid.row_key(json.loads(l)) for l in lines}) == 9
    strip = lambda rs: {grid.row_key(r): {k: v for k, v in r.items() if k not in grid.TIMING_FIELDS} for r in rs}
    assert strip(rows) == strip(grid_run[1])  # the first result of each batch stands


def test_wilson_size_is_the_fewest_examples_within_the_margin():
    assert stats.wilson_size(0.05) == 381 and stats.wilson_size(0.10) == 93
    for m in (0.05, 0.10, 0.2):
        n = stats.wilson_size(m)
        assert stats.wilson_half_width(n) <= m < stats.wilson_half_width(n - 1)
    # the widest interval is at half right: any other count of correct answers is narrower
    assert all((hi - lo) / 2 <= stats.wilson_half_width(93) + 1e-12 for lo, hi in (stats.wilson(k, 93) for k in range(94)))


def test_standard_profile_follows_the_wilson_rule_and_the_cost_table():
    from ser_core.attacks import registry
    from ser_core.models.bundle import ModelBundle
    p = grid.PROFILES["standard"]
    paper = [ModelBundle.load(f"{c}-paper") for c in ("emodb", "emovo", "ravdess")]
    examples = sum(grid.bundle_test_size(b) for b in paper)
    costs = grid.load_costs()
    proj = grid.Projection((), costs)
    for name, cls in registry().items():
        whole_hours = sum(proj.estimate(name, grid.setting_key(s), examples) for s in grid.settings_of(cls)) / 3600
        n = p.count(name)
        if n is None:  # whole test sets: cheap by the cost table
            assert name in grid.STANDARD_WHOLE and whole_hours <= grid.STANDARD_WHOLE_CPU_HOURS
            assert min(grid.bundle_test_size(b) for b in paper) >= stats.wilson_size(grid.STANDARD_MARGIN)
        else:
            margin = grid.STANDARD_MARGINS.get(name, grid.STANDARD_MARGIN)
            assert whole_hours > grid.STANDARD_WHOLE_CPU_HOURS, name
            assert stats.wilson_half_width(n) <= margin < stats.wilson_half_width(n - 1), name
    assert {a: p.count(a) for a in ("cw_l2", "pixel", "boundary", "bim", "jsma")} == {
        "cw_l2": 93, "pixel": 93, "boundary": 93, "bim": 381, "jsma": 381}


def test_gender_split_is_what_the_balanced_order_takes():
    labels = np.array([0, 1, 2] * 5 + [0, 1] * 2)
    genders = np.array(["male"] * 4 + ["female"] * 15)
    ts = HeldOutSet(np.zeros((19, 1, 1)), labels, genders, np.arange(19))
    order = balanced_order(ts, seed=1)
    for n in range(1, 20):
        m = int((ts.genders[order[:n]] == "male").sum())
        assert grid.gender_split(n, 4, 15) == (m, n - m)
    assert grid.gender_split(None, 4, 15) == (4, 15)


def test_dry_run_plan_gives_counts_intervals_and_cpu_hours(bundle):
    from ser_core.attacks import registry
    costs = {("fgsm", grid.setting_key(s)): 0.5 for s in registry()["fgsm"].paper_settings}
    cells = grid.plan_cells([bundle], {"fgsm": registry()["fgsm"], "pixel": registry()["pixel"]},
                            grid.PROFILES["standard"], costs)
    fgsm, pixel = cells
    size = grid.bundle_test_size(bundle)
    assert fgsm["examples"] == size and fgsm["whole_test_set"]  # FGSM: the whole (small) test set
    assert fgsm["male"] + fgsm["female"] == size and fgsm["cpu_seconds"] == pytest.approx(5 * 0.5 * size)
    assert pixel["examples"] == min(93, size) and pixel["cpu_seconds"] is None  # pixel not in this cost table
    assert fgsm["half_width"]["all"] == pytest.approx(stats.wilson_half_width(size), abs=1e-4)
    text = grid.format_plan(cells, grid.PROFILES["standard"])
    assert f"{size} (" in text and "+ 1 unmeasured" in text


def test_dry_run_plan_takes_each_models_measured_cost_before_the_cost_table(bundle):
    from ser_core.attacks import registry
    fgsm = registry()["fgsm"]
    keys = [grid.setting_key(s) for s in fgsm.paper_settings]
    costs = {("fgsm", k): 0.5 for k in keys}
    sha = bundle.config.get("weights_sha")
    assert sha  # the fixture bundle records its weights

    def row(model, key, cpu, weights):
        return dict(model=model, attack="fgsm", setting_key=key, subset="all", n=4, defence=None, device="cpu",
                    cpu_seconds=cpu, seconds=cpu, seconds_per_example=cpu / 4, weights_sha=weights)
    size = grid.bundle_test_size(bundle)
    rows = [row(bundle.name, keys[0], 8.0, sha),            # 2 CPU s an example on this model's weights
            row(bundle.name, keys[1], 400.0, "retrained"),  # measured on weights it no longer has
            row("other", keys[2], 40.0, "x")]               # 10 s an example, on another model
    (cell,) = grid.plan_cells([bundle], {"fgsm": fgsm}, grid.PROFILES["standard"], costs, rows=rows)
    # setting 0 as measured on this model; setting 2 from the other model's row; the stale row
    # does not count, so setting 1 and the other two come from the cost table
    assert cell["cpu_seconds"] == pytest.approx((2.0 + 10.0 + 3 * 0.5) * size)
    (plain,) = grid.plan_cells([bundle], {"fgsm": fgsm}, grid.PROFILES["standard"], costs)
    assert plain["cpu_seconds"] == pytest.approx(5 * 0.5 * size)


def test_report_counts_the_cells_within_5_points_of_the_study():
    from pathlib import Path
    rows = grid.read_rows(Path(__file__).resolve().parents[1] / "reports" / "results-quick.jsonl")
    cells = report.paper_cells(rows)
    assert len(cells) == 9 * 3 * 3  # the study's rows x corpora x (all, male, female)
    a = report.paper_agreement(rows)
    assert a["within"] + a["sampling"] + a["clean"] + a["implementation"] + a["not run"] == 81
    assert a["within"] == sum(abs(c["ours"] - c["study"]) <= 0.05 for c in cells if c["ours"] is not None)
    for c in cells:
        if c["kind"] == "sampling":
            assert c["ci"][0] <= c["study"] <= c["ci"][1]
        if c["kind"] in ("clean", "implementation"):
            assert not c["ci"][0] <= c["study"] <= c["ci"][1]
    # the table marks exactly the cells further away
    table, notes = report.paper_comparison(rows)
    assert sum(line.count("⚠") for line in table) == len(notes) == 81 - a["within"] - a["not run"]
    assert a["wide"] == 81  # quick: 2-20 examples per cell, no interval within +/- 5 points


def test_projection_counts_cpu_time_not_the_wall_time_of_a_busy_machine():
    # a CPU cell run beside other jobs: 10 CPU seconds over 5 examples, 500 s of wall time
    row = dict(model="m", attack="fgsm", setting_key='{"eps": 0.5}', subset="all", n=5, defence=None,
               device="cpu", cpu_seconds=10.0, seconds=500.0, seconds_per_example=100.0,
               test_examples={"all": 40})
    proj = grid.Projection([row])
    assert proj.estimate("fgsm", '{"eps": 0.5}', 7) == pytest.approx(14.0)
    assert grid.project_full([row])["total_seconds"] == pytest.approx(80.0)
    # on a GPU the CPU time is not what the cell cost: its wall time is
    gpu = dict(row, device="cuda")
    assert grid.Projection([gpu]).estimate("fgsm", '{"eps": 0.5}', 7) == pytest.approx(700.0)
    assert grid.project_full([gpu])["total_seconds"] == pytest.approx(4000.0)


def test_report_names_wrong_decisions_moved_onto_their_true_label():
    """A cell where every decision changed: the examples counted correct after the attack can
    only be ones the model got wrong before it, and the report says so with the bound."""
    def row(subset, n, clean_correct, correct, success=1.0):
        return dict(model="emodb-paper", corpus="emodb", protocol="paper", defence=None, attack="jsma",
                    setting={"theta": 1.0, "gamma": 1.0}, setting_key='{"gamma": 1.0, "theta": 1.0}',
                    subset=subset, n=n, clean_correct=clean_correct, correct=correct,
                    accuracy=correct / n, clean_accuracy=clean_correct / n, success_rate=success)
    rows = [row("all", 381, 343, 27), row("male", 191, 171, 13), row("female", 190, 174, 14)]
    cells = {c["subset"]: c for c in report.paper_cells(rows) if c["attack"] == "jsma" and c["corpus"] == "emodb"}
    reason = cells["all"]["reason"]
    assert cells["all"]["kind"] == "implementation"
    assert "at least 27 of the 27 counted correct were among the 38" in reason
    assert "accuracy would be .000" in reason
    # ART's random target hits the true label 1 time in 4 (five classes): (0 + 38 / 4) / 381
    assert "1 time in 4" in reason and "about .025" in reason
    # with 5 decisions left unchanged at least 22 of the 27 were restored: still the bulk of the gap
    def reason_all(unchanged):
        rows = [row("all", 381, 343, 27, success=1 - unchanged / 381), row("male", 191, 171, 13),
                row("female", 190, 174, 14)]
        return next(c["reason"] for c in report.paper_cells(rows)
                    if c["attack"] == "jsma" and c["corpus"] == "emodb" and c["subset"] == "all")
    assert "at least 22 of the 27" in reason_all(5) and "accuracy would be .013" in reason_all(5)
    # with 20 unchanged the bound (7) explains too little of the gap to be named
    assert "implementation difference" in reason_all(20) and "at least" not in reason_all(20)
    # rows that count restored examples one by one give the exact figure, not the bound
    rows = [dict(r, restored=r["correct"] - 2) for r in rows]
    reason = next(c["reason"] for c in report.paper_cells(rows)
                  if c["attack"] == "jsma" and c["corpus"] == "emodb" and c["subset"] == "all")
    assert "2 of the 343 examples the model got right keep their label" in reason and "at least" not in reason
    assert "25 of the 38 it got wrong end on their true label" in reason and "accuracy would be .005" in reason


def test_summarise_counts_wrong_decisions_the_attack_moved_onto_the_label():
    labels = np.array([0, 1, 2, 0, 1, 2])
    ts = HeldOutSet(np.zeros((6, 1, 1)), labels, np.array(["male"] * 3 + ["female"] * 3), np.arange(6))
    ones = np.ones(6)
    cells = {"clean_pred": np.array([0, 2, 1, 0, 0, 2]),   # wrong: examples 1, 2, 4
             "adv_pred": np.array([1, 1, 2, 0, 1, 0]),     # right after: 1, 2 (male), 3, 4 (female)
             "mean_abs": ones, "l2": ones, "linf": ones, "conf_before": ones, "conf_after": ones,
             "queries": ones, "seconds": ones}
    rows = {r["subset"]: r for r in grid.summarise(cells, ts, {})}
    assert (rows["all"]["restored"], rows["male"]["restored"], rows["female"]["restored"]) == (3, 2, 1)
    assert (rows["all"]["correct"], rows["all"]["clean_correct"]) == (4, 3)


def test_report_splits_a_gap_into_kept_and_restored_examples():
    def row(subset, n, clean_correct, correct, restored):
        return dict(model="emovo-paper", corpus="emovo", protocol="paper", defence=None, attack="fgsm",
                    setting={"eps": 1.25}, setting_key='{"eps": 1.25}', subset=subset, n=n,
                    clean_correct=clean_correct, correct=correct, restored=restored, accuracy=correct / n,
                    clean_accuracy=clean_correct / n, success_rate=0.85)
    rows = [row("all", 987, 882, 148, 21), row("male", 498, 450, 99, 13), row("female", 489, 432, 49, 8)]
    cell = next(c for c in report.paper_cells(rows)
                if c["label"] == "FGSM 1.25" and c["corpus"] == "emovo" and c["subset"] == "all")
    assert cell["kind"] == "implementation"
    assert "127 of the 882 examples the model got right keep their label" in cell["reason"]
    assert "21 of the 105 it got wrong end on their true label" in cell["reason"]


def test_report_leaves_out_rows_of_weights_a_model_no_longer_has():
    """A retrained model: its rows measured on the earlier weights leave the report (counted per
    model), its rows on the weights it has now and rows of other or unhashed models stay."""
    from ser_core.evaluation.grid import current_rows
    rows = [{"model": "emovo", "weights_sha": "old", "attack": "fgsm"},
            {"model": "emovo", "weights_sha": "old", "attack": "bim"},
            {"model": "emovo", "weights_sha": "new", "attack": "fgsm"},
            {"model": "emodb", "weights_sha": "a", "attack": "fgsm"},
            {"model": "emodb", "attack": "bim"},
            {"model": "mine", "weights_sha": "x", "attack": "fgsm"}]
    kept, left = current_rows(rows, {"emovo": "new", "emodb": "a"})
    assert left == {"emovo": 2}
    assert [(r["model"], r["attack"]) for r in kept] == [("emovo", "fgsm"), ("emodb", "fgsm"),
                                                          ("emodb", "bim"), ("mine", "fgsm")]
