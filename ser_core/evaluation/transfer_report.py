"""The transfer matrix's tables (Markdown) from the rows of ser_core/evaluation/transfer.py.

  matrix_table(rows, snr, confidence)   source x target: share of clips whose target decision
                                        changed, k/n and 95 % Wilson interval; the diagonal is the
                                        white-box flip rate on the same clips
  conditioned_table(...)                the same among the clips whose source decision flipped
  own_default_table(...)                per source and corpus: how often the clip's own default
                                        model (the one a visitor of that language faces) changed
  defended_table(rows, snr, ...)        one corpus's clips: its default model beside its defended
                                        bundles as targets, every source on the same clips
  cost_line(rows, ...)                  CPU seconds a clip per source (median)"""
from __future__ import annotations

import numpy as np

from ser_core.evaluation.transfer import DEFENDED, ENSEMBLE, matrix


def _cell(r: dict) -> str:
    if not r["n"]:
        return "-"
    lo, hi = r["wilson95"]
    return f"{r['k']}/{r['n']} ({100 * r['rate']:.0f}%, {100 * lo:.0f}-{100 * hi:.0f})"


def _table(rows: list[dict], snr_db: float, confidence: float, key: str) -> str:
    m = matrix(rows, snr_db, confidence)
    if not m:
        return "(no rows)"
    sources = list(dict.fromkeys(s for s, _ in m))
    targets = list(dict.fromkeys(t for _, t in m if t != "own default"))
    own = [(ENSEMBLE, "own default")] if (ENSEMBLE, "own default") in m else []
    head = "| source \\ target | " + " | ".join(targets) + (" | ensemble: each clip's own default model |" if own else " |")
    out = [head, "|---" * (len(targets) + 1 + bool(own)) + "|"]
    for s in sources:
        cells = [_cell(m[(s, t)][key]) if (s, t) in m else "-" for t in targets]
        if own:
            cells.append(_cell(m[(s, "own default")][key]) if s == ENSEMBLE else "-")
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def matrix_table(rows: list[dict], snr_db: float, confidence: float = 0.0) -> str:
    """Entry: clips whose target decision on the adversarial WAV differs from its decision on
    the clean clip, of all clips attacked on the source."""
    return _table(rows, snr_db, confidence, "changed")


def conditioned_table(rows: list[dict], snr_db: float, confidence: float = 0.0) -> str:
    """The same, among the clips whose source decision flipped (the ensemble: every member's)."""
    return _table(rows, snr_db, confidence, "changed_given_source_flip")


def own_default_table(rows: list[dict], snr_db: float, confidence: float = 0.0) -> str:
    """Per source, the share of clips whose *own corpus's default model* (the one a visitor of that
    language faces) changed its decision, by corpus of the clips and pooled: the black-box view
    for every source but that model itself."""
    from ser_core.attacks.over_the_air import rate
    rows = [r for r in rows if r["snr_db"] == snr_db and r.get("confidence", 0.0) == confidence]
    corpora = list(dict.fromkeys(r["corpus"] for r in rows))
    out = ["| source | " + " | ".join(f"{c} clips -> {c} model" for c in corpora) + " | pooled |",
           "|---" * (len(corpora) + 2) + "|"]
    for s in dict.fromkeys(r["source"] for r in rows):
        cells = []
        for group in [[c] for c in corpora] + [corpora]:
            mine = [r for r in rows if r["source"] == s and r["corpus"] in group]
            cells.append(_cell(rate(sum(r["adversarial"][r["corpus"]] != r["clean"][r["corpus"]] for r in mine),
                                    len(mine))))
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def defended_table(rows: list[dict], snr_db: float, confidence: float = 0.0, corpus: str = "emodb",
                   targets: tuple = ("emodb",) + DEFENDED, key: str = "changed") -> str:
    """Per source, over the clips of `corpus` whose row holds every one of `targets` (the same clips
    in a line, so the undefended column is comparable): share whose target decision changed (key
    "changed") or the same among the clips the source flipped ("changed_given_source_flip")."""
    from ser_core.attacks.over_the_air import rate
    rows = [r for r in rows if r["snr_db"] == snr_db and r.get("confidence", 0.0) == confidence
            and r["corpus"] == corpus and all(t in r["adversarial"] for t in targets)]
    if not rows:
        return "(no rows)"
    out = ["| source (clips) | " + " | ".join(targets) + " |", "|---" * (len(targets) + 1) + "|"]
    for s in dict.fromkeys(r["source"] for r in rows):
        mine = [r for r in rows if r["source"] == s and (key == "changed" or r["source_flipped"])]
        cells = [_cell(rate(sum(r["adversarial"][t] != r["clean"][t] for r in mine), len(mine))) for t in targets]
        out.append(f"| {s} ({len(mine)}) | " + " | ".join(cells) + " |")
    return "\n".join(out)


def cost_line(rows: list[dict], snr_db: float, confidence: float = 0.0) -> str:
    """Median CPU seconds of the attack a clip, and median written SNR, per source."""
    rows = [r for r in rows if r["snr_db"] == snr_db and r.get("confidence", 0.0) == confidence]
    parts = []
    for s in dict.fromkeys(r["source"] for r in rows):
        mine = [r for r in rows if r["source"] == s]
        snr = [r["written_snr_db"] for r in mine if r["written_snr_db"] is not None]
        parts.append(f"{s} {np.median([r['cpu_seconds'] for r in mine]):.2f} s"
                     + (f" ({np.median(snr):.1f} dB)" if snr else ""))
    return "; ".join(parts)


def settings(rows: list[dict]) -> list[tuple[float, float]]:
    """The (snr_db, confidence) pairs present, in order of appearance."""
    return list(dict.fromkeys((r["snr_db"], r.get("confidence", 0.0)) for r in rows))
