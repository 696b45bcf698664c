"""Small generated fixtures: synthetic 'speech' (voiced harmonics with silence around) written
under the right corpus file names; and `wait_until`, how tests wait for something to happen."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf


def voiced(seconds: float, sr: int = 16000, f0: float = 140.0, seed: int = 0, pad: float = 0.3) -> np.ndarray:
    """Harmonic tone with a syllable-like envelope, `pad` s of near-silence either side."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 6))
    y *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    y = 0.3 * y / np.max(np.abs(y))
    silence = 1e-4 * rng.standard_normal(int(pad * sr))
    return np.concatenate([silence, y, silence]).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = 16000, subtype: str = "PCM_16") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype=subtype)
    return path


def wait_until(predicate, timeout: float = 60.0, interval: float = 0.05, what: str = "the condition"):
    """Poll `predicate()` until it returns something truthy and return that, at once; fail with
    `what` if it has not after `timeout` s. Tests synchronise on a condition this way, never on a
    sleep: a sleep long enough on an idle machine is too short on a busy one, and wasted on both.
    The timeout is a limit against hanging, set far above the expected wait."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


async def wait_until_async(predicate, timeout: float = 60.0, interval: float = 0.01,
                           what: str = "the condition"):
    """`wait_until` inside an event loop: yields to the loop between polls, so the tasks whose
    progress `predicate` watches get to run."""
    import asyncio
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


def slow_cases(cases, *slow):
    """`cases` for parametrize with those named in `slow` marked slow (a case is named by itself,
    or by its first item when it is a tuple): the fast lane (-m "not slow") keeps the quick
    cases of a test whose other cases take long."""
    def name(case):
        return case[0] if isinstance(case, tuple) else case
    return [pytest.param(*(c if isinstance(c, tuple) else (c,)), marks=pytest.mark.slow)
            if name(c) in slow else c for c in cases]
