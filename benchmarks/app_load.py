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
(from /proc) and bytes on disk (Gradio cache + attack outputs) before and after, as JSON lines."""
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
CLIP = REPO / "examples" / "ravdess-fear-actor03m.wav"


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
