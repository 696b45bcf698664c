"""Ray as the grid's engine (ser_core/evaluation/executors.py, RayExecutor) and as the map of
independent tasks (ser_core/tasks.py): a local 2-CPU cluster started here runs a small grid and
gives the local loop's rows; a task that fails once is retried and its rows appear once; an
interrupted Ray run resumes with only the missing batches; cross-validation folds run as tasks.
And the default path never imports Ray. The tests that start Ray are marked slow."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ser_core.evaluation import cells, plan
from ser_core.evaluation.run import run_grid
from tests.test_evaluation import ATTACKS, RandomSign, SignStep

REPO = Path(__file__).resolve().parent.parent


def test_default_path_never_imports_ray(tmp_path, data_dir, bundle):
    """Every ser_core module but the Ray executor, and a real `python -m export evaluate` run
    without --executor, in a process where importing ray fails."""
    code = f"""
import importlib, pkgutil, sys, json
sys.modules["ray"] = None  # any `import ray` now raises ImportError
import ser_core
for m in pkgutil.walk_packages(ser_core.__path__, "ser_core."):
    if m.name != "ser_core.tasks":
        importlib.import_module(m.name)
from export.cli import main
main(["evaluate", "--models", {bundle.name!r}, "--attacks", "fgsm", "--examples", "2", "--threads", "1",
      "--out", {str(tmp_path)!r}, "--no-report"])
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", SER_DATA_DIR=str(data_dir))
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = cells.read_rows(tmp_path / "results-quick.jsonl")
    assert len(rows) == 3 * len(__import__("ser_core.attacks", fromlist=["registry"]).registry()["fgsm"].paper_settings)
    assert {b["executor"] for r in rows for b in r["batches"]} == {"local"}


try:
    import ray
