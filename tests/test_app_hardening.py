"""The Space against hostile and careless visitors: its disk caps hold between requests, quotas
count per client address, the page's handlers take no path, errors show short excerpts of what
was sent, and integers stay integers."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ser_core.attacks.params import Param
from ser_core.errors import ModelBundleError, ParameterError, excerpt
from ser_core.serving import files, service
from ser_core.serving.admission import AttackQueue, UploadGate, client_address, request_address
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
MODEL = os.environ.get("SER_TEST_MODEL", "emodb")
EXAMPLE = REPO / "examples" / "ravdess-happiness-actor02f.wav"


def _fill(folder: Path, name: str, size: int, age: float = 0.0) -> Path:
    entry = folder / name
    entry.mkdir(parents=True)
    (entry / "upload.wav").write_bytes(b"x" * size)
    when = time.time() - age
    os.utime(entry, (when, when))
    return entry


# --- disk ------------------------------------------------------------------------------------
def test_uploads_past_the_cache_cap_or_an_address_share_are_refused(tmp_path):
    gate = UploadGate(None, cache=tmp_path, max_cache_bytes=10_000, per_client_bytes=6_000,
                      max_request_bytes=5_000, min_age=120.0)
    _fill(tmp_path, "old", 3_000, age=600)  # prunable: older than min_age
    assert gate._admit("a", None)[0] == 411
    assert gate._admit("a", 5_001)[0] == 413
    assert gate._admit("a", 4_000) is None
    _fill(tmp_path, "a1", 4_000)
    gate._release(4_000)  # the upload is on disk
    assert gate._admit("a", 4_000)[0] == 429  # 8 000 from one address in the window
    assert gate._admit("b", 4_000) is None    # the old entry is pruned to make room
    _fill(tmp_path, "b1", 4_000)
    gate._release(4_000)
    assert not (tmp_path / "old").exists()
    status, text = gate._admit("c", 4_000)   # the young ones stay: no room left
    assert status == 503 and "full" in text
    assert files.folder_bytes(tmp_path) <= 10_000 and gate.used("a") == 4_000


def test_the_cache_is_pruned_between_requests(tmp_path):
    for i in range(5):
        _fill(tmp_path, f"up{i}", 1_000, age=600 - i)
    stop = files.prune_every(0.01, tmp_path, max_bytes=2_500)
    try:
        wait_until(lambda: files.folder_bytes(tmp_path) <= 2_500, timeout=120, what="the timer to prune")
    finally:
        stop.set()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["up3", "up4"]  # the newest stay


_INSTANCE = textwrap.dedent("""
    import sys, time
    from ser_core.serving import files
    files.end_on_sigterm()
    try:  # from before the print: the test may send SIGTERM as soon as it reads the line
        print(files.instance_folder(parent=sys.argv[1]), flush=True)
        while True:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
