"""Shared fixtures. Tests that need the corpora skip when ../shared/data is absent; tests that
need a trained model use SER_TEST_MODEL (default: the shipped `emodb` bundle)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SER_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "emodb").is_dir():
        pytest.skip(f"corpora not found at {DATA}")
    return DATA


@pytest.fixture(scope="session")
def bundle():
    from ser_core.bundle import ModelBundle
    return ModelBundle.load(os.environ.get("SER_TEST_MODEL", "emodb"))


@pytest.fixture(scope="session")
def test_examples(bundle, data_dir):
    """(x, labels, genders): standardised unaugmented chunks of the bundle's held-out test
    speakers (speaker protocol bundles), at most 32, balanced by gender, seeded."""
    from ser_core.corpora import read_corpus
    from ser_core.dataset import build_table
    corpus = read_corpus(bundle.config["corpus"], data_dir / bundle.config["corpus"])
    table = build_table(corpus, bundle.feature_config, augmentation=False, progress=False)
    test_speakers = bundle.config["split"]["speakers"].get("test") or sorted(set(table.speakers))
    rows = np.flatnonzero(np.isin(table.speakers, test_speakers))
    rng = np.random.default_rng(0)
    g = table.genders[rows]
    pick = np.concatenate([rng.permutation(rows[g == s])[:16] for s in ("male", "female")])
    pick = np.sort(pick)
    x = bundle.standardizer.transform(table.features[pick])
    return x, table.labels[pick], table.genders[pick]
