"""Disk under an upload flood: raw uploads to the Space's upload route with no /predict or /attack
after them, and the size of its Gradio cache after each one, against the cap.

    nice -n 15 .venv/bin/python benchmarks/app_upload_flood.py [--uploads 16] [--mb 24]
        [--cap-mb 300] [--addresses 16] [--app-dir DIR]

Starts `python app.py` (of --app-dir: another checkout gives the figures before a change) on
loopback with its temporary folders under a fresh TMPDIR, then POSTs --uploads files of --mb MB
each (distinct bytes, so none shares another's cache folder), one after another, each from one
of --addresses client addresses (X-Forwarded-For, which the server believes from 127.0.0.1, as
a Space's proxy sends it: one address per upload by default, so the per-address share does not
hide the global cap). Prints per upload the HTTP status, the seconds, and the cache's bytes on
disk; then the cache for --watch seconds; then stops the app with SIGTERM and counts the
instance folders it left behind."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uploads", type=int, default=16)
    ap.add_argument("--mb", type=float, default=24.0, help="size of each upload (MB, 1e6 bytes)")
    ap.add_argument("--cap-mb", type=float, default=300.0, help="SER_APP_MAX_CACHE_MB")
    ap.add_argument("--addresses", type=int, default=0, help="client addresses used in turn (0: one per upload)")
    ap.add_argument("--watch", type=float, default=12.0, help="seconds to watch the cache after the flood")
    ap.add_argument("--model", default="emodb")
    ap.add_argument("--app-dir", type=Path, default=REPO)
    args = ap.parse_args()

    import httpx
    from ser_core.serving.files import folder_bytes
    from tests.helpers import wait_until
    from tests.test_app_api import running_app

    tmp = Path(tempfile.mkdtemp(prefix="upload-flood-"))
    env = {"TMPDIR": str(tmp), "SER_APP_MAX_CACHE_MB": str(args.cap_mb)}
    os.environ.pop("GRADIO_TEMP_DIR", None)  # the app makes its own, under TMPDIR
    cap = args.cap_mb * 1e6
    size = int(args.mb * 1e6)
    base = os.urandom(size)
    addresses = args.addresses or args.uploads
    print(f"app: {args.app_dir}; {args.uploads} uploads of {args.mb:g} MB from {addresses} addresses, "
          f"no call after them; cache cap {args.cap_mb:g} MB (2 shared vCPU, loopback)")
    with running_app(args.model, env=env, app_dir=args.app_dir) as url:
        cache = wait_until(lambda: next(tmp.glob("ser-space-gradio-*"), None), timeout=60,
                           what="the app's Gradio cache folder")
        peak, t0 = 0, time.perf_counter()
        print(f"{'upload':>6} {'address':>15} {'status':>6} {'seconds':>8} {'cache MB':>9} {'cap MB':>7}")
        with httpx.Client(timeout=120) as http:
            for i in range(args.uploads):
                address = f"198.51.100.{1 + i % addresses}"
                data = f"{i:016d}".encode() + base[16:]
                t = time.perf_counter()
                try:
                    r = http.post(f"{url}gradio_api/upload", headers={"X-Forwarded-For": address},
                                  files=[("files", (f"flood-{i}.wav", data, "audio/wav"))])
                    status = str(r.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__[:6]
                held = folder_bytes(cache)
                peak = max(peak, held)
                print(f"{i + 1:>6} {address:>15} {status:>6} {time.perf_counter() - t:>8.2f} "
                      f"{held / 1e6:>9.1f} {args.cap_mb:>7g}", flush=True)
        flood_s = time.perf_counter() - t0
        end = time.monotonic() + args.watch
        while time.monotonic() < end:
            held = folder_bytes(cache)
            peak = max(peak, held)
            time.sleep(1.0)
        print(f"after {flood_s:.1f} s of uploads and {args.watch:g} s more: cache {held / 1e6:.1f} MB, "
              f"peak {peak / 1e6:.1f} MB against a cap of {args.cap_mb:g} MB "
              f"({'held' if peak <= cap else 'EXCEEDED'})")
    left = sorted(p.name for p in tmp.glob("ser-space-*"))
    print(f"after SIGTERM: {len(left)} instance folders left ({folder_bytes(tmp) / 1e6:.1f} MB under TMPDIR)"
          + (f": {left}" if left else ""))


if __name__ == "__main__":
    main()
