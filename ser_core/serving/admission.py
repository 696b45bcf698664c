"""One attack at a time on a small server, a short queue, a few per client, and a cancel that
stops the work.

Gradio's own queue has one size for every event, so attacks waiting in it would also turn
/predict away ("Queue is full"), and a cancelled event only stops awaiting its worker thread:
the attack went on while the next one started. `AttackQueue.run` is awaited by the app's
/attack handler (an async function that Gradio runs with no concurrency limit of its own):
  - refuses at once (BusyError) when `max_waiting` attacks already wait or one client (a Gradio
    session) already has `per_client` attacks running or waiting;
  - runs the work in a worker thread, one at a time, in arrival order;
  - on cancellation (the page's Stop button, gradio_client's Job.cancel, a closed page) sets the
    run's cancel event, which the attack loops check (ser_core.control), and holds the slot
    until the worker has really returned, so the next attack starts only then."""
from __future__ import annotations

import asyncio
import collections
import contextvars
import threading

from ser_core.errors import BusyError


class AttackQueue:
    def __init__(self, max_waiting: int = 4, per_client: int = 2):
        self.max_waiting = max_waiting
        self.per_client = per_client
        self._lock: asyncio.Lock | None = None
        self._inflight = 0  # running + waiting
        self._by_client: collections.Counter = collections.Counter()
        self.running = 0    # worker threads alive (0 or 1): what tests and benchmarks check
        self.max_running = 0

    @property
    def waiting(self) -> int:
        return max(0, self._inflight - 1) if self._inflight else 0

    async def run(self, client: str, work, cancel: threading.Event):
        """Run `work()` (blocking) in a worker thread when its turn comes; returns its result."""
        if self._by_client[client] >= self.per_client:
            raise BusyError(f"you already have {self._by_client[client]} attacks running or waiting "
                            f"(accepted: at most {self.per_client} per client; wait for one to finish "
                            "or stop it)")
        if self._inflight > self.max_waiting:
            raise BusyError(f"the attack queue is full ({self.max_waiting} waiting behind the one "
                            "running); try again in a minute (prediction is not affected)")
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._inflight += 1
        self._by_client[client] += 1
        try:
            async with self._lock:
                if cancel.is_set():
                    raise asyncio.CancelledError
                ctx = contextvars.copy_context()  # Gradio's progress reporting lives in it
                future = asyncio.get_running_loop().run_in_executor(None, ctx.run, self._counted, work)
                try:
                    return await asyncio.shield(future)
                except asyncio.CancelledError:
                    cancel.set()
                    while not future.done():  # hold the slot until the worker has returned
                        try:
                            await asyncio.shield(future)
                        except asyncio.CancelledError:
                            continue
                        except Exception:
                            break
                    raise
        finally:
            self._inflight -= 1
            self._by_client[client] -= 1
            if self._by_client[client] <= 0:
                del self._by_client[client]

    def _counted(self, work):
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            return work()
        finally:
            self.running -= 1
