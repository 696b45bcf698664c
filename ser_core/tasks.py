"""Ray as the grid's engine, for more than one process or machine (optional install:
`pip install -r requirements-cluster.txt`; nothing on the default path imports this module).

`grid.run_grid(..., executor=RayExecutor())` keeps the grid's driver as it is and hands each
batch (one attack call on up to `profile.batch` examples) to a Ray task:

  - the driver alone writes: each batch file as its result arrives (`ray.wait`), a cell's rows
    when its last batch is in. A batch's file lives in the cell folder keyed by the model's
    weights, the attack, the setting, the example rows and the batch size, and a result for a
    batch already there (a retried task that had in fact finished, a duplicate) is dropped, so
    no row is ever written twice;
  - a killed driver loses at most the batches in flight: the next run (local or Ray) reads the
    batch files and submits only the missing batches;
  - a task that raises or whose worker dies is retried (`max_retries`, `retry_exceptions`);
  - white-box tasks ask for `gpus_per_task` GPUs when the cluster has any (1 by default; a
    fraction lets tasks share a GPU) and run the torch model there; black-box tasks query
    ONNX Runtime only and stay on CPU;
  - each task sets torch's and ONNX Runtime's thread counts to the CPUs Ray gave it, so a
    2-CPU task uses two threads and 1-CPU tasks do not fight over cores;
  - a worker receives each model bundle (config, weights, ONNX graph) once through Ray's object
    store and keeps it for later tasks, so a node needs this package and its requirements but
    not the models folder.

On a cluster every node needs this repository's code importable (the same checkout and
virtual environment, or a Ray runtime environment that provides them). With equal thread
counts the rows equal the local loop's apart from timing fields (`grid.TIMING_FIELDS`)."""
from __future__ import annotations

import atexit
import math
import shutil
import sys
import tempfile
from pathlib import Path

import ray

from ser_core.errors import ParameterError

_WORKER_BUNDLES: dict = {}  # in a worker process: bundle key -> ModelBundle, kept between tasks


def bundle_files(bundle) -> dict[str, bytes]:
    """What a worker needs to rebuild the bundle: config, weights and the ONNX graph (built and
    parity-checked here once, not on every worker)."""
    from ser_core.models.bundle import CONFIG, ONNX, WEIGHTS
    onnx = bundle.onnx_path()
    return {CONFIG: (bundle.folder / CONFIG).read_bytes(), WEIGHTS: (bundle.folder / WEIGHTS).read_bytes(),
            ONNX: Path(onnx).read_bytes()}


def _worker_bundle(key: str, files_ref: list):
    b = _WORKER_BUNDLES.get(key)
    if b is None:
        from ser_core.models.bundle import ModelBundle
        folder = Path(tempfile.mkdtemp(prefix=f"ser-bundle-{key}-"))
        atexit.register(shutil.rmtree, folder, True)
        for name, data in ray.get(files_ref[0]).items():
            (folder / name).write_bytes(data)
        b = _WORKER_BUNDLES[key] = ModelBundle.from_folder(folder)
    return b


def _task_threads() -> int:
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
    _task_threads()
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


@ray.remote
def attack_task(key: str, files_ref: list, cls, settings: dict, x):
    """One batch on a Ray worker: threads from the CPUs Ray assigned, the GPU if it gave one."""
    import torch
    from ser_core.evaluation.grid import attack_batch
    threads = _task_threads()
    gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    bundle = _worker_bundle(key, files_ref)
    bundle.configure_onnx(threads=threads, cuda=gpu)  # no-op when this worker's bundle has them already
    if cls.kind == "white-box":
        bundle.torch_model().to("cuda" if gpu else "cpu")
    return attack_batch(cls(bundle, **settings), x, "ray")


class RayExecutor:
    """Batches as Ray tasks. address: a running cluster ('auto', 'ray://host:10001', ...);
    None starts a local one with this machine's CPUs (unless Ray is already initialised, as in
    the tests). gpus_per_task: GPUs a white-box task asks for; None: 1 when the cluster has a
    GPU, else 0. in_flight: tasks submitted ahead (default twice the tasks the cluster's CPUs
    can run at once): memory and what a killed driver loses stay bounded."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float | None = None,
                 max_retries: int = 3, in_flight: int | None = None, log=sys.stderr):
        if not cpus_per_task > 0:
            raise ParameterError(f"--cpus-per-task {cpus_per_task!r} (accepted: a number > 0)")
        if gpus_per_task is not None and gpus_per_task < 0:
            raise ParameterError(f"--gpus-per-task {gpus_per_task!r} (accepted: a number >= 0)")
        if max_retries < 0:
            raise ParameterError(f"max_retries {max_retries!r} (accepted: an integer >= 0)")
        self._started = not ray.is_initialized()
        if self._started:
            ray.init(address=address, include_dashboard=False, log_to_driver=True)
        res = ray.cluster_resources()
        self.cpus_per_task = cpus_per_task
        self.gpus_per_task = (1.0 if res.get("GPU", 0) > 0 else 0.0) if gpus_per_task is None else gpus_per_task
        if self.gpus_per_task > res.get("GPU", 0):
            raise ParameterError(f"--gpus-per-task {self.gpus_per_task:g}: the cluster has {res.get('GPU', 0):g} GPUs")
        self.max_retries = max_retries
        slots = max(1, int(res.get("CPU", 1) // cpus_per_task))
        self.in_flight = in_flight or 2 * slots
        self._bundles: dict[str, tuple[str, list]] = {}
        self._pending: dict = {}
        print(f"ray: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs; {cpus_per_task:g} CPUs per task, "
              f"{self.gpus_per_task:g} GPUs per white-box task, up to {self.in_flight} tasks in flight",
              file=log, flush=True)

    def prepare(self, bundle) -> None:
        if bundle.name not in self._bundles:
            key = f"{bundle.name}-{bundle.config.get('weights_sha') or 'unhashed'}"
            self._bundles[bundle.name] = (key, [ray.put(bundle_files(bundle))])

    def resources(self, kind: str) -> dict:
        """What a task of this attack kind asks Ray for: white-box tasks the GPUs, black-box
        tasks (ONNX Runtime queries only) CPUs alone."""
        return {"num_cpus": self.cpus_per_task, "num_gpus": self.gpus_per_task if kind == "white-box" else 0}

    def _submit(self, job):
        cell = job.cell
        key, files_ref = self._bundles[cell.bundle.name]
        return attack_task.options(**self.resources(cell.cls.kind), max_retries=self.max_retries,
                                   retry_exceptions=True).remote(key, files_ref, cell.cls, cell.settings, job.x)

    def run(self, jobs):
        """Submit jobs (at most `in_flight` ahead) and yield (job, result) as each finishes. A
        task that still fails after its retries raises here, once the batches that finished
        before it have been handed back."""
        yield from as_completed(self._submit, jobs, self.in_flight, self._pending)

    def close(self) -> None:
        """Cancel what is still in flight (an interrupted or failed run) and stop the local
        cluster this executor started."""
        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started and ray.is_initialized():
            ray.shutdown()
