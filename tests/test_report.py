"""The report (ser_core/evaluation/report/): the study's table beside ours and why a cell
differs, the defended bundles beside their base, on synthetic rows and on the committed quick
results. The report of a real grid run is test_evaluation.py's."""
from __future__ import annotations

from pathlib import Path

from ser_core import stats
from ser_core.evaluation import plan, report
from ser_core.evaluation.cells import read_rows


def _row(model, attack, setting, subset, n, correct, clean_correct, defence=None, **extra):
    """One results row as cells.summarise writes it (synthetic counts)."""
    lo, hi = stats.wilson(correct, n)
    return dict({"model": model, "corpus": "emodb", "language": "German", "protocol": "paper", "defence": defence,
                 "base_model": "emodb-paper", "profile": "quick", "attack": attack,
                 "kind": "black-box" if attack == "boundary" else "white-box", "goal": "fixed-budget",
                 "setting": setting, "setting_key": plan.setting_key(setting), "device": "cpu",
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
    plain = report.write_report(base, tmp_path / "plain", profile="quick")
    text = report.write_report(base + defended, tmp_path / "both", profile="quick")
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
    assert plan.project_full(base) == plan.project_full(base + defended)


def test_report_counts_the_cells_within_5_points_of_the_study():
    rows = read_rows(Path(__file__).resolve().parents[1] / "reports" / "results-quick.jsonl")
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
