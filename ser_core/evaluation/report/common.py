"""Formatting the report's sections share: numbers as the study prints them, a setting in
words, a corpus by its display name, and a bundle's clean test metrics."""
from __future__ import annotations

import json
from pathlib import Path

from ser_core.data.corpora import CORPORA

SUBSETS = ("all", "male", "female")


def fmt(v, digits=3) -> str:
    """A figure as the study prints it: .171, not 0.171; None as '-'."""
    if v is None:
        return "-"
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("0.") else s


def setting_text(r: dict) -> str:
    """A row's setting in words: "eps 0.25, max_iter 100"."""
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["setting"].items()) or "defaults"


def corpus_title(name: str) -> str:
    """EmoDB, EMOVO, RAVDESS; a corpus not in CORPORA by its own name."""
    return CORPORA[name].title if name in CORPORA else name


def bundle_test_metrics(model: str) -> dict | None:
    """The bundle's clean test metrics on its whole test set (config.json), not the attacked subset."""
    from ser_core.models.bundle import MODELS_DIR
    for folder in (MODELS_DIR / model, Path(model)):
        if (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text())["metrics"]["test"]
    return None
