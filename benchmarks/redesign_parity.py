"""Behaviour snapshot for a redesign that must not change results: every registered attack's
outputs (a hash of the adversarial input, decisions, per-example query counts, the summary and
the clip result's `to_dict`, seconds and temporary paths left out), and the quick evaluation's
rows and report on one bundle (timing fields and lines left out).

    python benchmarks/redesign_parity.py snapshot OUT.json [BEFORE.json]  # before, then after
    python benchmarks/redesign_parity.py compare BEFORE.json AFTER.json

The "after" snapshot also re-attacks every clip of the before snapshot's waveform evaluation (the
per-clip rows of the separate waveform part, which became grid cells) with the one attack call,
so the verified outcomes are compared clip by clip. `compare` lists fields the redesign added (new
keys) apart from fields whose values changed; only the latter count as differences.

One torch and ONNX Runtime thread, fixed seeds: two runs of the same code give the same file."""
from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CLIP = ROOT / "examples" / "ravdess-happiness-actor01m.wav"
N_FEATURE = 3  # chunks attacked per feature-attack setting
DROP = {"seconds", "wav_path", "cpu_seconds", "seconds_per_example", "batches", "device", "files",
        "wall_seconds", "threads", "onnx_threads"}


def _h(a) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _clean(d):
    if isinstance(d, dict):
        return {k: _clean(v) for k, v in d.items() if k not in DROP}
    if isinstance(d, (list, tuple)):
        return [_clean(v) for v in d]
    if isinstance(d, float):
        return None if math.isinf(d) or math.isnan(d) else round(d, 6)
    if isinstance(d, (np.floating,)):
        return round(float(d), 6)
    if isinstance(d, (np.integer,)):
        return int(d)
    if isinstance(d, np.ndarray):
        return _clean(d.tolist())
    return d


# --- the one place that knows the attack call protocol (switched by the redesign) -------------
def feature_attacks():
    from ser_core.attacks import registry
    return registry("features")


def waveform_attacks():
    from ser_core.attacks import registry
    return registry("waveform")


def run_feature(bundle, name, params, x):
    from ser_core.attacks import get_attack
    r = get_attack(name, bundle, **params)(x)  # the one call: untargeted, away from the clean decisions
    return {"adv_hash": _h(r.x_adv), "clean_pred": r.clean_pred, "adv_pred": r.adv_pred, "queries": r.queries,
            "flipped": r.flipped, "summary": r.summary(), "extra": {k: v for k, v in r.extra.items()}}


def run_clip(bundle, name, params, domain, target=None):
    from ser_core.attacks.clip import attack_clip
    with tempfile.TemporaryDirectory() as d:
        r = attack_clip(bundle, CLIP, name, params, domain=domain, out_dir=d, target=target)
        out = r.to_dict()
        if domain == "waveform":
            out["audio_hash"] = _h(r.adversarial_audio)
        else:
            out["adv_hash"] = _h(r.adversarial_features)
    return out
# ------------------------------------------------------------------------------------------------


WAVEFORM_RUNS = {
    "apgd": [{"snr_db": 30, "steps": 10}, {"snr_db": 40, "steps": 10, "budget": "linf"},
             {"steps": 8, "budget": "masking"}],
    "pgd": [{"snr_db": 30, "steps": 10}],
    "cw": [{"steps": 10, "binary_steps": 2}],
    "square": [{"snr_db": 30, "max_queries": 40}],
}
COSTLY = {"boundary": {"max_iter": 10, "num_trial": 5, "init_size": 20}, "pixel": {"max_iter": 2},
          "cw_l2": {"binary_search_steps": 2}}


