"""A grid cell's storage: its batches on disk, the rows summarised from them, and the results
file those rows are appended to.

A cell is one (bundle, attack, setting); it attacks its examples in batches, and the outcomes
of every finished batch are kept in `<results>.cells/`, in a folder per cell keyed by the
model's weights, the setting, the example rows and the batch size, so that an interrupted run
resumes inside a cell. When its last batch is in, the cell becomes three rows (all, male,
female) in the results file (JSON lines); rows already there are skipped by the next run
(`done_cells`), unless they were measured on weights the model no longer has
(`current_rows`). Each batch file also records where the batch ran (BATCH_META), and each row
lists its batches."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ser_core.data.held_out import GENDERS, HeldOutSet
from ser_core.stats import wilson

SUBSETS = ("all",) + GENDERS

# per-batch facts stored beside the per-example outcomes: where and how the batch ran
BATCH_META = ("device", "batch_cpu_seconds", "batch_seconds", "threads", "onnx_threads", "executor")
# row fields that depend on where and when a batch ran, not on what the attack did: two runs
# of the same grid (local loop or Ray, any machine) agree on every other field
TIMING_FIELDS = ("seconds", "seconds_per_example", "cpu_seconds", "device", "batches")


def row_key(row: dict) -> tuple:
    return (row["model"], row["attack"], row["setting_key"], row["subset"])


def read_rows(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that cell is simply redone
            # a cell redone with another example count replaces the earlier rows
            rows[row_key(r) if "setting_key" in r else len(rows)] = r
    return list(rows.values())


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append a cell's rows in one write (numpy scalars and arrays as plain JSON)."""
    with Path(path).open("a") as fh:
        fh.write("".join(json.dumps(r, default=_json_default) + "\n" for r in rows))


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def bundle_weights(bundles) -> dict[str, str | None]:
    """Model name -> the weights_sha of the loaded bundle of that name (what `current_rows` reads)."""
    return {b.name: b.config.get("weights_sha") for b in bundles}


def current_rows(rows: list[dict], weights: dict[str, str | None]) -> tuple[list[dict], dict[str, int]]:
    """The rows measured on each model's weights now (`weights`: model name -> weights_sha of
    the bundle of that name), and per model the count of rows left out because they were
    measured on weights the bundle no longer has (a retrained model whose cells have not all been
    rerun; a bundle without a recorded hash matches none). Rows of a model not in `weights`, or
    without a recorded hash, stay. The resume check (`done_cells`) and the report share this rule."""
    kept, left = [], {}
    for r in rows:
        if r["model"] in weights and r.get("weights_sha") and r["weights_sha"] != weights[r["model"]]:
            left[r["model"]] = left.get(r["model"], 0) + 1
        else:
            kept.append(r)
    return kept, left


def done_cells(rows, bundles=()) -> dict:
    """(model, attack, setting_key) -> examples behind its rows, for cells with all three rows.
    Rows written for other weights than those of the same-named bundle in `bundles` (a
    retrained model) do not count; rows from before weights were recorded do."""
    have = {}
    for r in current_rows(rows, bundle_weights(bundles))[0]:
        have.setdefault((r["model"], r["attack"], r["setting_key"]), {})[r["subset"]] = r["n"]
    return {k: v["all"] for k, v in have.items() if set(SUBSETS) <= set(v)}


def save_batch(path: Path, out: dict) -> None:
    """Write a batch file atomically (a cut write leaves no file, so the batch is redone)."""
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)


def load_batch(path: Path) -> dict:
    with np.load(path) as f:
        out = {k: f[k] for k in f.files}
    for k in BATCH_META:
        if k in out:
            out[k] = out[k].item()
    return out


def cell_dir(results: Path, model: str, attack: str, key: str, rows: np.ndarray, weights: str | None = None,
             batch: int | None = None) -> Path:
    """Per-cell folder, named by the setting, the examples attacked, the model's weights and the
    batch size (a different count, a retrained model of the same name, or batches cut at other
    examples must not reuse another's batch files)."""
    h = hashlib.sha256(key.encode() + np.asarray(rows, np.int64).tobytes()
                       + (weights or "").encode() + f"|batch={batch}".encode()).hexdigest()[:10]
    return results.parent / (results.stem + ".cells") / model / f"{attack}-{h}"


