"""Behaviour snapshot for a redesign that must not change results: every registered attack's
outputs (a hash of the adversarial input, decisions, per-example query counts, the summary and
the clip result's `to_dict`, seconds and temporary paths left out), and the quick evaluation's
rows and report on one bundle (timing fields and lines left out).

    python benchmarks/redesign_parity.py snapshot OUT.json      # on the code before, then after
    python benchmarks/redesign_parity.py compare BEFORE.json AFTER.json

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
    r = get_attack(name, bundle, **params)(x)
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


def snapshot(out: Path):
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
    snap["evaluation"] = quick_evaluation()
    out.write_text(json.dumps(snap, indent=1, sort_keys=True))


def _decode(path):
    from ser_core.audio.decode import load_audio
    return load_audio(path, 16_000)


EXAMPLES = "fgsm=4,bim=4,deepfool=4,jsma=4,cw_linf=4,cw_l2=2,boundary=2,pixel=1"
DATA = ROOT.parent / "shared" / "data"


def quick_evaluation() -> dict:
    """The quick profile on emodb (EXAMPLES a cell) through the command line, and its waveform
    part (one clip per gender)."""
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "export", "evaluate", "--profile", "quick", "--models", "emodb",
               "--examples", EXAMPLES, "--threads", "1", "--out", d, "--data-dir", str(DATA)]
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        rows = [json.loads(l) for l in (Path(d) / "results-quick.jsonl").read_text().splitlines() if l.strip()]
        report = (Path(d) / "README.md").read_text().splitlines()
        subprocess.run(cmd + ["--waveform", "--clips", "1"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        wrows = [json.loads(l) for l in (Path(d) / "results-quick-waveform.jsonl").read_text().splitlines() if l.strip()]
    rows = sorted((_clean(r) for r in rows), key=lambda r: json.dumps(r, sort_keys=True))
    timing = ("second", "CPU-h", "minute", "wall", "hours", "Projected", "projected")
    return {"rows": rows, "report": [l for l in report if not any(t in l for t in timing)],
            "waveform_rows": sorted((_clean(r) for r in wrows), key=lambda r: json.dumps(r, sort_keys=True))}


def compare(a: Path, b: Path) -> int:
    before, after = json.loads(a.read_text()), json.loads(b.read_text())
    bad = 0
    for part in ("features", "clips"):
        for k in sorted(set(before[part]) | set(after[part])):
            if before[part].get(k) != after[part].get(k):
                bad += 1
                print(f"DIFFERS {part}: {k}")
                for f in sorted(set(before[part].get(k) or {}) | set(after[part].get(k) or {})):
                    x, y = (before[part].get(k) or {}).get(f), (after[part].get(k) or {}).get(f)
                    if x != y:
                        print(f"   {f}: {x!r} -> {y!r}")
        print(f"{part}: {len(before[part])} before, {len(after[part])} after")
    ev_a, ev_b = before["evaluation"], after["evaluation"]
    same_rows = ev_a["rows"] == ev_b["rows"]
    print(f"evaluation rows: {len(ev_a['rows'])} before, {len(ev_b['rows'])} after, identical: {same_rows}")
    if not same_rows:
        bad += 1
        for r, s in zip(ev_a["rows"], ev_b["rows"]):
            if r != s:
                print("   ", {k: (r.get(k), s.get(k)) for k in set(r) | set(s) if r.get(k) != s.get(k)})
    same_report = ev_a["report"] == ev_b["report"]
    print(f"report lines: {len(ev_a['report'])} before, {len(ev_b['report'])} after, identical: {same_report}")
    if not same_report:
        bad += 1
        import difflib
        print("\n".join(difflib.unified_diff(ev_a["report"], ev_b["report"], lineterm="", n=0)))
    print("IDENTICAL" if not bad else f"{bad} differences")
    return 1 if bad else 0


if __name__ == "__main__":
    if sys.argv[1] == "snapshot":
        snapshot(Path(sys.argv[2]))
    else:
        sys.exit(compare(Path(sys.argv[2]), Path(sys.argv[3])))
