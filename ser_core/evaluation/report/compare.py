"""Our paper-protocol rows beside the study's table, cell by cell (row x corpus x subset): every
cell that differs by more than 5 points is marked, and a reason is given where the data shows
one (sampling error, another clean accuracy, or where the accuracy comes from)."""
from __future__ import annotations

from collections import defaultdict

from ser_core.data.corpora import CORPORA, corpus_spec
from ser_core.evaluation.report.common import SUBSETS, bundle_test_metrics, fmt
from ser_core.evaluation.report.study import STUDY_CLEAN, STUDY_TABLE, matches
from ser_core.stats import wilson

MARGIN = 0.05


def pooled(rows: list[dict]) -> dict | None:
    """Rows of one subset pooled over settings: summed counts, recomputed accuracy."""
    if not rows:
        return None
    n = sum(r["n"] for r in rows)
    k = sum(r["correct"] for r in rows)
    kc = sum(r["clean_correct"] for r in rows)
    # examples whose decision the attack left as it was (success_rate: share of changed decisions)
    unchanged = sum(round(r["n"] * (1 - r["success_rate"])) for r in rows) if all(
        r.get("success_rate") is not None for r in rows) else None
    return {"n": n, "correct": k, "accuracy": k / n if n else None, "clean_correct": kc,
            "clean_accuracy": kc / n if n else None, "accuracy_ci": list(wilson(k, n)),
            "unchanged": unchanged, "settings": len(rows),
            "restored": sum(r["restored"] for r in rows) if all("restored" in r for r in rows) else None}


def _index(rows):
    idx = defaultdict(list)
    for r in rows:
        idx[(r["model"], r["attack"], r["subset"])].append(r)
    return idx


def paper_cells(rows: list[dict]) -> list[dict]:
    """Every cell of the study's table (row x corpus x subset: 9 x 3 x 3) with ours beside it:
    label, corpus, subset, study, ours (None: not run), n, interval, within (|ours - study| <=
    5 points), and for a cell further away the reason the data shows."""
    paper = [r for r in rows if r["protocol"] == "paper" and not r.get("defence")]
    models = {r["corpus"]: r["model"] for r in paper}
    idx = _index(paper)
    out = []
    for label, attack, want, study in STUDY_TABLE:
        for c in CORPORA:
            m = models.get(c)
            got = [pooled([r for r in idx.get((m, attack, s), []) if matches(r["setting"], want)]) for s in SUBSETS]
            for s, g, ref, ref_clean in zip(SUBSETS, got, study[c], STUDY_CLEAN[c]):
                cell = {"label": label, "attack": attack, "corpus": c, "subset": s, "study": ref, "ours": None,
                        "n": 0, "ci": None, "within": None, "reason": None, "kind": "not run"}
                if m and all(got):
                    cell.update(ours=g["accuracy"], n=g["n"], ci=g["accuracy_ci"],
                                within=abs(g["accuracy"] - ref) <= MARGIN)
                    if cell["within"]:
                        cell["kind"] = "within"
                    else:
                        cell["kind"], cell["reason"] = _reason_kind(g, ref, ref_clean), _reason(g, ref, ref_clean, attack, c)
                out.append(cell)
    return out


def paper_agreement(rows: list[dict]) -> dict:
    """How many of the study's cells ours matches within 5 points, and why the others differ:
    'sampling' (the study's value inside our 95 % interval), 'clean' (our model's clean accuracy
    on those examples is itself more than 5 points from the study's), 'implementation' (outside
    our interval at the same clean accuracy), 'not run'. `wide`: cells whose interval is wider
    than +/- 5 points, where even a perfect match could not be shown."""
    cells = paper_cells(rows)
    run = [c for c in cells if c["ours"] is not None]
    counts = {k: sum(c["kind"] == k for c in cells) for k in ("within", "sampling", "clean", "implementation", "not run")}
    return {"cells": len(cells), "run": len(run), **counts,
            "wide": sum((c["ci"][1] - c["ci"][0]) / 2 > MARGIN for c in run)}


def agreement_line(a: dict) -> str:
    return (f"**{a['within']} of {a['run']} cells run are within 5 points of the study's** ({a['cells']} in its table"
            + (f", {a['not run']} not run" if a["not run"] else "") + f"). Of the {a['run'] - a['within']} further away: "
            f"{a['sampling']} within sampling error (the study's value inside our 95 % interval), {a['clean']} where our "
            f"model's clean accuracy on those examples already differs by more than 5 points, {a['implementation']} "
            f"outside our interval at the same clean accuracy. {a['wide']} of the {a['run']} cells rest on too few "
            f"examples for a 95 % interval within +/- 5 points (the standard profile sizes the all-speaker cells "
            f"to +/- 5 points, +/- 10 for C&W L2, Pixel and Boundary).")


