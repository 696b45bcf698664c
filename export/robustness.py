"""`robustness` and `robustness-defences`: the worst-case waveform attack suite on a model's
held-out clips, and the input defences attacked naively and adaptively
(ser_core/evaluation/robustness/, docs/robustness.md). Both resume clip by clip and rebuild
<out>/README.md from every results file in <out>."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from .cli import emit

DEFAULT_OUT = "reports/robustness"


def _common(p):
    p.add_argument("--model", required=True, help="bundle name or folder")
    p.add_argument("--clips", type=int, help="the first N held-out clips of a gender- and class-balanced order "
                                             "(default: every clip of the held-out speakers)")
    p.add_argument("--budgets", default="l2@40,l2@30,linf@30",
                   help="comma-separated: l2@SNR (the SNR's L2 ball) or linf@SNR (the Linf eps that guarantees it)")
    p.add_argument("--steps", type=int, default=100, help="Auto-PGD steps a run")
    p.add_argument("--square-queries", type=int, default=300, help="Square: serving-path queries a clip and budget")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    p.add_argument("--data-dir", help="folder holding emodb/, emovo/, ravdess/ (default ../shared/data)")
    p.add_argument("--out", default=DEFAULT_OUT, help="folder of the results files and README.md")


def register(sub):
    p = sub.add_parser("robustness", help="robust accuracy: the per-clip worst case of APGD-CE, APGD-T (DLR), "
                                          "Square (ONNX) and C&W L2 on the waveform, flips verified on the WAV")
    _common(p)
    p.add_argument("--targets", type=int, default=3, help="APGD-T: the most probable other classes tried")
    p.add_argument("--members", default="apgd-ce,apgd-t,square,cw")
    p.add_argument("--every-member", action="store_true",
                   help="run every member at every budget, even on clips already flipped (each member's own accuracy)")
    p.add_argument("--defence", help="an input defence in front of the model (e.g. quantise:bits=8+mp3:quality=2)")
    p.add_argument("--view", default="adaptive", choices=["ignore", "through", "adaptive"],
                   help="how the white-box members see the defence")
    p.add_argument("--eot", type=int, default=8, help="EOT draws of a random defence a gradient")
    p.add_argument("--crossval", help="a folder of fold bundles: each attacked on the speakers it never heard "
                                      "(replaces --model's held-out clips; --model names the run)")
    p.set_defaults(func=run_robustness)

    d = sub.add_parser("robustness-defences", help="each input defence attacked naively, through its implementation "
                                                   "and adaptively (BPDA/EOT + Square); randomized smoothing certified")
    _common(d)
    d.set_defaults(budgets="l2@40,l2@30", steps=40)
    d.add_argument("--defences", default="resample,quantise,mp3,lowpass,noise",
                   help="comma-separated names of ser_core/evaluation/robustness/defences.py DEFENCES")
    d.add_argument("--eot", type=int, default=8, help="EOT draws of a random defence a gradient")
    d.add_argument("--certify-n", type=int, default=100, help="randomized smoothing: estimation draws (0: skip)")
    d.add_argument("--certify-sigma", default="0.002,0.02",
                   help="randomized smoothing: noise standard deviations certified (full scale 1), comma-separated")
    d.set_defaults(func=run_defences)

    w = sub.add_parser("defend-input", help="a bundle folder with an input defence in its config: the same weights, "
                                            "served (and attacked, and verified) behind the defence")
    w.add_argument("--model", required=True, help="bundle name or folder")
    w.add_argument("--defence", required=True, help="e.g. quantise:bits=8, or resample:rate=8000+mp3:quality=2")
    w.add_argument("--seed", type=int, default=0, help="seed of a random defence's draws")
    w.add_argument("--out", required=True, help="bundle folder to write (its name is the model's name)")
    w.set_defaults(func=run_defend_input)

    c = sub.add_parser("robustness-card", help="write a bundle's measured robust accuracy (from a robustness folder) "
                                               "into its config.json and model card, where the app reads it")
    c.add_argument("--model", required=True, nargs="+", help="bundle names or folders")
    c.add_argument("--results", default=DEFAULT_OUT, help="the robustness folder (suite.jsonl, defences.jsonl)")
    c.set_defaults(func=run_robustness_card)


def _setup(args):
    import torch
    from ser_core.errors import ParameterError
    from ser_core.evaluation.robustness.suite import Budget
    from ser_core.models.bundle import ModelBundle
    torch.set_num_threads(args.threads)
    bundle = ModelBundle.load(args.model)
    bundle.configure_onnx(threads=args.threads)
    budgets = tuple(Budget.parse(b) for b in args.budgets.split(",") if b)
    if not budgets:
        raise ParameterError("--budgets: none given (accepted: e.g. l2@40,l2@30,linf@30)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    commands = out / "commands.json"
    seen = json.loads(commands.read_text()) if commands.is_file() else {}
    flags = [args.command] + [x for k, v in sorted(vars(args).items()) if k not in ("func", "command", "data_dir")
                              and v not in (None, False) for x in ([f"--{k.replace('_', '-')}"] if v is True
                                                                   else [f"--{k.replace('_', '-')}", str(v)])]
    command = "OMP_NUM_THREADS=1 python -m export " + shlex.join(flags)
    seen[command] = command  # every distinct command that wrote into this folder, in order
    commands.write_text(json.dumps(seen, indent=1))
    return bundle, budgets, out


def run_robustness(args):
    from ser_core.evaluation.robustness.run import crossval_bundles, run_suite, suite_clips, with_defence
    from ser_core.evaluation.robustness.suite import SuiteConfig
    bundle, budgets, out = _setup(args)
    cfg = SuiteConfig(budgets=budgets, members=tuple(args.members.split(",")), steps=args.steps,
                      targets=args.targets, square_queries=args.square_queries, every_member=args.every_member,
                      seed=args.seed)
    bundles = crossval_bundles(args.crossval) if args.crossval else [bundle]
    rows = []
    for b in bundles:
        b.configure_onnx(threads=args.threads)
        if args.defence:
            b = with_defence(b, args.defence, args.view, args.eot)
        clips = suite_clips(b, args.clips, args.seed, args.data_dir)
        rows += run_suite(b, clips, cfg, out / "suite.jsonl", args.view, args.eot, log=sys.stderr)
    from ser_core.evaluation.robustness.report import summarise
    s = summarise(rows, bundle.labels, cfg.members)
    emit({"model": args.model, "suite": cfg.describe(), **{k: v for k, v in s.items() if k != "speakers"}})
    write_readme(out)


def run_defences(args):
    from ser_core.evaluation.robustness.defences import DEFENCES, certify_clips, defence_runs
    from ser_core.evaluation.robustness.run import suite_clips
    from ser_core.evaluation.robustness.suite import SuiteConfig
    from ser_core.errors import ParameterError
    bundle, budgets, out = _setup(args)
    names = [n for n in args.defences.split(",") if n]
    bad = [n for n in names if n not in DEFENCES]
    if bad:
        raise ParameterError(f"--defences {bad} (accepted: {', '.join(DEFENCES)})")
    cfg = SuiteConfig(budgets=budgets, steps=args.steps, square_queries=args.square_queries, seed=args.seed)
    clips = suite_clips(bundle, args.clips, args.seed, args.data_dir)
    defence_runs(bundle, clips, {n: DEFENCES[n] for n in names}, cfg, out / "defences.jsonl", args.eot, log=sys.stderr)
    if args.certify_n:
        path = out / "smoothing.json"
        have = {c["key"]: c for c in (json.loads(path.read_text()) if path.is_file() else [])}
        for sigma in (float(v) for v in args.certify_sigma.split(",") if v):
            key = f"{bundle.name}|{bundle.config.get('weights_sha')}|{sigma}|{len(clips)}|{args.certify_n}"
            if key not in have:
                cert = certify_clips(bundle, clips, sigma, n=args.certify_n, snrs=[b.snr_db for b in budgets])
                have[key] = dict(cert, key=key, model=bundle.name)
                path.write_text(json.dumps(list(have.values()), indent=1))
    write_readme(out)


def write_readme(out: Path) -> None:
    """README.md of `out` from its results files (suite.jsonl, defences.jsonl, smoothing.json)."""
    from ser_core.evaluation.robustness.page import render
    (out / "README.md").write_text(render(out))


def run_defend_input(args):
    """A bundle that reads its base's weights (config "weights_from": no second copy, no weight
    budget) with the defence in its config (audio/defences.py), and its model card."""
    import shutil
    from ser_core.audio.defences import parse_defence
    from ser_core.errors import ParameterError
    from ser_core.models.bundle import ModelBundle
    from ser_core.models.card import render
    bundle = ModelBundle.load(args.model)
    defence = parse_defence(args.defence, args.seed)
    if defence is None:
        raise ParameterError(f"--defence {args.defence!r}: no defence (accepted: e.g. quantise:bits=8)")
    out = Path(args.out)
    config = {k: v for k, v in bundle.config.items() if k not in ("robustness", "onnx_parity")}
    config = dict(config, name=out.name, defence=defence.to_config(), defended_from=bundle.name)
    new = ModelBundle.save(out, None, bundle.standardizer, config, bundle.config.get("weights_dtype", "float32"),
                           base=bundle)
    if (bundle.folder / "model.onnx").is_file():  # the same network: verified for this bundle on first use
        shutil.copy(bundle.folder / "model.onnx", out / "model.onnx")
    (out / "README.md").write_text(render(new.config))
    emit({"model": out.name, "folder": str(out), "defence": new.config["defence"],
          "weights_from": new.config["weights_from"]})


def run_robustness_card(args):
    from ser_core.evaluation.robustness.card import write_block
    from ser_core.models.bundle import ModelBundle
    for m in args.model:
        b = ModelBundle.load(m)
        block = write_block(b, args.results)
        emit({"model": b.name, "card": str(b.folder / "README.md"),
              "robustness": None if block is None else {k: f"{v['robust']}/{v['n']}" for k, v in block["budgets"].items()}})
