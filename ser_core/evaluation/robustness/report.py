"""Suite rows -> robust accuracy with its intervals, and the Markdown tables of the report.

Robust accuracy at a budget: the share of clips decided correctly that no suite member flipped
inside the budget (clips wrong before any attack count as not robust), with a 95 % Wilson
interval and a 95 % speaker-bootstrap interval (clips of one speaker are not independent;
ser_core/stats.py); per class and per gender with Wilson intervals. Member contributions: how
many flips each member found first in the suite's order (what it adds to the earlier members),
and, where every member ran on every clip (`every_member`), each member's own accuracy. The
median flip SNR is over the clips decided correctly, a clip that held against every run counting
as above every SNR (so the median is "held" when half of them held)."""
from __future__ import annotations

import numpy as np

from ser_core.stats import speaker_bootstrap, wilson


def _ci(lo_hi) -> str:
    return f"{lo_hi[0]:.2f}-{lo_hi[1]:.2f}"


def summarise(rows: list[dict], labels: list[str], members=("apgd-ce", "apgd-t", "square", "cw")) -> dict:
    """Figures of one model and variant's rows (one a clip)."""
    n = len(rows)
    if not n:
        return {"n": 0}
    y = np.array([r["label"] for r in rows])
    spk = np.array([r["speaker"] for r in rows])
    gender = np.array([r["gender"] for r in rows])
    clean = np.array([r["clean_correct"] for r in rows])
    out = {"n": n, "speakers": sorted(set(spk)), "clean_correct": int(clean.sum()),
           "clean_accuracy": float(clean.mean()), "clean_wilson95": list(wilson(int(clean.sum()), n)),
           "cpu_seconds": round(float(sum(r["cpu_seconds"] for r in rows)), 1),
           "median_cpu_seconds": round(float(np.median([r["cpu_seconds"] for r in rows])), 2), "budgets": {}}
    snrs = [(np.inf if r["flip_snr_db"] is None else r["flip_snr_db"]) for r in rows if r["clean_correct"]]
    med = float(np.median(snrs)) if snrs else None
    out["median_flip_snr_db"] = None if med is None or np.isinf(med) else round(med, 1)
    out["held_every_run"] = int(sum(np.isinf(s) for s in snrs))
    for key in rows[0]["budgets"]:
        robust = np.array([r["budgets"][key]["robust"] for r in rows])
        k = int(robust.sum())
        pred = np.where(robust, y, (y + 1) % len(labels))  # any wrong class: accuracy is all that is read
        b = {"robust": k, "robust_accuracy": k / n, "wilson95": list(wilson(k, n)),
             "speaker_bootstrap95": speaker_bootstrap(y, pred, spk, len(labels), keys=("accuracy",))["accuracy"],
             "per_class": {}, "per_gender": {}, "found_first": {}, "member_accuracy": {}}
        for c, name in enumerate(labels):
            m = y == c
            if m.any():
                b["per_class"][name] = [int(robust[m].sum()), int(m.sum())]
        for g in ("male", "female"):
            m = gender == g
            b["per_gender"][g] = [int(robust[m].sum()), int(m.sum()), list(wilson(int(robust[m].sum()), int(m.sum())))]
        for r in rows:
            who = r["budgets"][key]["found_by"]
            if who is not None:
                member = who.split("@")[0]
                b["found_first"][member] = b["found_first"].get(member, 0) + 1
        for m in members:
            vals = [r["budgets"][key]["member_correct"].get(m) for r in rows]
            if vals and all(v is not None for v in vals):
                b["member_accuracy"][m] = sum(vals) / n
        out["budgets"][key] = b
    return out


def suite_table(summaries: dict[str, dict]) -> str:
    """name -> summary: one line per name and budget."""
    lines = ["| model | budget | n (speakers) | clean | robust accuracy | Wilson 95 % | speaker bootstrap 95 % "
             "| male | female | median flip SNR | CPU s (median a clip) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in summaries.items():
        if not s.get("n"):
            continue
        for key, b in s["budgets"].items():
            g = b["per_gender"]
            snr = "held" if s["median_flip_snr_db"] is None else f"{s['median_flip_snr_db']:.1f} dB"
            lines.append(f"| {name} | {key} | {s['n']} ({len(s['speakers'])}) | {s['clean_accuracy']:.2f} "
                         f"| {b['robust']}/{s['n']} = {b['robust_accuracy']:.2f} | {_ci(b['wilson95'])} "
                         f"| {_ci(b['speaker_bootstrap95'])} | {g['male'][0]}/{g['male'][1]} | {g['female'][0]}/{g['female'][1]} "
                         f"| {snr} | {s['cpu_seconds']:.0f} ({s['median_cpu_seconds']:.1f}) |")
    return "\n".join(lines)


def class_table(name: str, s: dict) -> str:
    keys = list(s["budgets"])
    classes = list(s["budgets"][keys[0]]["per_class"])
    lines = [f"| {name}: class | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for c in classes:
        lines.append(f"| {c} | " + " | ".join("{}/{}".format(*s["budgets"][k]["per_class"][c]) for k in keys) + " |")
    return "\n".join(lines)


def members_table(name: str, s: dict, members=("apgd-ce", "apgd-t", "square", "cw")) -> str:
    """Per budget: flips each member found first (suite order), and its own accuracy where known."""
    lines = [f"| {name}: budget | " + " | ".join(f"{m}: first / alone" for m in members) + " |",
             "|---|" + "---|" * len(members)]
    for key, b in s["budgets"].items():
        cells = []
        for m in members:
            alone = b["member_accuracy"].get(m)
            cells.append(f"{b['found_first'].get(m, 0)} / " + ("-" if alone is None else f"{alone:.2f}"))
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
