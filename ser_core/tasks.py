"""Independent tasks as Ray tasks, for more than one process or machine (optional install:
`pip install -r requirements-cluster.txt`; nothing on the default path imports this module).

`map_tasks(fn, args_list)` runs `fn(*args)` once per argument tuple as a Ray task, retried on
an exception or a dead worker, with torch's threads set to the CPUs the task was given, and
yields each (args, result) as it finishes, so that the caller alone writes each result. Training
runs its cross-validation folds this way (one task per fold, training.crossval.ray_folds), and
the evaluation grid's Ray executor (evaluation.executors.RayExecutor) hands out its batches
with `as_completed` and `task_threads` below.

On a cluster every node needs this repository's code importable (the same checkout and
virtual environment, or a Ray runtime environment that provides them)."""
from __future__ import annotations

import math

import ray


def task_threads() -> int:
    """Set torch's threads to the CPUs Ray gave this task; return that count."""
    import torch
    threads = max(1, math.floor(ray.get_runtime_context().get_assigned_resources().get("CPU", 1)))
    torch.set_num_threads(threads)
    return threads


def as_completed(submit, items, in_flight: int, pending: dict | None = None):
    """Submit `submit(item)` for each item, at most `in_flight` ahead of the results, and yield
    (item, result) in the order they finish. `pending` (ref -> item) is left holding what was
    still running if the caller stops early, for it to cancel."""
    pending = {} if pending is None else pending
    items = iter(items)
    more = True
    while True:
        while more and len(pending) < in_flight:
            item = next(items, None)
            if item is None:
                more = False
                break
            pending[submit(item)] = item
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            item = pending.pop(ref)
            yield item, ray.get(ref)


@ray.remote
def _call(fn, args: tuple):
    task_threads()
    return fn(*args)


def map_tasks(fn, args_list, cpus_per_task: float = 1, gpus_per_task: float = 0, max_retries: int = 3,
              in_flight: int | None = None):
    """One Ray task per argument tuple, `fn(*args)` with torch's threads set to the task's CPUs,
    retried on an exception or a dead worker; yields (args, result) as each finishes, so that
    the caller, alone, writes each result (the pattern of the grid's batches, for other work
    such as training cross-validation folds, one task per fold). Stopping early cancels the
    tasks still running."""
    if in_flight is None:
        in_flight = 2 * max(1, int(ray.cluster_resources().get("CPU", 1) // cpus_per_task))
    pending: dict = {}

    def submit(args):
        return _call.options(num_cpus=cpus_per_task, num_gpus=gpus_per_task, max_retries=max_retries,
                             retry_exceptions=True).remote(fn, tuple(args))
    try:
        yield from as_completed(submit, args_list, in_flight, pending)
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