def paper_comparison(rows: list[dict]) -> tuple[list[str], list[str]]:
    """Markdown lines of the table (ours | study per corpus) and the list of flagged cells."""
    paper = [r for r in rows if r["protocol"] == "paper" and not r.get("defence")]
    models = {r["corpus"]: r["model"] for r in paper}
    by = {(c["label"], c["corpus"]): [] for c in paper_cells(rows)}
    for c in paper_cells(rows):
        by[(c["label"], c["corpus"])].append(c)
    head = "| attack, setting | " + " | ".join(f"{CORPORA[c].title} ours | {CORPORA[c].title} study" for c in CORPORA) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(CORPORA))]
    notes = []
    clean = ["| clean, whole test set (no attack)"]
    for c in CORPORA:
        m = models.get(c)
        t = bundle_test_metrics(m) if m else None
        clean.append(" / ".join(fmt(t[k]) for k in ("accuracy", "accuracy_male", "accuracy_female"))
                     if t else "not run")
        clean.append(" / ".join(fmt(v) for v in STUDY_CLEAN[c]))
    lines.append(" | ".join(clean) + " |")
    for label, attack, want, study in STUDY_TABLE:
        cells = [f"| {label}"]
        for c in CORPORA:
            got = by[(label, c)]
            if got[0]["ours"] is None:
                cells += ["not run", " / ".join(fmt(v) for v in study[c])]
                continue
            parts = []
            for g in got:
                parts.append(fmt(g["ours"]) + ("" if g["within"] else " ⚠"))
                if not g["within"]:
                    notes.append(f"- {label}, {CORPORA[c].title} {g['subset']}: ours {fmt(g['ours'])} vs study {fmt(g['study'])} "
                                 f"(n={g['n']}): {g['reason']}")
            cells += [" / ".join(parts), " / ".join(fmt(v) for v in study[c])]
        lines.append(" | ".join(cells) + " |")
    return lines, notes


def _reason_kind(g: dict, ref: float, ref_clean: float) -> str:
    lo, hi = g["accuracy_ci"]
    if lo <= ref <= hi:
        return "sampling"
    if g["clean_accuracy"] is not None and abs(g["clean_accuracy"] - ref_clean) > MARGIN:
        return "clean"
    return "implementation"


def _reason(g: dict, ref: float, ref_clean: float, attack: str | None = None, corpus: str | None = None) -> str:
    lo, hi = g["accuracy_ci"]
    if lo <= ref <= hi:
        return (f"within sampling error: the study's value lies inside our 95 % interval "
                f"[{fmt(lo)}, {fmt(hi)}] on {g['n']} examples")
    if g["clean_accuracy"] is not None and abs(g["clean_accuracy"] - ref_clean) > MARGIN:
        return (f"our model starts elsewhere: clean accuracy {fmt(g['clean_accuracy'])} on these examples "
                f"vs the study's {fmt(ref_clean)}")
    restored, n, counted = _restored(g), g["n"], g.get("restored") is not None
    wrong = n - g["clean_correct"] if g.get("clean_correct") is not None else None
    excess = g["correct"] - ref * n  # examples counted correct beyond the study's rate
    if g["accuracy"] > ref and (counted or restored >= excess / 2 > 0):
        if counted:
            kept = g["correct"] - restored
            why = (f"{kept} of the {g['clean_correct']} examples the model got right keep their label through "
                   f"the attack ({fmt(kept / n)} of the accuracy), and {restored} of the {wrong} it got wrong end "
                   f"on their true label ({fmt(restored / n)})")
        else:
            changed = "every one" if not g["unchanged"] else f"all but {g['unchanged']}"
            why = (f"the attack changed the decision on {changed} of the {n} examples, so at least {restored} "
                   f"of the {g['correct']} counted correct were among the {wrong} the model got wrong before "
                   f"it, moved onto their true label")
        if restored >= excess / 2:
            why += (f". Our attacks move away from the model's decision toward the nearest other class, "
                    f"which for a wrong decision is often the true one; without those, accuracy would be "
                    f"{fmt((g['correct'] - restored) / n)}")
            if attack == "jsma" and corpus:  # ART's SaliencyMapMethod without labels: a random target
                k = len(corpus_spec(corpus).paper_classes)
                why += (f". ART's JSMA (the study's) draws a random other class as its target when given no "
                        f"labels, the true one 1 time in {k - 1}, which would leave about "
                        f"{fmt((g['correct'] - restored + wrong / (k - 1)) / n)}")
        else:
            why += ": the attack leaves more of the right decisions standing than the study's did on its model"
        return (f"outside our 95 % interval [{fmt(lo)}, {fmt(hi)}] with the same clean accuracy; the data shows "
                f"where: {why}")
    return (f"outside our 95 % interval [{fmt(lo)}, {fmt(hi)}] with the same clean accuracy: an "
            f"implementation difference (attack code, the reference the attack moves away from, "
            f"PyTorch vs TensorFlow/ART numerics, training length)")


def _restored(g: dict) -> int:
    """How many of the examples counted correct after the attack were wrong before it: the
    per-example count where the rows carry it, else a lower bound (a correct one stays correct
    only if its decision did not change, so all but `unchanged` of the correct ones were moved
    onto their true label from a wrong decision)."""
    if g.get("restored") is not None:  # counted per example (rows written since it was added)
        return g["restored"]
    if g.get("unchanged") is None or g.get("clean_correct") is None:
        return 0
    return max(0, g["correct"] - g["unchanged"])