def snapshot(out: Path, before: Path | None = None):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    from ser_core.models.bundle import ModelBundle
    bundle = ModelBundle.load("emodb")
    bundle.configure_onnx(threads=1)
    rav = ModelBundle.load("ravdess")
    rav.configure_onnx(threads=1)
    x = bundle.features(_decode(CLIP))[:N_FEATURE]
    snap = {"features": {}, "clips": {}, "evaluation": {}}
    for name, cls in sorted(feature_attacks().items()):
        settings = [dict(s) for s in cls.paper_settings] or [{}]
        if name in COSTLY:
            settings = [{**settings[0], **{k: v for k, v in COSTLY[name].items() if k in cls.params}}]
        for s in settings:
            key = f"{name} {json.dumps(s, sort_keys=True)}"
            snap["features"][key] = _clean(run_feature(bundle, name, s, x))
            print(key, snap["features"][key]["summary"]["flipped"], file=sys.stderr, flush=True)
    snap["clips"]["fgsm features"] = _clean(run_clip(rav, "fgsm", {"eps": 0.5}, "features"))
    for name, runs in WAVEFORM_RUNS.items():
        for p in runs:
            for target in (None, "sadness"):
                key = f"{name} {json.dumps(p, sort_keys=True)} target={target}"
                snap["clips"][key] = _clean(run_clip(rav, name, p, "waveform", target))
                print(key, snap["clips"][key].get("verified_flipped"), file=sys.stderr, flush=True)
    snap["evaluation"] = quick_evaluation(before)
    out.write_text(json.dumps(snap, indent=1, sort_keys=True))


def _decode(path):
    from ser_core.audio.decode import load_audio
    return load_audio(path, 16_000)


EXAMPLES = "fgsm=4,bim=4,deepfool=4,jsma=4,cw_linf=4,cw_l2=2,boundary=2,pixel=2"
DATA = ROOT.parent / "shared" / "data"


FEATURE_ATTACKS = "bim,cw_l2,cw_linf,deepfool,fgsm,jsma,boundary,pixel"
TIMING = ("second", "CPU-h", "minute", "wall", "hours", "Projected", "projected", "s / example")


def quick_evaluation(before: Path | None = None) -> dict:
    """The quick profile on emodb (EXAMPLES a cell, the study's feature attacks) through the
    command line; and the waveform evaluation's clips: before the redesign its own part (one clip
    per gender, per-clip rows), after it those same clips re-attacked by the one attack call."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "export", "evaluate", "--profile", "quick", "--models", "emodb",
               "--examples", EXAMPLES, "--threads", "1", "--out", d, "--data-dir", str(DATA)]
        waveform_part = before is None and _has_waveform_part()
        subprocess.run(cmd if waveform_part else cmd + ["--attacks", FEATURE_ATTACKS], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        rows = [json.loads(l) for l in (Path(d) / "results-quick.jsonl").read_text().splitlines() if l.strip()]
        report = (Path(d) / "README.md").read_text().splitlines()
        if waveform_part:
            subprocess.run(cmd + ["--waveform", "--clips", "1"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
            wrows = [json.loads(l) for l in (Path(d) / "results-quick-waveform.jsonl").read_text().splitlines()
                     if l.strip()]
        else:
            wrows = reattack(json.loads(before.read_text())["evaluation"]["waveform_rows"]) if before else []
    rows = sorted((_clean(r) for r in rows), key=lambda r: json.dumps(r, sort_keys=True))
    return {"rows": rows, "report": [l for l in report if not any(t in l for t in TIMING)],
            "waveform_rows": sorted((_clean(r) for r in wrows), key=lambda r: json.dumps(r, sort_keys=True))}


def _has_waveform_part() -> bool:
    return (ROOT / "ser_core" / "evaluation" / "waveform.py").is_file()


def reattack(old_rows: list[dict]) -> list[dict]:
    """Each clip of the old per-clip rows attacked again with the one call, as a grid cell's batch
    attacks it (`evaluation.executors.attack_batch`: decoded clip in, verified outcome out), in the
    old rows' shape."""
    from ser_core.attacks import get_attack
    from ser_core.audio.decode import load_audio
    from ser_core.models.bundle import ModelBundle
    out = []
    for r in old_rows:
        b = ModelBundle.load(r["model"])
        b.configure_onnx(threads=1)
        y = load_audio(DATA / r["corpus"] / "wav" / r["clip"], b.feature_config.sample_rate)
        res = get_attack(r["attack"], b, **r["params_requested"])([y])
        before, after = res.predictions[0]
        x = {k: v[0] for k, v in res.extra.items()}
        snr = x["snr_db"]
        out.append({**{k: r[k] for k in ("model", "corpus", "gender", "speaker", "clip", "emotion", "params_requested")},
                    "attack": r["attack"], "params": dict(res.params), "label_before": before.label,
                    "probabilities_before": before.probabilities, "label_after": after.label,
                    "probabilities_after": after.probabilities, "verified_flipped": bool(res.flipped[0]),
                    "flipped_before_quantisation": x["flipped_before_quantisation"],
                    "snr_db": None if snr == float("inf") else round(snr, 3), "linf_16bit": x["linf_16bit"],
                    "l2": x["l2"], "queries": int(res.queries[0]), "chunking_unchanged": x["chunking_unchanged"],
                    "perceptual": x["perceptual"], "stopped_early": res.stopped_early,
                    "stop_reason": res.stop_reason, "target": None, "target_reached": bool(res.flipped[0]),
                    "extra": {k: (None if v == float("inf") else v) for k, v in x["run"].items()}})
    return out