@dataclass(eq=False)
class Cell:
    """One (bundle, attack, setting) cell in a run: its examples, its batch folder, the batches
    it has so far (number -> outcomes) and whether its rows are written."""

    index: int
    bundle: object
    name: str
    cls: type
    settings: dict
    key: str
    ts: HeldOutSet
    total: HeldOutSet
    folder: Path
    batch: int
    parts: dict = field(default_factory=dict)
    written: bool = False

    @property
    def batches(self) -> int:
        return -(-len(self.ts) // self.batch)

    def span(self, number: int) -> tuple[int, int]:
        return number * self.batch, min(len(self.ts), (number + 1) * self.batch)

    def path(self, number: int) -> Path:
        return self.folder / f"batch{number:05d}.npz"


@dataclass(frozen=True, eq=False)
class BatchJob:
    """One attack call: batch `number` of `cell` (what an executor runs)."""

    cell: Cell
    number: int

    @property
    def x(self) -> np.ndarray:
        start, stop = self.cell.span(self.number)
        return self.cell.ts.x[start:stop]


def combine(parts: list[dict]) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Batches in order -> (per-example outcomes of the cell, the batches' own facts)."""
    keys = [k for k in parts[0] if k not in BATCH_META]
    cells = {k: np.concatenate([p[k] for p in parts]) for k in keys}
    batches = [{"examples": len(p["adv_pred"]), "device": p.get("device", "unknown"),
                "cpu_seconds": float(p.get("batch_cpu_seconds", p["cpu_seconds"].sum())),
                "seconds": float(p.get("batch_seconds", p["seconds"].sum())),
                "threads": p.get("threads"), "onnx_threads": p.get("onnx_threads"),
                "executor": p.get("executor")} for p in parts]
    return cells, batches


def summarise(cells: dict[str, np.ndarray], ts: HeldOutSet, base: dict, batches: list[dict] | None = None) -> list[dict]:
    """Three rows (all / male / female) from per-example outcomes; `batches` (from `combine`)
    give each row the devices its batches ran on and their own timings."""
    rows = []
    if batches is not None:
        base = dict(base, device=",".join(sorted({b["device"] for b in batches})), batches=batches)
    for subset in SUBSETS:
        m = np.ones(len(ts), bool) if subset == "all" else ts.genders == subset
        n = int(m.sum())
        y = ts.labels[m]
        correct = int((cells["adv_pred"][m] == y).sum())
        clean_correct = int((cells["clean_pred"][m] == y).sum())
        mean = (lambda a: float(a[m].mean()) if n else None)
        row = dict(base, subset=subset, n=n,
                   clean_accuracy=clean_correct / n if n else None, clean_correct=clean_correct,
                   accuracy=correct / n if n else None, correct=correct,
                   # wrong before the attack, right after: the attack moved a wrong decision onto the label
                   restored=int(((cells["clean_pred"][m] != y) & (cells["adv_pred"][m] == y)).sum()),
                   accuracy_ci=list(wilson(correct, n)),
                   success_rate=mean(cells["adv_pred"] != cells["clean_pred"]),
                   mean_abs=mean(cells["mean_abs"]), l2=mean(cells["l2"]), linf=mean(cells["linf"]),
                   confidence_before=mean(cells["conf_before"]), confidence_after=mean(cells["conf_after"]),
                   queries=mean(cells["queries"]),
                   seconds=float(cells["seconds"].sum()),
                   seconds_per_example=float(cells["seconds"].mean()),
                   cpu_seconds=float(cells["cpu_seconds"].sum()) if "cpu_seconds" in cells else None)
        if "torch_pred" in cells:
            row.update(torch_accuracy=mean(cells["torch_pred"] == ts.labels),
                       torch_onnx_agreement=mean(cells["torch_pred"] == cells["adv_pred"]))
        if "snr_db" in cells:  # waveform cells: the written WAV's figures
            row.update(verified_figures(cells, m))
        rows.append(row)
    return rows


def verified_figures(cells: dict[str, np.ndarray], m: np.ndarray) -> dict:
    """Of a waveform cell's clips (mask m): the median SNR of the verified flips (dB, over the
    written WAV), flips lost to 16-bit rounding (flipped before rounding, not after) and clips whose
    written WAV chunks differently from the clean clip."""
    flipped = cells["adv_pred"][m] != cells["clean_pred"][m]
    snr = cells["snr_db"][m][flipped]
    snr = snr[np.isfinite(snr)]
    return {"median_snr_db": float(np.median(snr)) if len(snr) else None,
            "lost_to_rounding": int(((cells["flipped_before_quantisation"][m] > 0) & ~flipped).sum()),
            "chunking_changed": int((cells["chunking_unchanged"][m] == 0).sum())}


def bundle_meta(bundle) -> dict:
    """The fields every row of a bundle's cells carries about the model."""
    c = bundle.config
    meta = {"model": bundle.name, "weights_sha": c.get("weights_sha"), "corpus": c["corpus"], "language": c.get("language"),
            "protocol": c.get("protocol", c["split"]["protocol"]),
            "defence": (c.get("defence") or {}).get("method"),
            "base_model": (c.get("defence") or {}).get("base", bundle.name)}
    if c.get("defence"):
        # defended bundles are not shipped (models/ holds the undefended ones only), so the rows
        # carry what the report needs about them: the recipe, how long training took, where
        # the bundle was, and its clean accuracy on the whole test set
        t = c.get("training", {})
        meta["defence_config"] = dict(c["defence"], trained_epochs=t.get("epochs"), trained_steps=t.get("steps"),
                                      training_seconds=t.get("seconds"), hardware=t.get("hardware"),
                                      folder=str(bundle.folder))
        meta["bundle_test_metrics"] = {k: v for k, v in c.get("metrics", {}).get("test", {}).items() if k != "confusion"}
    return meta
