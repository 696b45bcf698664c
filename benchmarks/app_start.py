"""Seconds from `python app.py` to its first page, to its first /predict answer and to every
model ready, fresh (no model.onnx anywhere: a copy of the bundles without them, an empty cache)
and warm (the same copy again, its model.onnx files built and recorded by the fresh start).

    .venv/bin/python benchmarks/app_start.py [--app-dir DIR] [--models emodb,ravdess]

Serves every bundle under models/ unless --models names some (the Space serves all six).
--app-dir: the app to start, e.g. an earlier commit for before figures
(`mkdir DIR && git archive HEAD | tar -x -C DIR`); its bundles are this checkout's. Prints one
JSON line per start: first_page_s (GET / answers 200), first_predict_s (a gradio_client /predict
of the default model, sent once the page answers), all_models_s (the app's log says every model
is ready: its 'background warm-up' line, or for an app that builds them all before serving, its
'warm start' line) and the models served."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
CLIP = REPO / "examples" / "ravdess-happiness-actor02f.wav"
LIMIT_S = 600


def copy_bundles(dest: Path, names: list[str] | None) -> list[str]:
    """The shipped bundles' config, weights and card (what the Space ships: no model.onnx)."""
    from export.space import shipped_bundles
    out = []
    for b in shipped_bundles(REPO / "models"):
        if names and b.name not in names:
            continue
        (dest / b.name).mkdir(parents=True)
        for f in ("config.json", "model.safetensors", "README.md"):
            if (b / f).is_file():
                shutil.copy2(b / f, dest / b.name / f)
        out.append(b.name)
    return out


def start(app_dir: Path, env: dict, log: Path, default_model: str) -> dict:
    from gradio_client import Client, handle_file
    from tests.test_app_api import free_port
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    env = dict(env, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port))
    with open(log, "w") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(app_dir / "app.py")], cwd=app_dir, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            first_page = None
            while first_page is None:
                if proc.poll() is not None or time.monotonic() - t0 > LIMIT_S:
                    raise RuntimeError(f"app.py did not serve: {log.read_text()[-2000:]}")
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        if r.status == 200:
                            first_page = time.monotonic() - t0
                except OSError:
                    time.sleep(0.05)
            Client(url, verbose=False).predict(handle_file(str(CLIP)), default_model, api_name="/predict")
            first_predict = time.monotonic() - t0
            all_ready = None
            while all_ready is None and time.monotonic() - t0 < LIMIT_S and proc.poll() is None:
                text = log.read_text()
                if "background warm-up:" in text or ("warm start:" in text and "warm_up_in_background" not in
                                                     (app_dir / "app.py").read_text()):
                    all_ready = time.monotonic() - t0
                else:
                    time.sleep(0.05)
            out_of_service = re.findall(r"out of service: (\[.*\])", log.read_text())
            return {"first_page_s": round(first_page, 2), "first_predict_s": round(first_predict, 2),
                    "all_models_s": None if all_ready is None else round(all_ready, 2),
                    "out_of_service": out_of_service[-1] if out_of_service else None}
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--app-dir", type=Path, default=REPO)
    ap.add_argument("--models", default="", help="comma-separated bundle names (default: all)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="app-start-"))
    try:
        names = copy_bundles(work / "models", [m for m in args.models.split(",") if m] or None)
        from ser_core.serving.catalogue import PREFERRED
        default = sorted(names, key=lambda n: (PREFERRED.index(n) if n in PREFERRED else len(PREFERRED), n))[0]
        env = {k: v for k, v in os.environ.items() if k not in ("SER_APP_MODELS", "GRADIO_TEMP_DIR")}
        env.update(SER_MODELS_DIR=str(work / "models"), SER_CACHE_DIR=str(work / "cache"),
                   GRADIO_ANALYTICS_ENABLED="False")
        if args.models:
            env["SER_APP_MODELS"] = ",".join(names)
        for kind in ("fresh", "warm"):
            r = start(args.app_dir.resolve(), env, work / f"{kind}.log", default)
            print(json.dumps({"start": kind, "app": str(args.app_dir), "models": len(names),
                              "default_model": default, **r}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
