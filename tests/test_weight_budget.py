"""The Space's file rules on what we commit under models/: each file under 10 MB (a Space refuses
larger files without LFS), all model weights together under 30 MB."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _committed(pattern: str) -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", pattern], cwd=REPO, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the committed files are unknown")
    return [REPO / line for line in out.stdout.splitlines() if line]


def test_every_committed_model_file_is_under_10_mb():
    files = _committed("models")
    assert files, "no committed model files"
    big = {str(p.relative_to(REPO)): p.stat().st_size for p in files if p.stat().st_size >= 10_000_000}
    assert not big


def test_all_committed_weights_together_are_under_30_mb():
    weights = [p for p in _committed("models") if p.name == "model.safetensors"]
    assert len(weights) >= 7  # six per-corpus bundles and the multi-corpus one
    assert sum(p.stat().st_size for p in weights) < 30_000_000
