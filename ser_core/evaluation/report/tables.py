"""The report's own tables and text, beyond the study's table: examples behind each figure,
differences between genders, languages and protocols (Newcombe intervals), torch -> ONNX
transfer, the defended bundles beside their base, the waveform attacks, and the whole grid."""
from __future__ import annotations

from collections import defaultdict

from ser_core.data.corpora import CORPORA
from ser_core.evaluation.report.common import bundle_test_metrics, corpus_title, fmt, setting_text
from ser_core.evaluation.report.study import STUDY_DEFENCE_CLEAN, study_defence
from ser_core.stats import newcombe_difference, wilson
from ser_core.training.adversarial import defend_command, is_study_recipe


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
            f"| {attack}", setting_text(a),
            f"{fmt(a['accuracy'])} [{fmt(a['accuracy_ci'][0])}, {fmt(a['accuracy_ci'][1])}] ({a['n']})",
            *[f"{fmt(g[s]['accuracy'])} ({g[s]['n']})" if g[s] else "-" for s in ("male", "female")],
            fmt(a["clean_accuracy"]), f"{a['mean_abs']:.4g}", f"{a['l2']:.4g}", f"{a['linf']:.4g}",
            f"{fmt(a['confidence_before'])} -> {fmt(a['confidence_after'])}",
            f"{a['queries']:.0f}" if a["kind"] == "black-box" else "-",
            f"{a['seconds_per_example']:.3g}",
            fmt(a.get("torch_onnx_agreement")) if "torch_onnx_agreement" in a else "-"]) + " |")
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
            found.append(f"- {CORPORA[c].title}, {attack} {setting_text(m)}: male {fmt(m['accuracy'])} ({m['correct']}/{m['n']}) "
                         f"vs female {fmt(f['accuracy'])} ({f['correct']}/{f['n']}), difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
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
                    found.append(f"- {attack} {setting_text(a)}: {CORPORA[c1].title} {fmt(a['accuracy'])} ({a['correct']}/{a['n']}) "
                                 f"vs {CORPORA[c2].title} {fmt(b['accuracy'])} ({b['correct']}/{b['n']}), "
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
            found.append(f"- {CORPORA[c].title}, {attack} {setting_text(a)}: speaker {fmt(a['accuracy'])} ({a['correct']}/{a['n']}) "
                         f"vs paper {fmt(b['accuracy'])} ({b['correct']}/{b['n']}), difference {d:+.3f} [{lo:+.3f}, {hi:+.3f}]")
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
        lines.append(f"| {r['model']} | {r['attack']} | {setting_text(r)} | {r['n']} | {fmt(r['accuracy'])} | "
                     f"{fmt(r['torch_accuracy'])} | {fmt(r['torch_onnx_agreement'])} |")
    agree = sum(r["torch_onnx_agreement"] * r["n"] for r in rs) / sum(r["n"] for r in rs)
    return [f"Over {sum(r['n'] for r in rs)} attacked examples, ONNX Runtime and the torch model take the same "
            f"decision on {agree:.1%} of the adversarial inputs.", ""] + lines


def _cell(r: dict | None) -> str:
    if not r:
        return "not run"
    lo, hi = r["accuracy_ci"]
    return f"{fmt(r['accuracy'])} ({r['correct']}/{r['n']}) [{fmt(lo, 2)}, {fmt(hi, 2)}]"


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
        base_t = bundle_test_metrics(base)
        out += ["Clean accuracy on the whole test set, all / male / female (examples):", "",
                "| model | defence | all | male | female |", "|---|---|---|---|---|"]

        def clean_row(name, defence, t):
            if not t:
                return f"| {name} | {defence} | not recorded | | |"
            return (f"| {name} | {defence} | {fmt(t['accuracy'])} ({t['n']}) | {fmt(t.get('accuracy_male'))} "
                    f"({t.get('n_male', '-')}) | {fmt(t.get('accuracy_female'))} ({t.get('n_female', '-')}) |")
        out.append(clean_row(base, "none", base_t))
        for m in defended:
            out.append(clean_row(m, cfgs[m].get("method"), first[m].get("bundle_test_metrics")))
        lo, hi = STUDY_DEFENCE_CLEAN
        out += [f"| study, FGSM-trained (3 corpora) | fgsm-at | {fmt(lo, 2)}-{fmt(hi, 2)} | | |", ""]
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
            out.append(f"| {attack} | {setting_text(any_r)} | " + " | ".join(_cell(r) for r in rs)
                       + f" | {study_defence(attack, any_r['setting'])} |")
        out.append("")
    return out


def waveform_lines(wrows: list[dict]) -> list[str]:
    """Verified success of the waveform attacks against SNR, per corpus, setting and gender, from
    the grid's waveform cells."""
    if not wrows:
        return ["No waveform cells in this results file yet (`python -m export evaluate --profile quick "
                "--attacks apgd,pgd,cw,square`)."]
    lines = ["Attacks on the decoded samples of whole clips of the held-out test speakers "
             "(ser_core.attacks.waveform); a clip counts as fooled only when the serving path (decode, trim, "
             "chunks, librosa log-Mel, standardiser, ONNX Runtime) decides differently on the adversarial "
             "clip written as a 16-bit WAV and read back. SNR is that of the written clip against the clean "
             "one; PGD's and Auto-PGD's budget is the lowest SNR allowed (they stop at the first verified flip, "
             "so the achieved SNR is often higher); C&W searches for the smallest perturbation and its SNR is "
             "the SNR it needed; Square, black-box, queries the serving path only (queries are clips it scored) "
             "and moves every sample by the whole budget, so its SNR is the budget's. 'Chunking changed' "
             "counts clips whose written WAV trims or splits into 3 s chunks differently from the clean clip: "
             "the white-box attacks hold the clean chunking fixed, and a flip of their model then need not "
             "survive the serving path's own chunking.", "",
             "| corpus | attack, setting | subset | clips | verified flips | rate [95 % CI] | lost to 16-bit rounding "
             "| chunking changed | median SNR of flips (dB) | mean queries | s / clip |",
             "|" + "---|" * 11]
    for r in wrows:
        k = round(r["success_rate"] * r["n"]) if r["n"] else 0
        lo, hi = wilson(k, r["n"])
        lines.append(f"| {corpus_title(r['corpus'])} | {r['attack']} {setting_text(r)} | {r['subset']} | {r['n']} | "
                     f"{k} | {fmt(r['success_rate'], 2)} [{fmt(lo, 2)}, {fmt(hi, 2)}] | "
                     f"{r.get('lost_to_rounding', '-')} | {r.get('chunking_changed', '-')} | "
                     f"{'-' if r.get('median_snr_db') is None else format(r['median_snr_db'], '.1f')} | "
                     f"{fmt(r['queries'], 0)} | {fmt(r['seconds_per_example'], 1)} |")
    return lines
