"""Grid rows -> Markdown report (reports/README.md) and plots.

The paper-protocol rows are set beside the study's table "Accuracy under attack"
(../shared/PAPER.md, Facchinetti et al. 2024), cell by cell, with every cell that differs by
more than 5 points marked and a reason given where the data shows one. The speaker-protocol
rows (models the study did not have) are read for differences between genders, languages
(corpora) and protocols, each with the examples behind it and 95 % intervals (Wilson for an
accuracy, Newcombe for a difference)."""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

from ser_core.data.corpora import corpus_spec
from ser_core.training.adversarial import defend_command, is_study_recipe
from ser_core.evaluation.grid import project_full, read_rows
from ser_core.stats import newcombe_difference, wilson

CORPORA = {"emodb": "EmoDB", "emovo": "EMOVO", "ravdess": "RAVDESS"}
SUBSETS = ("all", "male", "female")
MARGIN = 0.05
STUDY_GPU_HOURS = 16

# The study's clean accuracy and its table "Accuracy under attack" (paper split; all / male /
# female). Each row: label, attack name in our registry, which setting (parameter-name fragment
# -> value; None = every setting pooled, as the study's "any eps"), {corpus: (all, male, female)}.
STUDY_CLEAN = {"emodb": (.909, .895, .918), "emovo": (.872, .893, .852), "ravdess": (.911, .911, .911)}
STUDY_TABLE = [
    ("FGSM 0.25", "fgsm", {"eps": 0.25}, {"emodb": (.171, .114, .205), "emovo": (.073, .061, .084), "ravdess": (.146, .127, .164)}),
    ("FGSM 1.25", "fgsm", {"eps": 1.25}, {"emodb": (.109, .089, .121), "emovo": (.081, .076, .086), "ravdess": (.198, .188, .209)}),
    ("BIM (any eps)", "bim", None, {"emodb": (.067, .070, .065), "emovo": (.076, .064, .088), "ravdess": (.059, .057, .060)}),
    ("DeepFool 5 it", "deepfool", {"iter": 5}, {"emodb": (.061, .070, .056), "emovo": (.086, .068, .104), "ravdess": (.052, .056, .049)}),
    ("JSMA theta 1", "jsma", {"theta": 1.0}, {"emodb": (.013, .019, .010), "emovo": (.022, .020, .024), "ravdess": (.017, .016, .019)}),
    ("CW-L2", "cw_l2", None, {"emodb": (.188, .127, .224), "emovo": (.092, .076, .108), "ravdess": (.124, .122, .126)}),
    ("CW-Linf", "cw_linf", None, {"emodb": (.069, .076, .065), "emovo": (.085, .068, .102), "ravdess": (.060, .058, .063)}),
    ("Pixel th 10", "pixel", {"th": 10}, {"emodb": (.547, .454, .603), "emovo": (.364, .389, .339), "ravdess": (.322, .225, .419)}),
    ("Boundary", "boundary", None, {"emodb": (.045, .057, .038), "emovo": (.076, .070, .082), "ravdess": (.204, .202, .205)}),
]


def matches(setting: dict, want: dict | None) -> bool:
    """Does a grid setting match the study's row? Keys are matched by fragment ("iter" matches
    "max_iter"), so the table survives an attack naming its parameter differently."""
    if want is None:
        return True
    for frag, value in want.items():
        hit = [k for k, v in setting.items() if frag in k.lower() and isinstance(v, (int, float))
               and math.isclose(float(v), float(value), rel_tol=1e-6)]
        if not hit:
            return False
    return True


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


def _f(v, digits=3) -> str:
    if v is None:
        return "-"
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("0.") else s


