"""The evaluation grid: bundles x registered attacks x each attack's `paper_settings`, every
cell broken down into three subsets (all, male, female), one tidy row per subset.

A cell attacks the bundle's test examples (or a balanced subset of them, see `PROFILES`) in
batches, as the study ran ART over its test set. Per-example outcomes of every finished batch
are kept in `<results>.cells/` so that an interrupted run resumes inside a cell, and rows
already in the results file are skipped. Accuracy under attack is measured against the true
labels over all attacked examples: an example the model already got wrong counts as an error
(the study's convention). Attacks move away from the model's clean decision by default (ART's
default when no labels are given, which the study's notebooks relied on).

White-box attacks are crafted on the torch model; their adversarial inputs are scored on both
the torch model and ONNX Runtime (`bundle.predict_features`, which the app serves), so each row
also says how often the two agree on the attacked inputs ("transfer")."""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import ParameterError
from .examples import GENDERS, TestSet, balanced_subset, test_set
from .stats import wilson

SUBSETS = ("all",) + GENDERS


@dataclass(frozen=True)
class Profile:
    """per_group: examples per (class, gender) pair attacked per bundle (None: the whole test
    set); batch: examples per attack call."""

    name: str
    per_group: int | None
    batch: int = 64
    seed: int = 0


PROFILES = {"quick": Profile("quick", 1), "full": Profile("full", None, batch=128)}


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


def select_attacks(names=None, registry=None) -> dict:
    """name -> attack class, in registry order (white-box first, then black-box)."""
    if registry is None:
        from ..attacks import REGISTRY as registry
    names = list(names) if names else sorted(registry, key=lambda n: (registry[n].kind != "white-box", n))
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ParameterError(f"unknown attacks {unknown} (accepted: {', '.join(sorted(registry)) or 'none registered'})")
    return {n: registry[n] for n in names}


def settings_of(cls) -> list[dict]:
    """The study's settings of an attack; its defaults if it declares none."""
    return [dict(s) for s in cls.paper_settings] or [{}]


def setting_key(params: dict) -> str:
    return json.dumps(params, sort_keys=True, default=float)


def row_key(row: dict) -> tuple:
    return (row["model"], row["attack"], row["setting_key"], row["subset"])


def read_rows(path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by an interruption: that cell is simply redone
    return rows


@torch.no_grad()
def torch_probabilities(bundle, x: np.ndarray, batch: int = 128) -> np.ndarray:
    model = bundle.torch_model()
    device = next(model.parameters()).device
    out = [torch.softmax(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(device)), 1).cpu().numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out)


