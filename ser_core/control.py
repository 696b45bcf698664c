"""Cooperative stopping of long work: a wall-clock deadline and a cancel signal for the run in
progress, checked by attack loops once per step.

A caller (the app, a benchmark) wraps the work in `run_control(deadline_s=..., cancel=event)`;
attack loops call `should_stop()` between steps and, when it says so, stop and return the best
result so far, marked as stopped early (`stop_reason()` says why). Outside a `run_control`
block `should_stop()` is always False, so the CLI and the evaluation run to the end as before.
The state is a context variable: each thread (each app request) sees only its own run."""
from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from dataclasses import dataclass, field


@dataclass
class RunControl:
    deadline: float | None = None  # time.monotonic() value, or None
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    reason: str | None = None

    def check(self) -> bool:
        if self.reason is None:
            if self.cancel.is_set():
                self.reason = "cancelled"
            elif self.deadline is not None and time.monotonic() >= self.deadline:
                self.reason = "deadline"
        return self.reason is not None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started


_current: contextvars.ContextVar[RunControl | None] = contextvars.ContextVar("ser_run_control",
                                                                             default=None)


@contextlib.contextmanager
def run_control(deadline_s: float | None = None, cancel: threading.Event | None = None):
    """Run the enclosed work under a deadline (seconds from now) and/or a cancel event."""
    ctl = RunControl(None if deadline_s is None else time.monotonic() + float(deadline_s),
                     cancel if cancel is not None else threading.Event())
    token = _current.set(ctl)
    try:
        yield ctl
    finally:
        _current.reset(token)


def should_stop() -> bool:
    """True once the enclosing run's deadline has passed or it was cancelled."""
    ctl = _current.get()
    return ctl is not None and ctl.check()


def stop_reason() -> str | None:
    """'deadline', 'cancelled', or None while the run may go on."""
    ctl = _current.get()
    return None if ctl is None else ctl.reason