except ImportError:  # requirements-cluster.txt not installed: the Ray tests skip
    ray = None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A local Ray cluster of 2 CPUs, no dashboard; workers see SER_TEST_CALLS, a folder where
    the test attacks below leave one file per call."""
    if ray is None:
        pytest.skip("ray is not installed (pip install -r requirements-cluster.txt)")
    calls = tmp_path_factory.mktemp("calls")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"SER_TEST_CALLS": str(calls), "OMP_NUM_THREADS": "1"}})
    yield calls
    ray.shutdown()


def _mark(attack, x) -> Path:
    """Leave a file for this call: <calls>/<class>/<eps>-<first feature of the batch>-<size>-<n>."""
    folder = Path(os.environ["SER_TEST_CALLS"]) / type(attack).__name__
    folder.mkdir(exist_ok=True)
    stem = f"{attack.settings['eps']:g}-{float(x[0, 0, 0]):.6f}-{len(x)}"
    n = len(list(folder.glob(stem + "-*")))
    path = folder / f"{stem}-{n}"
    path.touch()
    return path


class CountedSign(SignStep):
    def __call__(self, x, *a, **k):
        _mark(self, x)
        return super().__call__(x, *a, **k)


class FailsOnce(SignStep):
    """Raises on the first attempt at each batch, runs on the second."""

    def __call__(self, x, *a, **k):
        if _mark(self, x).name.endswith("-0"):
            raise RuntimeError("simulated failure of a task's first attempt")
        return super().__call__(x, *a, **k)


def _calls(cluster, cls) -> list[str]:
    folder = cluster / cls.__name__
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _strip(rows):
    return {cells.row_key(r): {k: v for k, v in r.items() if k not in cells.TIMING_FIELDS} for r in rows}


@pytest.fixture(scope="module")
def local_rows(bundle, four, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "results.jsonl"
    return run_grid([bundle], ATTACKS, out, plan.Profile("test", None, batch=3), device="cpu",
                    test_sets={bundle.name: four})


@pytest.fixture(scope="module")
def four(test_examples):
    from ser_core.data.held_out import HeldOutSet
    x, labels, genders = test_examples
    idx = np.concatenate([np.flatnonzero(genders == g)[:2] for g in ("male", "female")])
    return HeldOutSet(x[idx], labels[idx], genders[idx], idx)


@pytest.mark.slow
def test_ray_gives_the_local_loops_rows(cluster, bundle, four, local_rows, tmp_path):
    from ser_core.evaluation.executors import RayExecutor
    out = tmp_path / "results.jsonl"
    rows = run_grid([bundle], ATTACKS, out, plan.Profile("test", None, batch=3),
                    test_sets={bundle.name: four}, executor=RayExecutor(cpus_per_task=1, log=io.StringIO()),
                    log=io.StringIO())
    assert ray.is_initialized()  # the executor did not stop a cluster it did not start
    assert len(rows) == len(local_rows) == 9
    assert _strip(rows) == _strip(local_rows)
    for r in rows:  # 4 examples in batches of 3: two tasks per cell, each on 1 CPU, 1 thread
        assert [b["examples"] for b in r["batches"]] == [3, 1]
        assert {(b["executor"], b["device"], b["threads"], b["onnx_threads"]) for b in r["batches"]} == {("ray", "cpu", 1, 1)}
        assert r["cpu_seconds"] > 0 and r["device"] == "cpu"


@pytest.mark.slow
def test_a_task_that_fails_once_is_retried_and_its_rows_appear_once(cluster, bundle, four, local_rows, tmp_path):
    from ser_core.evaluation.executors import RayExecutor
    out = tmp_path / "results.jsonl"
    rows = run_grid([bundle], {"signstep": FailsOnce, "randomsign": RandomSign}, out,
                    plan.Profile("test", None, batch=3), test_sets={bundle.name: four},
                    executor=RayExecutor(cpus_per_task=1, log=io.StringIO()), log=io.StringIO())
    calls = _calls(cluster, FailsOnce)
    assert len(calls) == 2 * 2 * 2  # 2 settings x 2 batches, each tried twice
    lines = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(lines) == len({cells.row_key(r) for r in lines}) == 9  # no row twice
    assert _strip(rows) == _strip(local_rows)


class _StopAtFirstBatch(io.StringIO):
    """A log that interrupts the driver when it has written its first batch file."""

    def write(self, text):
        if "(1 done)" in text:
            raise KeyboardInterrupt("simulated interruption")
        return super().write(text)


@pytest.mark.slow
def test_an_interrupted_ray_run_resumes_with_the_missing_batches(cluster, bundle, four, local_rows, tmp_path):
    from ser_core.evaluation.executors import RayExecutor
    out = tmp_path / "results.jsonl"
    attacks = {"signstep": CountedSign, "randomsign": RandomSign}
    profile = plan.Profile("test", None, batch=3)
    with pytest.raises(KeyboardInterrupt):
        run_grid([bundle], attacks, out, profile, test_sets={bundle.name: four},
                 executor=RayExecutor(cpus_per_task=1, in_flight=1, log=io.StringIO()), log=_StopAtFirstBatch())
    kept = list(out.parent.glob("results.cells/*/*/batch*.npz"))
    assert len(kept) == 1 and not out.exists()  # one batch on disk, no cell finished
    first = len(_calls(cluster, CountedSign))
    rows = run_grid([bundle], attacks, out, profile, test_sets={bundle.name: four},
                    executor=RayExecutor(cpus_per_task=1, log=io.StringIO()), log=io.StringIO())
    # 4 signstep batches in all; the one on disk is not redone (one more may have been in flight)
    assert len(_calls(cluster, CountedSign)) - first == 3
    assert _strip(rows) == _strip(local_rows)


def _square_failing_once(k: int):
    """k squared and the torch threads of the task; raises on the first attempt at each k."""
    import torch
    folder = Path(os.environ["SER_TEST_CALLS"]) / "square"
    folder.mkdir(exist_ok=True)
    first = not (folder / str(k)).exists()
    (folder / str(k)).touch()
    if first:
        raise RuntimeError("simulated failure of a task's first attempt")
    return k * k, torch.get_num_threads()


@pytest.mark.slow
def test_map_tasks_runs_one_task_per_item_retried_with_the_tasks_threads(cluster):
    from ser_core.tasks import map_tasks
    got = list(map_tasks(_square_failing_once, [(k,) for k in range(4)], cpus_per_task=2))
    assert sorted(args for args, _ in got) == [(k,) for k in range(4)]  # each once
    assert all(res == (args[0] ** 2, 2) for args, res in got)  # 2 CPUs per task: 2 torch threads


@pytest.mark.slow
def test_white_box_tasks_ask_for_a_gpu_when_the_cluster_has_one(cluster, monkeypatch):
    from ser_core.errors import ParameterError
    from ser_core.evaluation.executors import RayExecutor
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 8.0, "GPU": 2.0})
    ex = RayExecutor(cpus_per_task=2, log=io.StringIO())
    assert ex.resources("white-box") == {"num_cpus": 2, "num_gpus": 1.0}
    assert ex.resources("black-box") == {"num_cpus": 2, "num_gpus": 0}
    assert RayExecutor(gpus_per_task=0.25, log=io.StringIO()).resources("white-box")["num_gpus"] == 0.25
    assert ex.in_flight == 2 * 4  # twice the tasks 8 CPUs run at once
    with pytest.raises(ParameterError, match="GPUs"):
        RayExecutor(gpus_per_task=3, log=io.StringIO())
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    assert RayExecutor(log=io.StringIO()).resources("white-box")["num_gpus"] == 0  # no GPU: CPU only


@pytest.mark.slow
def test_crossval_folds_as_ray_tasks_give_the_local_records_written_once(cluster, tmp_path, data_dir):
    from ser_core.training.crossval import ray_folds, run_crossval
    from tests.test_crossval import tiny_emodb
    (tmp_path / "emodb").mkdir()
    corpus = tiny_emodb(tmp_path / "emodb", data_dir)
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray tasks (one CPU each): the same arithmetic
    try:
        local = run_crossval("emodb", corpus, "ours", folds=[0, 1], max_epochs=1, run_root=tmp_path / "a",
                             out_dir=tmp_path / "ra")
    finally:
        torch.set_num_threads(threads)
    remote = run_crossval("emodb", corpus, "ours", folds=[0, 1], max_epochs=1, run_root=tmp_path / "b",
                          out_dir=tmp_path / "rb", executor=ray_folds())
    assert local["folds_done"] == remote["folds_done"] == [0, 1]
    for k in (0, 1):
        a = json.loads(next((tmp_path / "a").glob(f"*/fold-{k}.json")).read_text())
        b = json.loads(next((tmp_path / "b").glob(f"*/fold-{k}.json")).read_text())
        assert [c["file"] for c in a["clips"]] == [c["file"] for c in b["clips"]]
        assert np.allclose([c["probs"] for c in a["clips"]], [c["probs"] for c in b["clips"]], atol=1e-4)
    # a rerun finds both folds on disk and submits nothing
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "b").glob("*/fold-*.json")}
    run_crossval("emodb", corpus, "ours", folds=[0, 1], max_epochs=1, run_root=tmp_path / "b",
                 out_dir=tmp_path / "rb", executor=ray_folds())
    assert {p: p.stat().st_mtime_ns for p in before} == before
