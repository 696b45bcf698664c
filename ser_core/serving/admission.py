"""One attack at a time on a small server, a short queue, a few per client address, a share of
the upload volume per address, and a cancel that stops the work.

  client_address  the address a quota is kept for: the connection's, or behind a proxy (a
                  Hugging Face Space) the first public address of X-Forwarded-For read from the
                  right; a new session from the same address shares the first one's quota
  AttackQueue     attacks, one at a time (below)
  UploadGate      ASGI middleware in front of Gradio's upload route (below)

Gradio's own queue has one size for every event, so attacks waiting in it would also turn
/predict away ("Queue is full"), and a cancelled event only stops awaiting its worker thread:
the attack went on while the next one started. `AttackQueue.run` is awaited by the app's
/attack handler (an async function that Gradio runs with no concurrency limit of its own):
  - refuses at once (BusyError) when `max_waiting` attacks already wait or one client address
    (`client_address`; not a Gradio session, which every new page or Client gets afresh) already
    has `per_client` attacks running or waiting;
  - runs the work in a worker thread, one at a time, in arrival order;
  - on cancellation (the page's Stop button, gradio_client's Job.cancel, a closed page) sets the
    run's cancel event, which the attack loops check (ser_core.control), and holds the slot
    until the worker has really returned, so the next attack starts only then.

Uploads reach the server before any handler runs (Gradio's /gradio_api/upload writes them to its
cache), so their caps are kept in front of that route: `UploadGate` refuses an upload that
declares no size, is larger than one request may be, would take its address past its share of
the last `window_s` seconds, or would not fit under the cache's byte cap even after pruning
(files.prune: oldest first, sparing entries younger than `min_age`). Uploads alone never take
the cache past its cap: what is on disk plus what is in flight is counted before one is let in
(the copies of outputs Gradio also writes there go by the pruning after each request and on a
timer)."""
from __future__ import annotations

import asyncio
import collections
import contextvars
import ipaddress
import threading
import time
from pathlib import Path

from ser_core.errors import BusyError
from ser_core.serving.files import folder_bytes, prune

# X-Forwarded-For entries read (from the right): a proxy chain is a few hops long.
_MAX_HOPS = 16


def _ip(text: str | None):
    """An address from a peer or a forwarded entry ('1.2.3.4', '1.2.3.4:5', '[::1]:5'), or None."""
    text = (text or "").strip().strip('"')
    if text.startswith("[") and "]" in text:
        text = text[1:text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return ip.ipv4_mapped if getattr(ip, "ipv4_mapped", None) else ip


def client_address(peer: str | None, forwarded: str | None = None) -> str:
    """The address admission quotas are kept for. `peer`: the connection's address (Gradio's
    request.client.host); `forwarded`: its X-Forwarded-For header.

    The header is believed only when the connection comes from a private or loopback address (a
    proxy in front of the server, as on a Hugging Face Space; uvicorn has already applied it for
    a proxy on 127.0.0.1), and it is read from the right, as uvicorn reads it: the first public
    address, since each proxy appends the address it saw and everything left of that is
    whatever the client chose to send. No public address: the rightmost one. An IPv6 address
    counts by its /64, the block one host or household is given."""
    ip = _ip(peer)
    if ip is None:
        return "anonymous"
    if forwarded and not ip.is_global:
        hops = [h for h in map(_ip, forwarded.split(",")[-_MAX_HOPS:]) if h is not None]
        if hops:
            ip = next((h for h in reversed(hops) if h.is_global), hops[-1])
    if ip.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


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
                            f"(accepted: at most {self.per_client} per client address; wait for one to "
                            "finish or stop it)")
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


def request_address(request) -> str:
    """`client_address` of a request (Gradio's gr.Request, or None: 'anonymous')."""
    headers = getattr(request, "headers", None) or {}
    return client_address(getattr(getattr(request, "client", None), "host", None),
                          headers.get("x-forwarded-for"))


