"""Running the suite over a model's held-out clips, resumable clip by clip like the grid.

Each attacked clip is one JSON line in the results file, appended as soon as it is done; a
second run with the same model weights, suite settings, defence and attacker view skips every
clip already there (`done_clips`), so an interrupted run loses at most the clip in flight.

Clips: `suite_clips`, every utterance of the speakers a bundle never trained on (the shipped
bundles' held-out speakers, ser_core/data/held_out.py), in a gender- and class-balanced seeded
order, so that the first n are as balanced as the speakers allow. `--crossval DIR` runs the same
over a folder of fold bundles, each attacked on the clips of the speakers it never heard, so
every speaker of a corpus counts once (`crossval_bundles`)."""
from __future__ import annotations

import copy
import json
import time
import zlib
from pathlib import Path

from ser_core.audio.decode import load_audio
from ser_core.audio.defences import parse_defence
from ser_core.data.held_out import held_out_clips
from ser_core.errors import ParameterError
from ser_core.evaluation.robustness.suite import SuiteConfig, attack_one, record_row

ALL_CLIPS = 10 ** 6


def suite_clips(bundle, n: int | None = None, seed: int = 0, data_dir=None) -> list:
    """The held-out utterances of a bundle (ser_core.data.corpora.Utterance), balanced order."""
    return held_out_clips(bundle, n or ALL_CLIPS, seed=seed, data_dir=data_dir)


def crossval_bundles(folder) -> list:
    """Every bundle folder under `folder` (a fold model each; sorted by name)."""
    from ser_core.models.bundle import ModelBundle
    folders = sorted(p.parent for p in Path(folder).glob("*/config.json"))
    if not folders:
        raise ParameterError(f"{folder}: no fold bundles (accepted: a folder of bundle folders, one a fold, "
                             "each naming its training speakers in config split.speakers.train)")
    return [ModelBundle.load(f) for f in folders]


def with_defence(bundle, spec, view: str = "ignore", eot: int = 1, seed: int = 0):
    """A copy of `bundle` (sharing its weights and sessions) whose serving path applies the input
    defence `spec` (audio/defences.py; None: the bundle's own, if any) and whose white-box
    attacker sees it through `view` (ignore | through | adaptive, `eot` draws of random parts)."""
    b = copy.copy(bundle)
    b.config = dict(bundle.config)
    if spec is not None:
        b.defence = parse_defence(spec, seed)
        b.config["defence"] = None if b.defence is None else b.defence.to_config()
    b.defence_view = None if b.defence is None else b.defence.view(view, eot, seed)
    return b


def variant_key(bundle, view: str, eot: int) -> dict:
    d = bundle.defence
    return {"defence": None if d is None else d.name,
            "defence_spec": None if d is None else d.to_config(),
            "view": view if d is not None else "none", "eot": eot if d is not None and d.random else 1}


def done_clips(path, model: str, weights_sha: str | None, suite: str, variant: dict) -> set[str]:
    path = Path(path)
    if not path.is_file():
        return set()
    done = set()
    for line in path.read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut by an interruption: that clip is redone
        if (r.get("model"), r.get("weights_sha"), r.get("suite")) == (model, weights_sha, suite) and \
                all(r.get(k) == v for k, v in variant.items()):
            done.add(r["clip"])
    return done


def read_results(path) -> list[dict]:
    path = Path(path)
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def run_suite(bundle, clips, cfg: SuiteConfig, out, view: str = "ignore", eot: int = 1, log=None) -> list[dict]:
    """Attack each clip (Utterance) not yet in `out` with the suite; append its row; return the
    rows of this model, suite and variant now in `out`. A defended bundle (`with_defence`) keeps
    its view; `view`/`eot` are recorded with each row."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    variant = variant_key(bundle, view, eot)
    weights = bundle.config.get("weights_sha")
    done = done_clips(out, bundle.name, weights, cfg.key(), variant)
    todo = [u for u in clips if u.name not in done]
    t0 = time.perf_counter()
    for i, u in enumerate(todo):
        b = bundle
        if bundle.defence is not None and bundle.defence.random:
            # a fresh, seeded EOT generator a clip: a resumed run draws as an uninterrupted one
            b = with_defence(bundle, None, view, eot, seed=zlib.crc32(u.name.encode()) % (2 ** 31))
        y = load_audio(u.path, bundle.feature_config.sample_rate)
        rec = attack_one(b, y, bundle.labels.index(u.emotion), cfg, u.name, u.speaker, u.gender)
        row = record_row(rec, cfg, bundle.name, weights, dict(variant, corpus=bundle.config.get("corpus"), labels=list(bundle.labels)))
        with out.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        if log is not None:
            held = ",".join(k for k, v in row["budgets"].items() if v["robust"]) or "-"
            print(f"[{len(done) + i + 1}/{len(done) + len(todo)}] {bundle.name} {variant['defence'] or 'undefended'}"
                  f"/{variant['view']} {u.name}: clean {'ok' if row['clean_correct'] else 'wrong'}, held at {held}, "
                  f"flip SNR {row['flip_snr_db']}, {row['cpu_seconds']:.1f} CPU s "
                  f"({(time.perf_counter() - t0) / 60:.1f} min)", file=log, flush=True)
    names = {u.name for u in clips}
    return [r for r in read_results(out) if r["clip"] in names and r.get("model") == bundle.name
            and r.get("weights_sha") == weights and r.get("suite") == cfg.key()
            and all(r.get(k) == v for k, v in variant.items())]
