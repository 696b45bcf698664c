"""What the app does once it listens: the default model first, then the others in the background,
then one request through its own HTTP stack.

  warm_start(url, example, prefer)   returns what the start log line says"""
from __future__ import annotations

import time

from ser_core.serving.catalogue import SERVING_THREADS, available_models, disabled_models
from ser_core.serving.prediction import warm_up, warm_up_in_background


def serving_threads() -> int:
    """torch's threads for this serving process, SER_APP_THREADS (default 1; the ONNX sessions
    get the same, catalogue.get_bundle)."""
    import torch
    torch.set_num_threads(SERVING_THREADS)
    return SERVING_THREADS


def warm_start(url: str, example=None, prefer=()) -> dict:
    """The default model's ONNX session built (or rebuilt from the weights) and checked, so a
    request that comes sooner waits for it only; the others in a background thread, the models
    in `prefer` (the examples' models) first; a model whose files fail is out of service with
    its reason logged while the others serve. Then one /predict of `example` over HTTP."""
    warm = warm_up(ready=1)
    rest = sorted((m for m in available_models() if m not in warm), key=lambda m: m not in set(prefer))
    warm_up_in_background(rest, done=lambda s: print(
        f"background warm-up: models {s}, out of service: {sorted(disabled_models())}", flush=True))
    return {"models": warm, "http_s": warm_http(url, example)}


def warm_http(url: str, example=None) -> float | None:
    """One /predict through the server's own HTTP stack (upload, queue, events) before anyone
    calls: Gradio's first request costs about 0.6 s more than the next ones otherwise."""
    models = available_models()
    if not models or example is None:
        return None
    try:
        from gradio_client import Client, handle_file
        t0 = time.perf_counter()
        Client(url, verbose=False).predict(handle_file(str(example)), models[0], api_name="/predict")
        return round(time.perf_counter() - t0, 3)
    except Exception as exc:  # serving matters more than warming
        print(f"warm start: the HTTP warm-up failed ({type(exc).__name__}: {exc})", flush=True)
        return None