def compare(a: Path, b: Path) -> int:
    before, after = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    added: set[str] = set()
    for part in ("features", "clips"):
        for k in sorted(set(before[part]) | set(after[part])):
            if not _same(before[part].get(k), after[part].get(k), added):
                bad += 1
                print(f"DIFFERS {part}: {k}")
                for f in sorted(set(before[part].get(k) or {}) | set(after[part].get(k) or {})):
                    x, y = (before[part].get(k) or {}).get(f), (after[part].get(k) or {}).get(f)
                    if x != y and f in (before[part].get(k) or {}):
                        print(f"   {f}: {x!r} -> {y!r}")
        print(f"{part}: {len(before[part])} before, {len(after[part])} after")
    ev_a, ev_b = before["evaluation"], after["evaluation"]
    for name in ("rows", "waveform_rows"):
        a, b = ev_a[name], ev_b[name]
        a, b = sorted(a, key=_row_id), sorted(b, key=_row_id)
        same = len(a) == len(b) and all(_same(r, t, added) for r, t in zip(a, b))
        print(f"evaluation {name}: {len(a)} before, {len(b)} after, identical: {same}")
        if not same:
            bad += 1
            for r, t in zip(a, b):
                if not _same(r, t, set()):
                    print("   ", {k: (r.get(k), t.get(k)) for k in r if r.get(k) != t.get(k)})
    ra, rb = _report(ev_a["report"]), _report(ev_b["report"])
    import difflib
    changed = [l for l in difflib.unified_diff(ra, rb, lineterm="", n=0) if l[:1] in "-+" and l[:3] not in ("---", "+++")]
    expected = [l for l in changed if l[1:].startswith(EXPECTED_REPORT_CHANGES)]
    print(f"report lines: {len(ra)} before, {len(rb)} after; changed: {len(changed)}, of which expected: {len(expected)}")
    for l in changed:
        print("   " + ("(expected) " if l in expected else "") + l[:160])
    if len(changed) > len(expected):
        bad += 1
    print(f"fields the redesign added (not counted as differences): {', '.join(sorted(added)) or 'none'}")
    print("IDENTICAL" if not bad else f"{bad} differences")
    return 1 if bad else 0


# the empty waveform section names the command that fills it, which changed with the redesign
EXPECTED_REPORT_CHANGES = ("No waveform results in this folder yet", "No waveform cells in this results file yet")


def _report(lines: list[str]) -> list[str]:
    """Report lines without the whole-grid table's timing column (seconds per example differ
    between any two runs) and its header."""
    out = []
    for line in lines:
        if "s / example" in line:
            continue
        cells = line.split(" | ")
        out.append(" | ".join(cells[:-2] + cells[-1:]) if line.startswith("| ") and len(cells) == 13 else line)
    return out


def _row_id(r: dict) -> str:
    return json.dumps({k: r.get(k) for k in ("model", "attack", "setting_key", "subset", "clip", "params_requested")},
                      sort_keys=True)


def _same(a, b, added: set) -> bool:
    """Equal on every field `a` has (fields only `b` has are collected in `added`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        added.update(k for k in b if k not in a)
        return all(k in b and _same(v, b[k], added) for k, v in a.items())
    return a == b


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        snapshot(Path(sys.argv[2]), Path(sys.argv[3]) if len(sys.argv) > 3 else None)
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
