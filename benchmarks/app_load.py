"""The Space under load on loopback: bounded concurrent clients through gradio_client.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/app_load.py [--clients 8] [--requests 20]

Starts `python app.py` on 127.0.0.1 (as tests/test_app_api.py does; the cold start is timed up
to its first answer) with its own Gradio cache and output folders, then runs three scenarios,
each bounded in requests and time:
  1. predict only: --clients clients, --requests /predict calls each, all at once;
  2. predict while attacks run: half the clients keep calling /predict while three others
     submit BIM attacks on a 29 s clip (each stops at the deadline or its 200 steps; the queue
     refuses what does not fit, which counts as a clear refusal, not a failure);
  3. submit-and-cancel: --cancels times, an attack is submitted, cancelled after 1 s, and a
     quick FGSM attack timed right after (the slot is free once the cancelled loop has ended).
Prints per scenario: successes / requests, refusals, p50 / p95 latency, and the server's RSS
(from /proc) and bytes on disk (Gradio cache + attack outputs) before and after, as JSON lines.

    .venv/bin/python benchmarks/app_load.py --memory [--model all] [--deadline 60] [--app-dir DIR]

instead measures the server's memory as the Space runs it (every model served with --model all,
torch's own thread count): resident (VmRSS) and peak resident (VmHWM) idle once every model is
warm, after one /predict per model (a 3 s clip, then a 120 s one), and after each attack at
every one of the Space's caps (MEMORY_CASES) on a 29 s clip, one at a time. --app-dir: the app
to start, e.g. an earlier commit for before figures."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLIP = REPO / "examples" / "ravdess-fear-actor01m.wav"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def server_pid(port: int) -> int:
    """The app.py process listening on `port` (the test helper does not hand it out)."""
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().split(b"\0")
                env = (p / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(c.endswith(b"app.py") for c in cmd) and f"GRADIO_SERVER_PORT={port}".encode() in env:
                return int(p.name)
    raise RuntimeError("app.py process not found")


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


# Every parameter that multiplies the work at its cap in this Space (SPACE_CAPS): the batches of
# boundary (num_trial x sample_size, init_size), square (population) and pixel are the largest.
MEMORY_CASES = [
    ("cw", {"steps": 100, "binary_steps": 6}, "waveform"),
    ("square", {"max_queries": 1000, "population": 16, "snr_db": 40}, "waveform"),
    ("apgd", {"steps": 200, "restarts": 3, "snr_db": 40}, "waveform"),
    ("boundary", {"max_iter": 200, "num_trial": 5, "sample_size": 20, "init_size": 200, "init_steps": 20},
     "features"),
    ("pixel", {"max_iter": 40, "th": 20}, "features"),
    ("bim", {"max_iter": 200, "eps": 0.01, "eps_step": 0.001, "early_stop": False}, "features"),
]


def memory(args, work: Path, long_clip: Path) -> None:
    """Resident and peak memory of the server: idle, after /predict, after attacks at the caps."""
    from gradio_client import Client, handle_file
    from tests.helpers import wait_until
    from tests.test_app_api import app_log, running_app
    env = {"GRADIO_TEMP_DIR": str(work / "gradio"), "SER_APP_OUTPUT_DIR": str(work / "outputs"),
           "SER_APP_ATTACK_DEADLINE_S": str(args.deadline)}
    longest = work / "120s.wav"
    sf.write(str(longest), np.resize(sf.read(str(long_clip))[0], 120 * 16000), 16000, subtype="PCM_16")
    with running_app("" if args.model == "all" else args.model, env=env, app_dir=args.app_dir) as url:
        pid = server_pid(int(url.rstrip("/").rsplit(":", 1)[1]))
        wait_until(lambda: "warm start:" in app_log(url), timeout=600, interval=0.2, what="the warm start")
        if "warm_up_in_background" in (args.app_dir / "app.py").read_text():
            wait_until(lambda: "background warm-up:" in app_log(url), timeout=600, interval=0.2,
                       what="every model warm")
        client = Client(url, verbose=False)
        from ser_core.serving.catalogue import available_models
        served = available_models() if args.model == "all" else [args.model]

        def report(step, **extra):
            print(json.dumps({"step": step, "rss_mb": rss_mb(pid), "peak_mb": peak_mb(pid), **extra}), flush=True)
        report("idle, every model warm", models=len(served))
        for m in served:
            client.predict(handle_file(str(CLIP)), m, api_name="/predict")
        report("after one /predict per model")
        client.predict(handle_file(str(longest)), served[0], api_name="/predict")
        report("after a /predict of 120 s")
        for attack, params, domain in MEMORY_CASES:
            t = time.monotonic()
            r = client.predict(handle_file(str(long_clip)), served[0], attack, json.dumps(params), domain,
                               api_name="/attack")[0]
            report(f"after {attack} ({domain}) at the caps on 29 s", params=params, model=served[0],
                   stopped_early=r.get("stopped_early"), request_s=round(time.monotonic() - t, 1))


def pct(values, q):
    return round(float(np.percentile(values, q)), 3) if values else None


def summary(name, latencies, requests, refused=0, **extra):
    return {"scenario": name, "ok": len(latencies), "requests": requests, "refused": refused,
            "p50_s": pct(latencies, 50), "p95_s": pct(latencies, 95), **extra}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="emodb")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--cancels", type=int, default=5)
    ap.add_argument("--memory", action="store_true", help="measure memory instead (see the docstring)")
    ap.add_argument("--deadline", type=float, default=60.0, help="attack deadline of --memory (s)")
    ap.add_argument("--app-dir", type=Path, default=REPO, help="the app --memory starts")
    args = ap.parse_args()
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError
    from gradio_client.utils import Status
    from ser_core.audio.decode import load_audio
    from ser_core.serving.files import folder_bytes
    from tests.test_app_api import running_app

    work = Path(tempfile.mkdtemp(prefix="app-load-"))
    long_clip = work / "long.wav"
    sf.write(str(long_clip), np.resize(load_audio(CLIP), 29 * 16000), 16000, subtype="PCM_16")
    if args.memory:
        return memory(args, work, long_clip)
    env = {"GRADIO_TEMP_DIR": str(work / "gradio"), "SER_APP_OUTPUT_DIR": str(work / "outputs"),
           "SER_APP_ATTACK_DEADLINE_S": "20"}
    disk = lambda: folder_bytes(work / "gradio") + folder_bytes(work / "outputs")  # noqa: E731
    t_start = time.monotonic()
    with running_app(args.model, env=env) as url:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        pid = server_pid(port)
        client = Client(url, verbose=False)
        t0 = time.monotonic()
        client.predict(handle_file(str(CLIP)), args.model, api_name="/predict")
        print(json.dumps({"cold_start_to_first_answer_s": round(time.monotonic() - t_start, 2),
                          "first_predict_s": round(time.monotonic() - t0, 3)}), flush=True)
        rss0, disk0 = rss_mb(pid), disk()

        # 1. predict only
        def predictor(n):
            c = Client(url, verbose=False)
            out = []
            for _ in range(n):
                t = time.monotonic()
                c.predict(handle_file(str(CLIP)), args.model, api_name="/predict")
                out.append(time.monotonic() - t)
            return out
        with ThreadPoolExecutor(args.clients) as ex:
            lat = [x for r in ex.map(predictor, [args.requests] * args.clients) for x in r]
        print(json.dumps(summary("predict only", lat, args.clients * args.requests,
                                 rss_mb=[rss0, rss_mb(pid)], disk_bytes=[disk0, disk()])), flush=True)

        # 2. predict while attacks run
        params = json.dumps({"eps": 0.01, "eps_step": 0.001, "max_iter": 200, "early_stop": False})
        attack_lat, refused, failed = [], 0, 0
        lock = threading.Lock()

        def attacker(_):
            nonlocal refused, failed
            c = Client(url, verbose=False)
            for _ in range(2):
                t = time.monotonic()
                try:
                    r = c.predict(handle_file(str(long_clip)), args.model, "bim", params, "features",
                                  api_name="/attack")[0]
                    with lock:
                        attack_lat.append(time.monotonic() - t)
                except AppError as exc:
                    with lock:
                        refused += "BusyError" in str(exc)
                        failed += "BusyError" not in str(exc)
        n_pred = max(1, args.requests // 2)
        with ThreadPoolExecutor(3 + args.clients // 2) as ex:
            attacks = [ex.submit(attacker, i) for i in range(3)]
            time.sleep(1.0)
            preds = list(ex.map(predictor, [n_pred] * (args.clients // 2)))
            for a in attacks:
                a.result()
        lat = [x for r in preds for x in r]
        print(json.dumps(summary("predict while attacks run", lat, n_pred * (args.clients // 2),
                                 attacks_done=len(attack_lat), attacks_refused=refused, attacks_failed=failed,
                                 attack_p50_s=pct(attack_lat, 50), rss_mb=[rss0, rss_mb(pid)],
                                 disk_bytes=[disk0, disk()])), flush=True)

        # 3. submit and cancel, then a quick attack
        quick = []
        for _ in range(args.cancels):
            job = client.submit(handle_file(str(long_clip)), args.model, "bim", params, "features",
                                api_name="/attack")
            deadline = time.monotonic() + 60
            while job.status().code not in (Status.PROCESSING, Status.PROGRESS) and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)
            job.cancel()
            t = time.monotonic()
            client.predict(handle_file(str(CLIP)), args.model, "fgsm", '{"eps": 0.25}', "features",
                           api_name="/attack")
            quick.append(time.monotonic() - t)
        print(json.dumps(summary("submit-and-cancel, then FGSM", quick, args.cancels,
                                 rss_mb=[rss0, rss_mb(pid)], disk_bytes=[disk0, disk()])), flush=True)


if __name__ == "__main__":
    main()