""")


def _instance(parent: Path) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen([sys.executable, "-c", _INSTANCE, str(parent)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    return proc, Path(proc.stdout.readline().strip())


def test_the_folders_of_a_killed_instance_are_removed_at_the_next_start(tmp_path):
    proc, killed = _instance(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    legacy = tmp_path / f"ser-space-gradio-{proc.pid}-abc"  # no lock: its process id tells
    legacy.mkdir()
    alive = files.instance_folder(parent=tmp_path)
    assert killed.is_dir()
    assert sorted(files.remove_dead_instances(tmp_path)) == sorted([killed, legacy])
    assert not killed.exists() and not legacy.exists() and alive.is_dir()


def test_sigterm_removes_the_instance_folders(tmp_path):
    proc, folder = _instance(tmp_path)
    assert folder.is_dir()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not folder.exists()


# --- quotas per client address ---------------------------------------------------------------
class _Request:  # what the app reads of a gr.Request
    def __init__(self, host, session, forwarded=None):
        self.client = type("Client", (), {"host": host})()
        self.session_hash = session
        self.headers = {"x-forwarded-for": forwarded} if forwarded else {}


@pytest.mark.parametrize("peer, forwarded, address", [
    ("8.8.8.8", None, "8.8.8.8"),
    ("8.8.8.8", "1.1.1.1", "8.8.8.8"),                # a public peer's header is not believed
    ("10.0.0.5", "1.1.1.1, 9.9.9.9", "9.9.9.9"),      # behind a proxy: the one it appended
    ("10.0.0.5", "9.9.9.9, 10.1.2.3", "9.9.9.9"),     # past the proxies' own private hops
    ("10.0.0.5", "garbage, 9.9.9.9:4711", "9.9.9.9"),
    ("2001:db8:1:2::5", None, "2001:db8:1:2::/64"),  # IPv6: its /64
    (None, None, "anonymous"),
])
def test_the_client_address(peer, forwarded, address):
    assert client_address(peer, forwarded) == address


def test_a_second_session_from_the_same_address_shares_the_first_ones_attack_quota():
    import asyncio
    import threading
    first, second = _Request("10.0.0.5", "s1", "9.9.9.9"), _Request("10.0.0.6", "s2", "9.9.9.9")
    other = _Request("10.0.0.5", "s3", "8.8.4.4")
    assert request_address(first) == request_address(second) != request_address(other)

    async def scenario():
        q = AttackQueue(max_waiting=4, per_client=1)
        release = threading.Event()
        running = asyncio.ensure_future(q.run(request_address(first), release.wait, threading.Event()))
        from tests.helpers import wait_until_async
        await wait_until_async(lambda: q.running == 1, what="the first attack to run")
        from ser_core.errors import BusyError
        with pytest.raises(BusyError, match="at most 1 per client address"):
            await q.run(request_address(second), lambda: None, threading.Event())
        waiting = asyncio.ensure_future(q.run(request_address(other), lambda: "other", threading.Event()))
        release.set()
        return await running, await waiting
    assert asyncio.run(scenario()) == (True, "other")


# --- names, paths, excerpts, integers --------------------------------------------------------
def test_a_model_name_that_is_a_path_is_refused_without_touching_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"labels": ["secret"]}))
    touched = []
    for method in ("is_file", "read_text", "exists", "open"):
        real = getattr(Path, method)
        monkeypatch.setattr(Path, method, lambda self, *a, _real=real, **k: (
            touched.append(str(self)) if str(tmp_path) in str(self) else None) or _real(self, *a, **k))
    for name in (str(folder), f"../{folder.name}", "x" * 5_000_000):
        with pytest.raises((ParameterError, ModelBundleError)) as info:
            service.model_info(name)
        assert len(str(info.value)) < 300
        assert service.target_choices(name) == [("none: any other emotion", service.NO_TARGET)]
    assert touched == []


def test_a_long_attack_name_gives_a_short_error():
    with pytest.raises(ParameterError) as info:
        service.check_params(None, "x" * 5_000_000 + "<b>", {}, service.DOMAIN_WAVEFORM)
    message = str(info.value)
    assert len(message) < 300 and "5000003 characters" in message and "accepted: apgd" in message


@pytest.mark.parametrize("value", ["x" * 5_000_000, "<script>alert(1)</script>", 10 ** 5000, ["a"] * 10 ** 6],
                         ids=["5 MB string", "markup", "5000-digit int", "long list"])
def test_an_excerpt_is_short_and_shows_no_markup(value):
    shown = excerpt(value)
    assert len(shown) < 100 and "<" not in shown and ">" not in shown


def test_integers_are_parsed_as_integers():
    big = "1234567890123456789012345678901"  # 31 digits: changed by a trip through float
    assert Param(10, int, 1, None).check("a", "steps", big) == int(big)
    assert Param(10, int, 1, None).check("a", "steps", int(big)) == int(big)
    assert Param(10, int, 1, None).check("a", "steps", " 40 ") == 40
    assert Param(10, int, 1, None).check("a", "steps", "3.0") == 3
    for bad in ("2.5", 2.5, 1e30, "1e30", "nan", "12abc"):  # 1e30 is exact only as a float
        with pytest.raises(ParameterError, match="is not a int"):
            Param(10, int, 1, None).check("a", "steps", bad)
    with pytest.raises(ParameterError, match=r"is outside \[1, 200\]") as info:
        Param(10, int, 1, 200).check("a", "steps", big)
    assert big in str(info.value)  # named as sent, not as a float made it
    with pytest.raises(ParameterError, match="at most 30 digits"):
        service.parse_params(json.dumps({"steps": int(big)}))


# --- the served app ----------------------------------------------------------------------------
@pytest.mark.slow
def test_an_upload_flood_with_no_calls_stays_under_the_cap_and_sigterm_cleans_up(tmp_path):
    """Raw uploads to the upload route, no /predict or /attack after them: the cache stays under
    its (small) cap at every step, an address past its share is refused while another is not,
    and the app stopped by SIGTERM leaves no instance folder behind."""
    import httpx
    from tests.test_app_api import running_app
    env = {"TMPDIR": str(tmp_path), "GRADIO_TEMP_DIR": "", "SER_APP_MAX_CACHE_MB": "20",
           "SER_APP_UPLOAD_MB_PER_CLIENT": "10"}
    statuses = []
    with running_app(env=env) as url, httpx.Client(timeout=60) as http:
        cache = wait_until(lambda: next(tmp_path.glob("ser-space-gradio-*"), None), what="the app's cache")
        for i, address in enumerate(["198.51.100.1"] * 3 + [f"198.51.100.{n}" for n in range(2, 9)]):
            r = http.post(f"{url}gradio_api/upload", headers={"X-Forwarded-For": address},
                          files=[("files", (f"up{i}.wav", f"{i:08d}".encode() * 562_500, "audio/wav"))])
            statuses.append(r.status_code)
            assert files.folder_bytes(cache) <= 20e6, statuses
        assert statuses[:4] == [200, 200, 429, 200]  # 4.5 MB each: the third is past 10 MB
        assert 503 in statuses and "full" in r.text
    assert list(tmp_path.glob("ser-space-*")) == []


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tests.test_app_api import running_app
    env = {"SER_APP_ATTACKS_PER_CLIENT": "1", "SER_APP_ATTACK_DEADLINE_S": "20"}
    with running_app(env=env) as url:
        yield url


def _fn_index(url: str, elem_id: str, event: str) -> int:
    import httpx
    config = httpx.get(f"{url}config", timeout=30).json()
    target = next(c["id"] for c in config["components"] if c.get("props", {}).get("elem_id") == elem_id)
    return next(d["id"] for d in config["dependencies"] if [target, event] in d["targets"])


@pytest.mark.slow
def test_the_model_picker_handler_called_by_fn_index_reads_no_path(served, bundle):
    """The page's own handler, called over HTTP as the page calls it, with a server path that
    holds a bundle: nothing of that bundle comes back (before: its labels)."""
    import httpx
    fn = _fn_index(served, "model", "change")
    for name in (str(REPO / "models" / MODEL), "x" * 5_000_000):
        r = httpx.post(f"{served}gradio_api/run/predict", timeout=60,
                       json={"fn_index": fn, "data": [name], "session_hash": "hardening"})
        assert len(r.text) < 5_000
        assert not any(label in r.text for label in bundle.labels), r.text


@pytest.mark.slow
def test_a_long_attack_name_over_the_api_gets_a_short_error(served):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as info:
        Client(served, verbose=False).predict(handle_file(str(EXAMPLE)), MODEL, "x" * 5_000_000, "",
                                              "waveform", "none", api_name="/attack")
    assert "ParameterError: unknown attack" in str(info.value) and len(str(info.value)) < 1_000


@pytest.mark.slow
def test_a_new_session_from_the_same_address_shares_the_attack_quota(served, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from tests.test_app_api import _long_clip, _wait_progress
    clip = handle_file(str(_long_clip(tmp_path)))
    params = json.dumps({"eps": 0.01, "eps_step": 0.001, "max_iter": 200, "early_stop": False})
    first = Client(served, verbose=False).submit(clip, MODEL, "bim", params, "features", api_name="/attack")
    try:
        _wait_progress(first, "BIM step")
        with pytest.raises(AppError, match="BusyError: you already have 1 attacks"):
            Client(served, verbose=False).predict(clip, MODEL, "bim", params, "features", api_name="/attack")
        elsewhere = Client(served, verbose=False, headers={"X-Forwarded-For": "198.51.100.9"})
        other = elsewhere.submit(clip, MODEL, "bim", params, "features", api_name="/attack")
        _wait_progress(other, "waiting for the attack before yours")
        other.cancel()
    finally:
        first.cancel()
