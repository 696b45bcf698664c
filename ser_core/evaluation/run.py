"""The evaluation grid run: every (bundle, attack, setting) cell of the plan not yet in the
results file, its batches handed to an executor, its three rows (all, male, female) written
when its last batch is in.

Accuracy under attack is measured against the true labels over all attacked examples: an
example the model already got wrong counts as an error (the study's convention). Attacks move
away from the model's clean decision by default (ART's default when no labels are given, which
the study's notebooks relied on). Every row records how many examples stand behind it and
their Wilson interval.

  plan.py       profiles, the cells and their examples, projected cost (costs.json)
  cells.py      batch files, resume, rows and the results file
  executors.py  who runs the batches: this process or Ray tasks
  run.py        this loop, which alone writes"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from ser_core.data.held_out import GENDERS, TEST_SETS, HeldOutSet, balanced_order
from ser_core.evaluation.cells import (BatchJob, Cell, append_rows, bundle_meta, cell_dir, combine, done_cells,
                                       load_batch, read_rows, save_batch, summarise)
from ser_core.evaluation.executors import LocalExecutor, resolve_device
from ser_core.evaluation.plan import (PROFILES, Profile, Projection, bundle_test_size, cost_per_example, examples_for,
                                      load_costs, plan_grid, setting_key)


def run_grid(bundles, attacks: dict, results, profile: Profile = PROFILES["quick"],
             device: str = "auto", data_dir=None, log=sys.stderr, test_sets: dict | None = None,
             costs: dict | None = None, executor=None) -> list[dict]:
    """Run every (bundle, attack, setting) cell not yet in `results` (JSON lines), appending
    three rows per cell. test_sets: bundle name (feature attacks) or (bundle name, domain) ->
    HeldOutSet, to skip loading from the corpora (tests). executor: who runs the batches (default `LocalExecutor(device)`, this process;
    `executors.RayExecutor` for Ray tasks). Whoever runs them, this process alone writes: each
    batch file as its result arrives (a batch already there, from a retried or duplicated task
    or an earlier run, is kept and the new result dropped), and a cell's rows once, when its
    last batch is in. Returns all rows of the results file."""
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    if executor is None:
        executor = LocalExecutor(resolve_device(device))
    done_rows = read_rows(results)
    done = done_cells(done_rows, bundles)
    proj = Projection(done_rows, load_costs() if costs is None else costs)
    t_start = time.perf_counter()
    plan = plan_grid(bundles, attacks)
    fulls: dict[tuple, HeldOutSet] = {(k if isinstance(k, tuple) else (k, "features")): v
                                      for k, v in (test_sets or {}).items()}
    orders: dict[tuple, np.ndarray] = {}
    prepared: set[str] = set()
    finished: set[int] = set()

    def todo(i) -> bool:
        bundle, name, cls, settings = plan[i]
        key = (bundle.name, cls.domain)
        size = len(fulls[key]) if key in fulls else bundle_test_size(bundle, cls.domain)
        return i not in finished and done.get((bundle.name, name, setting_key(settings))) != examples_for(profile, name, size)

    def finish(cell: Cell) -> None:
        if cell.written:
            return
        cells, batches = combine([cell.parts[b] for b in range(cell.batches)])
        base = dict(bundle_meta(cell.bundle), profile=profile.name, attack=cell.name, domain=cell.cls.domain,
                    kind=cell.cls.kind, goal=cell.cls.goal, setting=cell.settings, setting_key=cell.key,
                    selection="whole test set" if len(cell.ts) == len(cell.total) else
                    f"first {len(cell.ts)} of a class- and gender-balanced order (seed {profile.seed})",
                    test_examples={"all": len(cell.total), **{g: int((cell.total.genders == g).sum()) for g in GENDERS}})
        rows = summarise(cells, cell.ts, base, batches)
        append_rows(results, rows)
        cell.written = True
        cell.parts = {}
        finished.add(cell.index)
        done_rows.extend(rows)
        proj.add(cell.name, cell.key, cost_per_example(rows[0]), cell.bundle.name)
        left = [proj.estimate(nm, setting_key(st), examples_for(profile, nm, bundle_test_size(b, c.domain) or len(cell.ts)),
                              b.name) for j, (b, nm, c, st) in enumerate(plan) if todo(j)]
        known = [v for v in left if v is not None]
        eta = f", about {sum(known) / 60:.1f} min left" + ("" if len(known) == len(left) else " (+ unmeasured)") if left else ""
        a = rows[0]
        print(f"[{cell.index + 1}/{len(plan)}] {cell.bundle.name} {cell.name} {cell.key}: accuracy {a['accuracy']:.3f} "
              f"(clean {a['clean_accuracy']:.3f}, n={a['n']}), {sum(b['seconds'] for b in batches):.1f} s attacking; "
              f"elapsed {(time.perf_counter() - t_start) / 60:.1f} min{eta}", file=log, flush=True)

    def jobs():
        for i, (bundle, name, cls, settings) in enumerate(plan):
            if not todo(i):
                continue
            examples = (bundle.name, cls.domain)
            if examples not in orders:
                if examples not in fulls:
                    fulls[examples] = TEST_SETS[cls.domain](bundle, data_dir)
                orders[examples] = balanced_order(fulls[examples], profile.seed)
            if bundle.name not in prepared:
                executor.prepare(bundle)
                prepared.add(bundle.name)
            total = fulls[examples]
            ts = total.take(np.sort(orders[examples][:examples_for(profile, name, len(total))]))
            key = setting_key(settings)
            cell = Cell(i, bundle, name, cls, settings, key, ts, total,
                        cell_dir(results, bundle.name, name, key, ts.rows, bundle.config.get("weights_sha"),
                                 profile.batch), profile.batch)
            cell.folder.mkdir(parents=True, exist_ok=True)
            for b in range(cell.batches):
                if cell.path(b).is_file():
                    cell.parts[b] = load_batch(cell.path(b))
            if len(cell.parts) == cell.batches:  # every batch on disk from an earlier run
                finish(cell)
                continue
            for b in range(cell.batches):
                if b not in cell.parts:
                    yield BatchJob(cell, b)

    def accept(job: BatchJob, out: dict) -> None:
        cell = job.cell
        if cell.written or job.number in cell.parts:
            return  # a retried or duplicated task: the first result stands
        path = cell.path(job.number)
        if path.is_file():
            out = load_batch(path)
        else:
            save_batch(path, out)
        cell.parts[job.number] = out
        if cell.batches > 1:
            print(f"    {cell.bundle.name} {cell.name} {cell.key}: batch {job.number + 1}/{cell.batches} "
                  f"({len(cell.parts)} done)", file=log, flush=True)
        if len(cell.parts) == cell.batches:
            finish(cell)

    try:
        for job, out in executor.run(jobs()):
            accept(job, out)
    finally:
        executor.close()
    return read_rows(results)