def _setting(r: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["setting"].items()) or "defaults"


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
    head = "| attack, setting | " + " | ".join(f"{CORPORA[c]} ours | {CORPORA[c]} study" for c in CORPORA) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(CORPORA))]
    notes = []
    clean = ["| clean, whole test set (no attack)"]
    for c in CORPORA:
        m = models.get(c)
        t = _bundle_test_metrics(m) if m else None
        clean.append(" / ".join(_f(t[k]) for k in ("accuracy", "accuracy_male", "accuracy_female"))
                     if t else "not run")
        clean.append(" / ".join(_f(v) for v in STUDY_CLEAN[c]))
    lines.append(" | ".join(clean) + " |")
    for label, attack, want, study in STUDY_TABLE:
        cells = [f"| {label}"]
        for c in CORPORA:
            got = by[(label, c)]
            if got[0]["ours"] is None:
                cells += ["not run", " / ".join(_f(v) for v in study[c])]
                continue
            parts = []
            for g in got:
                parts.append(_f(g["ours"]) + ("" if g["within"] else " ⚠"))
                if not g["within"]:
                    notes.append(f"- {label}, {CORPORA[c]} {g['subset']}: ours {_f(g['ours'])} vs study {_f(g['study'])} "
                                 f"(n={g['n']}): {g['reason']}")
            cells += [" / ".join(parts), " / ".join(_f(v) for v in study[c])]
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
                f"[{_f(lo)}, {_f(hi)}] on {g['n']} examples")
    if g["clean_accuracy"] is not None and abs(g["clean_accuracy"] - ref_clean) > MARGIN:
        return (f"our model starts elsewhere: clean accuracy {_f(g['clean_accuracy'])} on these examples "
                f"vs the study's {_f(ref_clean)}")
    restored, n, counted = _restored(g), g["n"], g.get("restored") is not None
    wrong = n - g["clean_correct"] if g.get("clean_correct") is not None else None
    excess = g["correct"] - ref * n  # examples counted correct beyond the study's rate
    if g["accuracy"] > ref and (counted or restored >= excess / 2 > 0):
        if counted:
            kept = g["correct"] - restored
            why = (f"{kept} of the {g['clean_correct']} examples the model got right keep their label through "
                   f"the attack ({_f(kept / n)} of the accuracy), and {restored} of the {wrong} it got wrong end "
                   f"on their true label ({_f(restored / n)})")
        else:
            changed = "every one" if not g["unchanged"] else f"all but {g['unchanged']}"
            why = (f"the attack changed the decision on {changed} of the {n} examples, so at least {restored} "
                   f"of the {g['correct']} counted correct were among the {wrong} the model got wrong before "
                   f"it, moved onto their true label")
        if restored >= excess / 2:
            why += (f". Our attacks move away from the model's decision toward the nearest other class, "
                    f"which for a wrong decision is often the true one; without those, accuracy would be "
                    f"{_f((g['correct'] - restored) / n)}")
            if attack == "jsma" and corpus:  # ART's SaliencyMapMethod without labels: a random target
                k = len(corpus_spec(corpus).paper_classes)
                why += (f". ART's JSMA (the study's) draws a random other class as its target when given no "
                        f"labels, the true one 1 time in {k - 1}, which would leave about "
                        f"{_f((g['correct'] - restored + wrong / (k - 1)) / n)}")
        else:
            why += ": the attack leaves more of the right decisions standing than the study's did on its model"
        return (f"outside our 95 % interval [{_f(lo)}, {_f(hi)}] with the same clean accuracy; the data shows "
                f"where: {why}")
    return (f"outside our 95 % interval [{_f(lo)}, {_f(hi)}] with the same clean accuracy: an "
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


def grid_table(rows: list[dict], model: str) -> list[str]:
    rs = [r for r in rows if r["model"] == model]
    by = defaultdict(dict)
    for r in rs:
        by[(r["attack"], r["setting_key"])][r["subset"]] = r
    lines = ["| attack | setting | accuracy all [95 % CI] (n) | male (n) | female (n) | clean all | mean abs | L2 | Linf "
             "| confidence before -> after | queries | s / example | torch-ONNX agreement |",
             "|" + "---|" * 13]
    for (attack, _), sub in by.items():
        a = sub.get("all")
        if not a:
            continue
        g = {s: sub.get(s) for s in ("male", "female")}
        lines.append(" | ".join([
            f"| {attack}", _setting(a),
            f"{_f(a['accuracy'])} [{_f(a['accuracy_ci'][0])}, {_f(a['accuracy_ci'][1])}] ({a['n']})",
            *[f"{_f(g[s]['accuracy'])} ({g[s]['n']})" if g[s] else "-" for s in ("male", "female")],
            _f(a["clean_accuracy"]), f"{a['mean_abs']:.4g}", f"{a['l2']:.4g}", f"{a['linf']:.4g}",
            f"{_f(a['confidence_before'])} -> {_f(a['confidence_after'])}",
            f"{a['queries']:.0f}" if a["kind"] == "black-box" else "-",
            f"{a['seconds_per_example']:.3g}",
            _f(a.get("torch_onnx_agreement")) if "torch_onnx_agreement" in a else "-"]) + " |")
    return lines


def differences(rows: list[dict], protocol: str = "speaker") -> list[str]:
    """Where genders, languages and protocols differ (Newcombe interval excluding 0)."""
    rs = [r for r in rows if not r.get("defence")]
    cells = defaultdict(dict)
    for r in rs:
        cells[(r["protocol"], r["corpus"], r["attack"], r["setting_key"])][r["subset"]] = r
    out = []
    # genders
    tested, found = 0, []
    for (p, c, attack, key), sub in cells.items():
        if p != protocol or "male" not in sub or "female" not in sub:
            continue
        m, f = sub["male"], sub["female"]
        d, lo, hi = newcombe_difference(m["correct"], m["n"], f["correct"], f["n"])
        tested += 1
        if lo > 0 or hi < 0:
            found.append(f"- {CORPORA[c]}, {attack} {_setting(m)}: male {_f(m['accuracy'])} ({m['correct']}/{m['n']}) "
                         f"vs female {_f(f['accuracy'])} ({f['correct']}/{f['n']}), difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    widths = [newcombe_difference(s["male"]["correct"], s["male"]["n"], s["female"]["correct"], s["female"]["n"])
              for (p, *_), s in cells.items() if p == protocol and "male" in s and "female" in s]
    typical = sorted(h - l for _, l, h in widths)[len(widths) // 2] / 2 if widths else float("nan")
    out.append(f"**Genders** ({protocol} protocol): {len(found)} of {tested} attack settings show a male/female "
               f"difference whose 95 % Newcombe interval excludes 0"
               + (f"; with these sample sizes the typical interval is +/- {typical:.2f}, so smaller gaps cannot be seen." if widths else "."))
    out += found
    # languages: every pair of corpora at the same attack setting, all speakers
    tested, found = 0, []
    keys = {(a, k) for (p, c, a, k) in cells if p == protocol}
    for attack, key in sorted(keys):
        present = [c for c in CORPORA if "all" in cells.get((protocol, c, attack, key), {})]
        for i, c1 in enumerate(present):
            for c2 in present[i + 1:]:
                a, b = cells[(protocol, c1, attack, key)]["all"], cells[(protocol, c2, attack, key)]["all"]
                d, lo, hi = newcombe_difference(a["correct"], a["n"], b["correct"], b["n"])
                tested += 1
                if lo > 0 or hi < 0:
                    found.append(f"- {attack} {_setting(a)}: {CORPORA[c1]} {_f(a['accuracy'])} ({a['correct']}/{a['n']}) "
                                 f"vs {CORPORA[c2]} {_f(b['accuracy'])} ({b['correct']}/{b['n']}), "
                                 f"difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    out.append("")
    out.append(f"**Languages** ({protocol} protocol): {len(found)} of {tested} corpus pairs at equal attack settings differ "
               f"(95 % Newcombe interval excluding 0).")
    out += found
    # protocols: paper vs speaker model of the same corpus
    tested, found = 0, []
    for (p, c, attack, key), sub in cells.items():
        other = cells.get(("paper", c, attack, key), {})
        if p != "speaker" or "all" not in sub or "all" not in other:
            continue
        a, b = sub["all"], other["all"]
        d, lo, hi = newcombe_difference(a["correct"], a["n"], b["correct"], b["n"])
        tested += 1
        if lo > 0 or hi < 0:
            found.append(f"- {CORPORA[c]}, {attack} {_setting(a)}: speaker {_f(a['accuracy'])} ({a['correct']}/{a['n']}) "
                         f"vs paper {_f(b['accuracy'])} ({b['correct']}/{b['n']}), difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    out.append("")
    out.append(f"**Protocols**: {len(found)} of {tested} (corpus, attack setting) pairs differ between the speaker and "
               f"the paper model.")
    out += found
    return out


def transfer_lines(rows: list[dict]) -> list[str]:
    rs = [r for r in rows if r["subset"] == "all" and "torch_onnx_agreement" in r]
    if not rs:
        return ["No white-box rows yet."]
    lines = ["| model | attack | setting | n | accuracy (ONNX) | accuracy (torch) | decisions agree |", "|---|---|---|---|---|---|---|"]
    for r in rs:
        lines.append(f"| {r['model']} | {r['attack']} | {_setting(r)} | {r['n']} | {_f(r['accuracy'])} | "
                     f"{_f(r['torch_accuracy'])} | {_f(r['torch_onnx_agreement'])} |")
    agree = sum(r["torch_onnx_agreement"] * r["n"] for r in rs) / sum(r["n"] for r in rs)
    return [f"Over {sum(r['n'] for r in rs)} attacked examples, ONNX Runtime and the torch model take the same "
            f"decision on {agree:.1%} of the adversarial inputs.", ""] + lines


# The study's defended models (PAPER.md "Defence the authors tried": FGSM adversarial training,
# eps 1.25, 60 % adversarial, 30 epochs, lr 1e-4, batch 128): the range over its three corpora,
# (low, high), per row of STUDY_TABLE it reported; clean accuracy 0.90-0.92.
STUDY_DEFENCE_CLEAN = (.90, .92)
STUDY_DEFENCE = {"FGSM 1.25": (.68, .89), "BIM (any eps)": (.06, .06), "DeepFool 5 it": (.05, .06),
                 "JSMA theta 1": (.02, .04), "CW-Linf": (.06, .06), "Pixel th 10": (.32, .56),
                 "Boundary": (.03, .20)}
def _study_defence(attack: str, setting: dict) -> str:
    for label, name, want, _ in STUDY_TABLE:
        if name == attack and matches(setting, want) and label in STUDY_DEFENCE:
            lo, hi = STUDY_DEFENCE[label]
            return _f(lo, 2) if lo == hi else f"{_f(lo, 2)}-{_f(hi, 2)}"
    return "not reported"


def _cell(r: dict | None) -> str:
    if not r:
        return "not run"
    lo, hi = r["accuracy_ci"]
    return f"{_f(r['accuracy'])} ({r['correct']}/{r['n']}) [{_f(lo, 2)}, {_f(hi, 2)}]"


def defence_lines(rows: list[dict]) -> list[str]:
    """Each defended bundle beside the bundle it was trained from: the recipe and the commands
    that rebuild and re-measure it, clean accuracy on the whole test set, and accuracy under
    every attack setting on the same examples, next to the study's defended figures."""
    dr = [r for r in rows if r.get("defence")]
    if not dr:
        return ["No defended bundle was evaluated in this run (see `python -m export defend`)."]
    out = []
    for base in dict.fromkeys(r["base_model"] for r in dr):
        defended = list(dict.fromkeys(r["model"] for r in dr if r["base_model"] == base))
        first = {m: next(r for r in dr if r["model"] == m) for m in defended}
        cfgs = {m: first[m].get("defence_config") or {"method": first[m]["defence"], "base": base} for m in defended}
        out += [f"### {base} and its adversarially trained versions", "",
                f"Started from `{base}` and fine-tuned on its own training rows (same split); "
                "every attack below ran on the same test examples for all of them (the first n of the same "
                "class- and gender-balanced order). The study's figures are its FGSM-trained models, the range "
                "over its three corpora (PAPER.md, 'Defence the authors tried'); it did not try PGD training.", ""]
        for m in defended:
            d = cfgs[m]
            ours = "the study's recipe" if is_study_recipe(d) else "our choice, not the study's"
            extra = f", {d['pgd_steps']} PGD steps of 2.5 eps / steps from a random start" if d.get("method") == "pgd-at" else ""
            secs = d.get("training_seconds")
            out.append(f"- **{m}**: {d.get('method')} ({ours}): eps {d.get('eps')}{extra}, "
                       f"{d.get('adversarial_fraction', 0) * 100:.0f} % of each batch adversarial, "
                       f"{d.get('trained_epochs', d.get('epochs'))} epochs ({d.get('trained_steps', '?')} steps), "
                       f"lr {d.get('learning_rate')}, batch {d.get('batch_size')}"
                       + (f"; trained in {secs / 60:.1f} min on {d.get('hardware')}" if secs else "") + ".")
        missing = [f"{m}-at" for m in ("fgsm", "pgd") if f"{m}-at" not in {cfgs[d].get("method") for d in defended}]
        if missing:
            out.append(f"- Not in these results: {', '.join(missing)} of `{base}` (`python -m export defend "
                       f"--model {base} --method {missing[0].removesuffix('-at')} --out models-defended/{base}-"
                       f"{missing[0].removesuffix('-at')}`, then the evaluate command below with its folder).")
        out += ["", "Rebuild and re-measure (the defended bundles are not committed: weight budget):", "", "```"]
        out += [defend_command(cfgs[m]) for m in defended]
        folders = ",".join(cfgs[m].get("folder", m) for m in defended)
        profile = dr[0].get("profile", "quick")
        out += [f"python -m export evaluate --profile {profile} --models {folders} --out reports --threads 1 --no-report",
                f"python -m export report --results reports/results-{profile}.jsonl --out reports", "```", ""]
        # clean accuracy on the whole test set
        base_t = _bundle_test_metrics(base)
        out += ["Clean accuracy on the whole test set, all / male / female (examples):", "",
                "| model | defence | all | male | female |", "|---|---|---|---|---|"]

        def clean_row(name, defence, t):
            if not t:
                return f"| {name} | {defence} | not recorded | | |"
            return (f"| {name} | {defence} | {_f(t['accuracy'])} ({t['n']}) | {_f(t.get('accuracy_male'))} "
                    f"({t.get('n_male', '-')}) | {_f(t.get('accuracy_female'))} ({t.get('n_female', '-')}) |")
        out.append(clean_row(base, "none", base_t))
        for m in defended:
            out.append(clean_row(m, cfgs[m].get("method"), first[m].get("bundle_test_metrics")))
        lo, hi = STUDY_DEFENCE_CLEAN
        out += [f"| study, FGSM-trained (3 corpora) | fgsm-at | {_f(lo, 2)}-{_f(hi, 2)} | | |", ""]
        # under attack
        idx = {(r["model"], r["attack"], r["setting_key"]): r for r in rows if r["subset"] == "all"}
        cells = list(dict.fromkeys((r["attack"], r["setting_key"]) for r in rows
                                   if r["subset"] == "all" and r["model"] in [base, *defended]))
        out += ["Accuracy under attack, all speakers: accuracy (correct/n) [95 % Wilson interval]; male and "
                "female figures are in the whole grid below. The study's BIM figure is one for all its eps "
                "settings; 'not reported': the study gave no defended figure for that attack.", "",
                "| attack | setting | " + " | ".join([f"{base} (undefended)", *defended]) + " | study, FGSM-trained |",
                "|" + "---|" * (4 + len(defended))]
        for attack, key in cells:
            rs = [idx.get((m, attack, key)) for m in [base, *defended]]
            any_r = next(r for r in rs if r)
            out.append(f"| {attack} | {_setting(any_r)} | " + " | ".join(_cell(r) for r in rs)
                       + f" | {_study_defence(attack, any_r['setting'])} |")
        out.append("")
    return out


def examples_lines(rows: list[dict]) -> list[str]:
    """How many examples stand behind each attack's figures, per model (all / male / female)."""
    by = defaultdict(dict)
    for r in rows:
        by[(r["model"], r["attack"])].setdefault(r["subset"], r["n"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    lines = ["| attack | " + " | ".join(models) + " |", "|" + "---|" * (1 + len(models))]
    for a in attacks:
        cells = []
        for m in models:
            n = by.get((m, a))
            cells.append(f"{n.get('all', 0)} ({n.get('male', 0)} m / {n.get('female', 0)} f)" if n else "-")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    tests = {r["model"]: r.get("test_examples", {}).get("all") for r in rows}
    lines += ["", "Test-set sizes: " + ", ".join(f"{m} {tests[m]}" for m in models) + ". "
              "A subset is the first n of a class- and gender-balanced order of the test set (so 10 "
              "examples are one per class and gender, and a smaller subset is inside a larger one); "
              "with n = 2 a 95 % Wilson interval spans about 0.8 whatever the accuracy, so such cells "
              "show that the attack runs and roughly where it lands, not a rate to compare."]
    return lines


def waveform_lines(wrows: list[dict]) -> list[str]:
    """Verified success of the waveform attacks against SNR, per corpus and gender."""
    from ser_core.evaluation.waveform import summarise
    if not wrows:
        return ["No waveform results in this folder yet (`python -m export evaluate --profile quick --waveform`)."]
    lines = ["Attacks on the decoded samples of whole clips of the held-out test speakers "
             "(ser_core.attacks.waveform); a clip counts as fooled only when the serving path (decode, trim, "
             "chunks, librosa log-Mel, standardiser, ONNX Runtime) decides differently on the adversarial "
             "clip written as a 16-bit WAV and read back. SNR is that of the written clip against the clean "
             "one; PGD's budget is the lowest SNR allowed (it stops at the first verified flip, so its "
             "achieved SNR is often higher); C&W searches for the smallest perturbation and its SNR is the "
             "SNR it needed; Square, black-box, queries the serving path only (queries are clips it scored) "
             "and moves every sample by the whole budget, so its SNR is the budget's. 'Chunking changed' "
             "counts clips whose written WAV trims or splits into 3 s chunks differently from the clean clip: "
             "the white-box attacks hold the clean chunking fixed, and a flip of their model then need not "
             "survive the serving path's own chunking.", "",
             "| corpus | attack | subset | clips | verified flips | rate [95 % CI] | lost to 16-bit rounding "
             "| chunking changed | median SNR of flips (dB) | median queries | median s |",
             "|" + "---|" * 11]
    for s in summarise(wrows):
        lines.append(f"| {CORPORA.get(s['corpus'], s['corpus'])} | {s['setting']} | {s['subset']} | {s['clips']} | "
                     f"{s['verified']} | {_f(s['rate'], 2)} [{_f(s['rate_ci'][0], 2)}, {_f(s['rate_ci'][1], 2)}] | "
                     f"{s['lost_to_rounding']} | {s['chunking_changed']} | "
                     f"{'-' if s['median_snr_db'] is None else format(s['median_snr_db'], '.1f')} | "
                     f"{s['median_queries']:.0f} | {s['median_seconds']:.1f} |")
    return lines


def plot(rows: list[dict], out_dir: Path) -> list[Path]:
    """accuracy_<protocol>.png: accuracy against attack setting, per corpus and gender (95 %
    Wilson bars); confidence_<protocol>.png: mean top-class confidence before and after."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for protocol in sorted({r["protocol"] for r in rows}):
        rs = [r for r in rows if r["protocol"] == protocol and not r.get("defence")]
        corpora = [c for c in CORPORA if any(r["corpus"] == c for r in rs)]
        attacks = list(dict.fromkeys(r["attack"] for r in rs))
        if not corpora or not attacks:
            continue
        fig, axes = plt.subplots(len(corpora), len(attacks), figsize=(2.6 * len(attacks), 2.4 * len(corpora)),
                                 squeeze=False, sharey=True)
        for i, c in enumerate(corpora):
            for j, a in enumerate(attacks):
                ax = axes[i][j]
                for s, colour in zip(SUBSETS, ("k", "tab:blue", "tab:red")):
                    pts = [r for r in rs if r["corpus"] == c and r["attack"] == a and r["subset"] == s]
                    if not pts:
                        continue
                    xs = range(len(pts))
                    ys = [r["accuracy"] for r in pts]
                    err = [[y - r["accuracy_ci"][0] for y, r in zip(ys, pts)], [r["accuracy_ci"][1] - y for y, r in zip(ys, pts)]]
                    ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, color=colour, label=s, lw=1)
                    ax.set_xticks(list(xs), [_strength(r) for r in pts], fontsize=6)
                ax.set_ylim(-0.02, 1.02)
                if i == 0:
                    ax.set_title(a, fontsize=9)
                if j == 0:
                    ax.set_ylabel(f"{CORPORA[c]}\naccuracy", fontsize=8)
        axes[0][0].legend(fontsize=6)
        fig.suptitle(f"Accuracy under attack, {protocol} protocol (95 % Wilson intervals)", fontsize=10)
        fig.tight_layout()
        p = out_dir / f"accuracy_{protocol}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
        fig, axes = plt.subplots(len(corpora), 1, figsize=(max(6, 0.35 * len(rs) / 3 / len(corpora) + 3), 2.4 * len(corpora)),
                                 squeeze=False)
        for i, c in enumerate(corpora):
            ax = axes[i][0]
            pts = [r for r in rs if r["corpus"] == c and r["subset"] == "all"]
            xs = range(len(pts))
            ax.bar([x - 0.2 for x in xs], [r["confidence_before"] for r in pts], 0.4, label="before", color="tab:gray")
            ax.bar([x + 0.2 for x in xs], [r["confidence_after"] for r in pts], 0.4, label="after", color="tab:orange")
            ax.set_xticks(list(xs), [f"{r['attack']} {_strength(r)}" for r in pts], rotation=60, ha="right", fontsize=6)
            ax.set_ylim(0, 1)
            ax.set_ylabel(f"{CORPORA[c]}\nconfidence", fontsize=8)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(f"Mean top-class confidence before and after attack, {protocol} protocol", fontsize=10)
        fig.tight_layout()
        p = out_dir / f"confidence_{protocol}.png"
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def _strength(r: dict) -> str:
    """The setting's value(s) in short, for axis ticks."""
    return "/".join(f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in r["setting"].values()) or "-"


def write_report(rows: list[dict], out_dir, profile: str = "quick", wall_seconds: float | None = None,
                 waveform_rows: list[dict] | None = None, superseded: dict[str, int] | None = None) -> str:
    """waveform_rows: per-clip rows of the waveform part; by default read from
    results-<profile>-waveform.jsonl in out_dir. superseded: rows left out per model, measured
    on earlier weights (`current_rows`), named in the report."""
    out_dir = Path(out_dir)
    if waveform_rows is None:
        waveform_rows = read_rows(out_dir / f"results-{profile}-waveform.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = plot(rows, out_dir / "plots")
    models = list(dict.fromkeys(r["model"] for r in rows))
    attacks = list(dict.fromkeys(r["attack"] for r in rows))
    attack_seconds = sum(r["seconds"] for r in rows if r["subset"] == "all" and not r.get("defence"))
    defended_seconds = sum(r["seconds"] for r in rows if r["subset"] == "all" and r.get("defence"))
    attack_cpu = sum(r.get("cpu_seconds") or 0.0 for r in rows if r["subset"] == "all" and not r.get("defence"))
    proj = project_full(rows)
    L = ["# Adversarial attacks against speech emotion recognition: the systematic evaluation", "",
         "Generated by `python -m export evaluate` (ser_core/evaluation) from the tidy results file beside this "
         "report (one JSON line per model x attack x setting x subset). The study: Facchinetti, Simonetta, "
         "Ntalampiras 2024 (../shared/PAPER.md). All figures are measured in this run; accuracy under attack is "
         "over all attacked examples against the true labels (an example already misclassified counts as an error).",
         "", f"- Profile: **{profile}**; models: {', '.join(models)}; attacks: {', '.join(attacks)}.",
         "- Examples attacked per model: see 'Examples behind each figure' (the counts differ by attack "
         "family: the study's C&W, Pixel and Boundary cost 10-1000 times FGSM per example).",
         f"- Attack time measured: {attack_seconds / 60:.1f} min of attack computation"
         + (f" ({attack_cpu / 3600:.2f} CPU-hours: the wall minutes grow when the machine is shared)"
            if attack_cpu else "")
         + (f" (and {defended_seconds / 60:.1f} min on the defended bundles)" if defended_seconds else "")
         + (f", {wall_seconds / 60:.1f} min wall clock for the whole run" if wall_seconds else "")
         + f" on {', '.join(sorted({r['device'] for r in rows}))}.",
         f"- Full profile (every test example) projected from the CPU seconds per example measured here: "
         f"{proj['total_seconds'] / 3600:.1f} CPU-hours for these {len(proj['per_model_seconds'])} models and "
         f"{len(attacks)} attacks on this machine "
         f"(study: about {STUDY_GPU_HOURS} GPU-hours for its grid with ART)."]
    if superseded:
        L += [f"- Left out: rows measured on earlier weights of a model since retrained ("
              + ", ".join(f"{m}: {n}" for m, n in superseded.items())
              + "); its cells appear as they are rerun on the weights it has now."]
    L += [""]
    L += ["## Examples behind each figure", "", "Examples attacked per model and attack (every setting of "
          "an attack uses the same examples):", ""] + examples_lines(rows) + [""]
    L += ["## Paper protocol: our numbers beside the study's", "",
          "Accuracy under attack, all / male / female. ⚠ marks a cell more than 5 points from the study's; "
          "'BIM (any eps)' pools our five eps settings, as the study reports one figure for all.", ""]
    table, notes = paper_comparison(rows)
    L += table + ["", agreement_line(paper_agreement(rows)), ""]
    if notes:
        L += ["Cells that differ by more than 5 points, and why where the data shows it:", ""] + notes + [""]
    L += ["## Speaker protocol: what the study could not show", "",
          "Models tested on speakers they never heard. Differences are called only where the 95 % Newcombe "
          "interval of the difference excludes 0; the count of examples is beside every figure.", ""]
    L += differences(rows) + [""]
    L += ["## Transfer: white-box examples crafted on torch, scored on ONNX Runtime", ""] + transfer_lines(rows) + [""]
    L += ["## Defence: adversarial training", ""] + defence_lines(rows) + [""]
    L += ["## Waveform attacks: verified success against SNR", ""] + waveform_lines(waveform_rows) + [""]
    L += ["## The whole grid", ""]
    for m in models:
        r0 = next(r for r in rows if r["model"] == m)
        L += [f"### {m} ({CORPORA.get(r0['corpus'], r0['corpus'])}, {r0['protocol']} protocol"
              + (f", defence {r0['defence']}" if r0.get("defence") else "") + ")", ""] + grid_table(rows, m) + [""]
    L += ["## Plots", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots] + [""]
    text = "\n".join(L)
    (out_dir / "README.md").write_text(text)
    return text


def _bundle_test_metrics(model: str) -> dict | None:
    """The bundle's clean test metrics on its whole test set (config.json), not the attacked subset."""
    from ser_core.models.bundle import MODELS_DIR
    for folder in (MODELS_DIR / model, Path(model)):
        if (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text())["metrics"]["test"]
    return None