class UploadGate:
    """ASGI middleware that admits an upload to Gradio's upload route (`path`) only within its
    caps, before a byte is written; every other request passes untouched. Refusals are plain
    text with the status a client expects: 411 no declared size, 413 larger than
    `max_request_bytes`, 429 past the address's `per_client_bytes` in the last `window_s`
    seconds, 503 no room under `max_cache_bytes` in `cache` even after pruning it.

    Installed through Gradio's launch: app_kwargs={"middleware": [Middleware(UploadGate, ...)]}."""

    def __init__(self, app, cache, max_cache_bytes: int, per_client_bytes: int, window_s: float = 600.0,
                 max_request_bytes: int | None = None, max_age: float | None = None, min_age: float = 120.0,
                 path: str = "/gradio_api/upload"):
        self.app = app
        self.cache = Path(cache)
        self.max_cache_bytes = max_cache_bytes
        self.per_client_bytes = per_client_bytes
        self.window_s = window_s
        self.max_request_bytes = max_request_bytes
        self.max_age, self.min_age = max_age, min_age
        self.path = path.rstrip("/")
        self._lock = threading.Lock()
        self._sent: dict[str, collections.deque] = {}  # address -> (when, bytes) of its uploads
        self._in_flight = 0  # bytes admitted and not yet on disk

    @classmethod
    def middleware(cls, cache, max_cache_bytes: int, per_client_bytes: int, window_s: float,
                   max_file_size: str | int, **kwargs):
        """The gate as Starlette middleware for gr.Blocks.launch(app_kwargs={"middleware": [...]});
        `max_file_size` as Gradio's launch reads it ("25mb": MiB), plus 1 MiB for the form."""
        from starlette.middleware import Middleware
        size = str(max_file_size).lower().replace(" ", "")
        units = {"kb": 1024, "mb": 1024 ** 2, "gb": 1024 ** 3, "b": 1}
        unit = next((u for u in units if size.endswith(u)), "")
        max_request = int(size[:len(size) - len(unit)]) * units.get(unit, 1) + 1024 ** 2
        return Middleware(cls, cache=cache, max_cache_bytes=max_cache_bytes, per_client_bytes=per_client_bytes,
                          window_s=window_s, max_request_bytes=max_request, **kwargs)

    async def __call__(self, scope, receive, send):
        if (scope["type"] != "http" or scope.get("method") != "POST"
                or not scope.get("path", "").rstrip("/").endswith(self.path)):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        client = client_address((scope.get("client") or (None,))[0], headers.get("x-forwarded-for"))
        length = headers.get("content-length", "")
        size = int(length) if length.isdigit() and len(length) < 16 else None
        refusal = self._admit(client, size)
        if refusal is not None:
            if size is not None and size <= (self.max_request_bytes or 0):
                await _drain(receive)  # read, not stored: the client then reads the answer
            return await _plain(send, *refusal)
        try:
            await self.app(scope, receive, send)
        finally:
            self._release(size)

    def _admit(self, client: str, size: int | None) -> tuple[int, str] | None:
        """None to let the upload through (counted), else (HTTP status, text)."""
        if size is None:
            return 411, "an upload must declare its size (accepted: a Content-Length header)"
        if self.max_request_bytes is not None and size > self.max_request_bytes:
            return 413, (f"an upload of {_mb(size)} (accepted: at most {_mb(self.max_request_bytes)} "
                         "per upload)")
        with self._lock:
            now = time.monotonic()
            if len(self._sent) > 10_000:  # forget addresses with nothing in the window
                self._sent = {a: q for a, q in self._sent.items() if q and now - q[-1][0] <= self.window_s}
            sent = self._sent.setdefault(client, collections.deque())
            while sent and now - sent[0][0] > self.window_s:
                sent.popleft()
            used = sum(n for _, n in sent)
            if used + size > self.per_client_bytes:
                wait = self.window_s - (now - sent[0][0]) if sent else self.window_s
                return 429, (f"this address uploaded {_mb(used)} in the last {self.window_s / 60:g} min "
                             f"(accepted: at most {_mb(self.per_client_bytes)} per address in "
                             f"{self.window_s / 60:g} min); try again in {wait / 60:.0f} min")
            room = self.max_cache_bytes - self._in_flight - size
            if folder_bytes(self.cache) > room:
                prune(self.cache, max(room, 0), self.max_age, min_age=self.min_age)
                if folder_bytes(self.cache) > room:
                    return 503, (f"the server's upload space is full (accepted: {_mb(self.max_cache_bytes)} "
                                 f"in all; uploads stay {self.min_age:g} s at least); try again in a minute")
            sent.append((now, size))
            self._in_flight += size
        return None

    def _release(self, size: int) -> None:
        """An admitted upload has ended (on disk, where the cache's bytes count it, or failed)."""
        with self._lock:
            self._in_flight -= size

    def used(self, client: str) -> int:
        """Bytes `client` uploaded in the current window (what tests and the benchmark read)."""
        now = time.monotonic()
        with self._lock:
            return sum(n for t, n in self._sent.get(client, ()) if now - t <= self.window_s)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


async def _drain(receive) -> None:
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _plain(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
