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
    from ser_core.models.bundle import ModelBundle
    return ModelBundle.load(os.environ.get("SER_TEST_MODEL", "emodb"))


@pytest.fixture(scope="session")
def test_examples(bundle, data_dir):
    """(x, labels, genders): standardised unaugmented chunks of the bundle's held-out test
    speakers (speaker protocol bundles), at most 32, balanced by gender, seeded."""
    from ser_core.data.held_out import held_out_chunks
    return held_out_chunks(bundle, data_dir)
