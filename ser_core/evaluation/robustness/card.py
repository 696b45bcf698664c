"""A bundle's measured robustness, written into the bundle: config.json's "robustness" block and a
section of its model card, so the app and the card read the figures from the bundle and never
recompute them (`python -m export robustness-card --model M`).

Which rows count for a bundle (from a robustness folder, reports/robustness by default):
  - a bundle behind an input defence (config "defended_from", `defend-input`): the rows of
    `robustness-defences` (defences.jsonl) of its base model with the same defence chain,
    attacked adaptively (APGD-CE with BPDA/EOT, and Square on the defended serving path);
  - any other bundle: its suite rows (suite.jsonl) with its name and weights and no defence in
    front, the suite run (settings) with the most clips.
The block holds, per budget, the robust clips, n, the 95 % Wilson and speaker-bootstrap
intervals, and the clips, suite and file they came from."""
from __future__ import annotations

import json
from pathlib import Path

from ser_core.evaluation.robustness.report import summarise
from ser_core.evaluation.robustness.run import read_results

CARD_MARK = "<!-- robustness: python -m export robustness-card -->"


def bundle_rows(bundle, folder, undefended: bool = False) -> tuple[str, list[dict]]:
    """(results file, the rows that measure `bundle`) from robustness folder `folder`; for a
    bundle behind an input defence, with `undefended` its base's rows on the same clips instead."""
    folder = Path(folder)
    base = bundle.config.get("defended_from")
    if base and bundle.defence is not None:
        spec = None if undefended else bundle.defence.to_config()
        rows = [r for r in read_results(folder / "defences.jsonl") if r["model"] == base
                and (undefended or r.get("view") == "adaptive") and r.get("defence_spec") == spec]
        return "defences.jsonl", rows
    rows = [r for r in read_results(folder / "suite.jsonl") if r["model"] == bundle.name
            and r.get("weights_sha") == bundle.config.get("weights_sha") and r.get("defence") is None]
    groups: dict[str, list] = {}
    for r in rows:
        groups.setdefault(r["suite"], []).append(r)
    return "suite.jsonl", max(groups.values(), key=len, default=[])


def robustness_block(bundle, folder) -> dict | None:
    """The "robustness" block of `bundle` from robustness folder `folder`; None without rows."""
    source, rows = bundle_rows(bundle, folder)
    if not rows:
        return None
    s = summarise(rows, rows[0]["labels"])
    members = sorted({run["member"] for r in rows for run in r["runs"]})
    _, plain = bundle_rows(bundle, folder, undefended=True) if bundle.config.get("defended_from") else ("", [])
    plain = [r for r in plain if r["clip"] in {q["clip"] for q in rows}]
    return {"source": str(Path(folder) / source), "suite": rows[0]["suite"], "n": s["n"],
            "speakers": s["speakers"], "clean_correct": s["clean_correct"], "members": members,
            "view": rows[0].get("view"), "defence": rows[0].get("defence"),
            "median_flip_snr_db": s["median_flip_snr_db"],
            "budgets": {k: {"robust": b["robust"], "n": s["n"], "accuracy": round(b["robust_accuracy"], 4),
                            "wilson95": [round(v, 4) for v in b["wilson95"]],
                            "speaker_bootstrap95": [round(v, 4) for v in b["speaker_bootstrap95"]]}
                        for k, b in s["budgets"].items()},
            "undefended": {k: [sum(r["budgets"][k]["robust"] for r in plain), len(plain)]
                           for k in s["budgets"]} if plain else None,
            "verdict": _verdicts(bundle, folder, rows, plain) if plain else None}


def _verdicts(bundle, folder, rows, plain) -> dict:
    """budget -> the report's verdict on the bundle's input defence (naive and through views
    against the adaptive one and the undefended model; defences.verdict)."""
    from ser_core.evaluation.robustness.defences import robust_share, verdict
    spec = bundle.defence.to_config()
    clips = {r["clip"] for r in rows}
    views = {v: [r for r in read_results(Path(folder) / "defences.jsonl") if r.get("defence_spec") == spec
                 and r.get("view") == v and r["clip"] in clips] for v in ("ignore", "through")}
    if any(len(v) != len(rows) for v in views.values()):
        return {}
    return {k: verdict(robust_share(views["ignore"], k), robust_share(views["through"], k), robust_share(rows, k),
                       robust_share(plain, k)) for k in rows[0]["budgets"]}


def card_section(block: dict | None) -> str:
    """The model card's robustness section (after CARD_MARK)."""
    lines = [CARD_MARK, "## Robustness (worst case over an attack suite, waveform)", ""]
    if not block:
        return "\n".join(lines + ["Not measured yet (`python -m export robustness --model NAME`, then "
                                  "`python -m export robustness-card --model NAME`).", ""])
    how = ("adaptive attacks on the defended serving path (APGD-CE with BPDA/EOT through the input defence, "
           "and Square)" if block.get("view") == "adaptive" and block.get("defence")
           else f"the suite {', '.join(block['members'])}")
    lines += [f"Robust accuracy: the share of {block['n']} held-out clips (speakers {', '.join(block['speakers'])}; "
              f"{block['clean_correct']} decided correctly before any attack) that {how} could not flip inside "
              f"the budget; every flip verified on the written 16-bit WAV. Source: `{block['source']}` "
              f"(suite {block['suite']}), docs/robustness.md.", "",
              "| budget | robust / n | robust accuracy | Wilson 95 % | speaker bootstrap 95 % |", "|---|---|---|---|---|"]
    for k, b in block["budgets"].items():
        lines.append(f"| {k} | {b['robust']}/{b['n']} | {b['accuracy']:.2f} | {b['wilson95'][0]:.2f}-"
                     f"{b['wilson95'][1]:.2f} | {b['speaker_bootstrap95'][0]:.2f}-{b['speaker_bootstrap95'][1]:.2f} |")
    if block.get("undefended"):
        u = block["undefended"]
        lines += ["", "The undefended model on the same clips: " + ", ".join(f"{v[0]}/{v[1]} at {k}" for k, v in u.items())
                  + ". Verdict (reports/robustness/README.md: naive and 'through' views against the adaptive one, "
                  "95 % Newcombe intervals): " + ", ".join(f"{v} at {k}" for k, v in (block.get("verdict") or {}).items())
                  + ". 'Only looks robust' means broken: it holds clips only while the attacker ignores it."]
    if block.get("median_flip_snr_db") is not None:
        lines += ["", f"Median flip SNR over the clips decided correctly: {block['median_flip_snr_db']:.1f} dB."]
    return "\n".join(lines + [""])


def write_block(bundle, folder) -> dict | None:
    """Write `bundle`'s robustness block into its config.json and its section into its README.md
    (before any later generated section, e.g. the universal perturbations'); the block."""
    block = robustness_block(bundle, folder)
    path = bundle.folder / "config.json"
    config = json.loads(path.read_text())
    config["robustness"] = block
    path.write_text(json.dumps(config, indent=1))
    bundle.config["robustness"] = block
    readme = bundle.folder / "README.md"
    text = readme.read_text() if readme.is_file() else ""
    head, _, rest = text.partition(CARD_MARK)
    tail = rest[rest.find("\n<!-- "):] if "\n<!-- " in rest else ""
    section = card_section(block)
    if not rest and "\n<!-- " in head:  # first time: before the first generated section
        i = head.index("\n<!-- ")
        head, tail = head[:i], head[i:]
    readme.write_text(head.rstrip("\n") + "\n\n" + section + tail)
    return block