def attack_batch(attack, x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example outcomes of one attack call: what a row is summarised from."""
    res = attack(x)
    out = {"clean_pred": res.clean_pred, "adv_pred": res.adv_pred,
           "conf_before": res.clean_probs.max(1), "conf_after": res.adv_probs.max(1),
           "mean_abs": res.mean_abs, "l2": res.l2, "linf": res.linf,
           "queries": res.queries.astype(np.int64), "seconds": np.full(len(x), res.seconds / len(x))}
    if attack.kind == "white-box":
        out["torch_pred"] = torch_probabilities(attack.bundle, res.x_adv).argmax(1)
    return out


def summarise(cells: dict[str, np.ndarray], ts: TestSet, base: dict) -> list[dict]:
    """Three rows (all / male / female) from per-example outcomes."""
    rows = []
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
                   accuracy_ci=list(wilson(correct, n)),
                   success_rate=mean(cells["adv_pred"] != cells["clean_pred"]),
                   mean_abs=mean(cells["mean_abs"]), l2=mean(cells["l2"]), linf=mean(cells["linf"]),
                   confidence_before=mean(cells["conf_before"]), confidence_after=mean(cells["conf_after"]),
                   queries=mean(cells["queries"]),
                   seconds=float(cells["seconds"].sum()),
                   seconds_per_example=float(cells["seconds"].mean()))
        if "torch_pred" in cells:
            row.update(torch_accuracy=mean(cells["torch_pred"] == ts.labels),
                       torch_onnx_agreement=mean(cells["torch_pred"] == cells["adv_pred"]))
        rows.append(row)
    return rows


def _cell_dir(results: Path, model: str, attack: str, key: str) -> Path:
    h = hashlib.sha256(key.encode()).hexdigest()[:10]
    return results.parent / (results.stem + ".cells") / model / f"{attack}-{h}"


def run_cell(attack, ts: TestSet, batch: int, folder: Path, log) -> dict[str, np.ndarray]:
    """Attack `ts` in batches; finished batches are stored in `folder` and reused on resume."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for b, i in enumerate(range(0, len(ts), batch)):
        f = folder / f"batch{b:05d}.npz"
        if f.is_file():
            parts.append(dict(np.load(f)))
            continue
        out = attack_batch(attack, ts.x[i:i + batch])
        tmp = folder / f"batch{b:05d}.tmp.npz"
        np.savez(tmp, **out)
        tmp.replace(f)
        parts.append(out)
        if len(ts) > batch:
            print(f"    batch {b + 1}/{-(-len(ts) // batch)}", file=log, flush=True)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class Projection:
    """Seconds per example measured per (attack, setting), to project what is left."""

    def __init__(self, rows):
        self.per_example: dict[tuple, float] = {}
        for r in rows:
            if r["subset"] == "all" and r["n"]:
                self.per_example.setdefault((r["attack"], r["setting_key"]), r["seconds_per_example"])

    def add(self, attack, key, spe):
        self.per_example[(attack, key)] = spe

    def estimate(self, attack, key, n) -> float | None:
        spe = self.per_example.get((attack, key))
        if spe is None:
            same = [v for (a, _), v in self.per_example.items() if a == attack]
            spe = float(np.mean(same)) if same else None
        return None if spe is None else spe * n


def bundle_meta(bundle) -> dict:
    c = bundle.config
    return {"model": bundle.name, "corpus": c["corpus"], "language": c.get("language"),
            "protocol": c.get("protocol", c["split"]["protocol"]),
            "defence": (c.get("defence") or {}).get("method"),
            "base_model": (c.get("defence") or {}).get("base", bundle.name)}


def run_grid(bundles, attacks: dict, results, profile: Profile = PROFILES["quick"],
             device: str = "auto", data_dir=None, log=sys.stderr, test_sets: dict | None = None) -> list[dict]:
    """Run every (bundle, attack, setting) cell not yet in `results` (JSON lines), appending
    three rows per cell. test_sets: bundle name -> TestSet, to skip loading from the corpora
    (tests). Returns all rows of the results file."""
    results = Path(results)
    results.parent.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    done_rows = read_rows(results)
    done = {row_key(r) for r in done_rows}
    proj = Projection(done_rows)
    t_start = time.perf_counter()
    plan = []
    for bundle in bundles:
        for name, cls in attacks.items():
            for s in settings_of(cls):
                plan.append((bundle, name, cls, s))
    fulls: dict[str, TestSet] = dict(test_sets or {})
    subsets: dict[str, TestSet] = {}
    for i, (bundle, name, cls, settings) in enumerate(plan):
        key = setting_key(settings)
        if all((bundle.name, name, key, s) in done for s in SUBSETS):
            continue
        if bundle.name not in subsets:
            place(bundle, device)
            if bundle.name not in fulls:
                fulls[bundle.name] = test_set(bundle, data_dir)
            full = fulls[bundle.name]
            subsets[bundle.name] = full.take(balanced_subset(full, profile.per_group, profile.seed))
        ts, total = subsets[bundle.name], fulls[bundle.name]
        attack = cls(bundle, **settings)
        t0 = time.perf_counter()
        cells = run_cell(attack, ts, profile.batch, _cell_dir(results, bundle.name, name, key), log)
        base = dict(bundle_meta(bundle), profile=profile.name, attack=name, kind=cls.kind, goal=cls.goal,
                    setting=settings, setting_key=key, device=device,
                    test_examples={"all": len(total), **{g: int((total.genders == g).sum()) for g in GENDERS}})
        rows = summarise(cells, ts, base)
        with results.open("a") as fh:
            for r in rows:
                fh.write(json.dumps(r, default=_json_default) + "\n")
        done_rows += rows
        proj.add(name, key, rows[0]["seconds_per_example"])
        left = [proj.estimate(nm, setting_key(s), len(subsets.get(b.name, ts))) for b, nm, _, s in plan[i + 1:]]
        known = [v for v in left if v is not None]
        eta = f", about {sum(known) / 60:.1f} min left" + ("" if len(known) == len(left) else " (+ unmeasured)") if left else ""
        a = rows[0]
        print(f"[{i + 1}/{len(plan)}] {bundle.name} {name} {key}: accuracy {a['accuracy']:.3f} "
              f"(clean {a['clean_accuracy']:.3f}, n={a['n']}), {time.perf_counter() - t0:.1f} s; "
              f"elapsed {(time.perf_counter() - t_start) / 60:.1f} min{eta}", file=log, flush=True)
    return done_rows


def project_full(rows: list[dict]) -> dict:
    """Projected seconds of the full profile (whole test sets) from the seconds per example
    measured in `rows`, per model and in total."""
    per_model: dict[str, float] = {}
    for r in rows:
        if r["subset"] == "all" and r.get("defence") is None:
            per_model[r["model"]] = per_model.get(r["model"], 0.0) + r["seconds_per_example"] * r["test_examples"]["all"]
    return {"per_model_seconds": per_model, "total_seconds": sum(per_model.values())}


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
