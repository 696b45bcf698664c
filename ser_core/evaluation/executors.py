"""Who runs a grid's batches: `LocalExecutor` (this process, in plan order; the default) or
`RayExecutor` (Ray tasks on a local or running cluster; the optional install,
`pip install -r requirements-cluster.txt`). Either way the driver (`run.run_grid`) alone
writes, and a batch is the same call, `attack_batch`: one attack on up to `profile.batch`
examples, its per-example outcomes and where it ran.

An executor has `prepare(bundle)` (before a bundle's first batch), `run(jobs)` (BatchJobs in,
(job, outcomes) out, in the order they finish) and `close()`.

Ray, for more than one process or machine:
  - the driver alone writes: each batch file as its result arrives (`ray.wait`), a cell's rows
    when its last batch is in. A result for a batch already on disk (a retried task that had in
    fact finished, a duplicate) is dropped, so no row is ever written twice;
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
counts the rows equal the local loop's apart from timing fields (`cells.TIMING_FIELDS`).
Ray is imported only when a RayExecutor is made or a Ray task runs: the default path never
imports it."""
from __future__ import annotations

import atexit
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ser_core.errors import ParameterError


def resolve_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ParameterError(f"device {device!r} (accepted: auto, cpu, cuda, cuda:N)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ParameterError(f"device {device!r}: CUDA is not available here (accepted: auto, cpu)")
    return device


def place(bundle, device: str) -> None:
    """Put the bundle's torch model on `device`; white-box attacks get it from
    bundle.torch_model() and must move their inputs to the model's device."""
    bundle.torch_model().to(device)


VERIFIED_FIGURES = ("snr_db", "flipped_before_quantisation", "chunking_unchanged")


def attack_batch(attack, x: np.ndarray, executor: str = "local") -> dict:
    """Per-example outcomes of one attack call, what a row is summarised from, and the batch's
    own facts (cells.BATCH_META): the device it ran on, its process CPU time (all threads; CPU
    time is what projects a run on an idle machine from a loaded one), its wall seconds, the
    torch and ONNX Runtime intra-op threads (0: ONNX Runtime's default, one per core), and the
    executor. cpu_seconds and seconds per example are the batch's shared equally.

    White-box attacks are crafted on the torch model; their adversarial inputs are scored on
    both the torch model and ONNX Runtime (`bundle.predict_features`, which the app serves), so
    each row also says how often the two agree on the attacked inputs ("transfer")."""
    bundle = attack.bundle
    if attack.kind == "white-box":
        device = str(next(bundle.torch_model().parameters()).device)
    else:
        device = "cuda" if "CUDAExecutionProvider" in bundle.onnx_session().get_providers() else "cpu"
    cpu = time.process_time()
    res = attack(x)
    cpu = time.process_time() - cpu
    out = {"cpu_seconds": np.full(len(x), cpu / len(x)), "clean_pred": res.clean_pred, "adv_pred": res.adv_pred,
           "conf_before": res.clean_probs.max(1), "conf_after": res.adv_probs.max(1),
           "mean_abs": res.mean_abs, "l2": res.l2, "linf": res.linf,
           "queries": res.queries.astype(np.int64), "seconds": np.full(len(x), res.seconds / len(x))}
    torch_pred = attack.torch_decisions(res)
    if torch_pred is not None:
        out["torch_pred"] = torch_pred
    # the waveform's verified figures, per clip (they reach the rows' medians and counts)
    for k in VERIFIED_FIGURES:
        if k in res.extra:
            out[k] = np.asarray(res.extra[k], np.float64)
    out.update(device=device, batch_cpu_seconds=cpu, batch_seconds=res.seconds, threads=torch.get_num_threads(),
               onnx_threads=bundle.onnx_session().get_session_options().intra_op_num_threads, executor=executor)
    return out


class LocalExecutor:
    """Every batch in this process, in plan order, on `device`."""

    name = "local"

    def __init__(self, device: str = "cpu"):
        self.device = device
        self._attacks: dict[int, object] = {}

    def prepare(self, bundle) -> None:
        place(bundle, self.device)

    def run(self, jobs):
        for job in jobs:
            cell = job.cell
            attack = self._attacks.get(id(cell))
            if attack is None:
                self._attacks = {id(cell): cell.cls(cell.bundle, **cell.settings)}  # one cell at a time
                attack = self._attacks[id(cell)]
            yield job, attack_batch(attack, job.x, self.name)

    def close(self) -> None:
        pass


# --- Ray ----------------------------------------------------------------------------------
_WORKER_BUNDLES: dict = {}  # in a worker process: bundle key -> ModelBundle, kept between tasks
_REMOTE: dict = {}  # "attack_task" -> its Ray remote function, made on first use


def bundle_files(bundle) -> dict[str, bytes]:
    """What a worker needs to rebuild the bundle: config, weights and the ONNX graph (built and
    parity-checked here once, not on every worker)."""
    from ser_core.models.bundle import CONFIG, ONNX, WEIGHTS
    onnx = bundle.onnx_path()
    return {CONFIG: (bundle.folder / CONFIG).read_bytes(), WEIGHTS: (bundle.folder / WEIGHTS).read_bytes(),
            ONNX: Path(onnx).read_bytes()}


def _worker_bundle(key: str, files_ref: list):
    import ray
    b = _WORKER_BUNDLES.get(key)
    if b is None:
        from ser_core.models.bundle import ModelBundle
        folder = Path(tempfile.mkdtemp(prefix=f"ser-bundle-{key}-"))
        atexit.register(shutil.rmtree, folder, True)
        for name, data in ray.get(files_ref[0]).items():
            (folder / name).write_bytes(data)
        b = _WORKER_BUNDLES[key] = ModelBundle.from_folder(folder)
    return b


def attack_task(key: str, files_ref: list, cls, settings: dict, x):
    """One batch on a Ray worker: threads from the CPUs Ray assigned, the GPU if it gave one."""
    import ray
    from ser_core.tasks import task_threads
    threads = task_threads()
    gpu = bool(ray.get_gpu_ids()) and torch.cuda.is_available()
    bundle = _worker_bundle(key, files_ref)
    bundle.configure_onnx(threads=threads, cuda=gpu)  # no-op when this worker's bundle has them already
    if cls.kind == "white-box":
        bundle.torch_model().to("cuda" if gpu else "cpu")
    return attack_batch(cls(bundle, **settings), x, "ray")


def _remote_attack_task():
    import ray
    if "attack_task" not in _REMOTE:
        _REMOTE["attack_task"] = ray.remote(attack_task)
    return _REMOTE["attack_task"]


class RayExecutor:
    """Batches as Ray tasks. address: a running cluster ('auto', 'ray://host:10001', ...);
    None starts a local one with this machine's CPUs (unless Ray is already initialised, as in
    the tests). gpus_per_task: GPUs a white-box task asks for; None: 1 when the cluster has a
    GPU, else 0. in_flight: tasks submitted ahead (default twice the tasks the cluster's CPUs
    can run at once): memory and what a killed driver loses stay bounded."""

    name = "ray"

    def __init__(self, address: str | None = None, cpus_per_task: float = 1, gpus_per_task: float | None = None,
                 max_retries: int = 3, in_flight: int | None = None, log=sys.stderr):
        import ray
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
        import ray
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
        return _remote_attack_task().options(**self.resources(cell.cls.kind), max_retries=self.max_retries,
                                             retry_exceptions=True).remote(key, files_ref, cell.cls, cell.settings, job.x)

    def run(self, jobs):
        """Submit jobs (at most `in_flight` ahead) and yield (job, result) as each finishes. A
        task that still fails after its retries raises here, once the batches that finished
        before it have been handed back."""
        from ser_core.tasks import as_completed
        yield from as_completed(self._submit, jobs, self.in_flight, self._pending)

    def close(self) -> None:
        """Cancel what is still in flight (an interrupted or failed run) and stop the local
        cluster this executor started."""
        import ray
        for ref in self._pending:
            ray.cancel(ref, force=True)
        self._pending.clear()
        if self._started and ray.is_initialized():
            ray.shutdown()
