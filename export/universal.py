"""`universal`: craft a universal waveform perturbation for a model on its training speakers'
clips, and score one on the speakers it never heard (and other corpora), digitally and after
held-out rooms (`ser_core.attacks.universal`, `ser_core.attacks.over_the_air`).

    python -m export universal craft --model emodb --snr 25 [--target sadness] [--eot-rooms 32] [--out models/emodb]
    python -m export universal score --model emodb --snr 25 [--target sadness] [--corpus emovo] [--rooms]"""
from __future__ import annotations

import json
from pathlib import Path

from .cli import emit


def register(sub):
    p = sub.add_parser("universal", help="craft or score a universal waveform perturbation")
    s = p.add_subparsers(dest="universal_command", required=True)
    c = s.add_parser("craft", help="learn one perturbation on the training speakers' clips")
    _common(c)
    c.add_argument("--steps", type=int, default=300, help="gradient steps (default 300)")
    c.add_argument("--batch", type=int, default=16, help="clips a step (default 16)")
    c.add_argument("--lr", type=float, default=0.1, help="step size relative to the delta's norm (default 0.1)")
    c.add_argument("--clips", type=int, default=None, help="training clips drawn (default: all)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--seconds", type=float, default=3.0, help="length of the perturbation, tiled over the speech "
                   "(default 3 s, one chunk window)")
    c.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="step size: constant, or cosine decay to 0 (default constant)")
    c.add_argument("--eot-rooms", type=int, default=0,
                   help="play each clip in one of this many training rooms (EOT; 0: digital)")
    c.add_argument("--out", type=Path, default=None, help="folder for the .npz (default: the model's folder)")
    c.set_defaults(func=run_craft)
    r = s.add_parser("score", help="fooling rate on unseen speakers, with 95 %% Wilson intervals")
    _common(r)
    r.add_argument("--file", type=Path, default=None, help="a perturbation .npz (default: the model's shipped one)")
    r.add_argument("--corpus", default=None, help="score on this corpus's clips instead (any speaker)")
    r.add_argument("--clips", type=int, default=None, help="clips drawn (default: all unseen ones)")
    r.add_argument("--rooms", action="store_true", help="also after a held-out room per clip")
    r.set_defaults(func=run_score)


def _common(p):
    p.add_argument("--model", required=True, help="bundle folder or shipped name (a speaker-protocol bundle)")
    p.add_argument("--snr", type=float, default=25.0, help="SNR against the speech, dB (default 25)")
    p.add_argument("--target", default=None, help="emotion every clip should be heard as (default: untargeted)")
    p.add_argument("--data-dir", type=Path, default=None, help="corpora folder (default ../shared/data)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")


def run_craft(args):
    import torch
    from ser_core.attacks.base import check_target
    from ser_core.attacks.over_the_air import training_clips
    from ser_core.attacks.universal import craft_universal
    from ser_core.attacks.waveform.apgd import AutoPGD
    from ser_core.audio.room import training_rooms
    from ser_core.models.bundle import ModelBundle
    torch.set_num_threads(args.threads)
    bundle = ModelBundle.load(args.model)
    check_target(AutoPGD, bundle, args.target)
    clips, utts = training_clips(bundle, args.clips, args.seed, args.data_dir)
    rooms = training_rooms(args.eot_rooms) if args.eot_rooms else None
    pert = craft_universal(bundle, clips, args.snr, args.target, steps=args.steps, batch=args.batch, lr=args.lr,
                           seed=args.seed, rooms=rooms, schedule=args.schedule,
                           length=int(round(args.seconds * bundle.feature_config.sample_rate)), log=lambda step, d: print(json.dumps({"step": step, **d}),
                                                                                   flush=True))
    pert.meta["speakers"] = sorted({u.speaker for u in utts})
    pert.meta["command"] = ("python -m export universal craft --model {m} --snr {s:g}{t} --steps {st} --batch {b} "
                            "--lr {lr:g} --seed {seed}{c}{e}{sc}{sec}").format(
        m=bundle.name, s=args.snr, t=f" --target {args.target}" if args.target else "", st=args.steps, b=args.batch,
        lr=args.lr, seed=args.seed, c=f" --clips {args.clips}" if args.clips else "",
        e=f" --eot-rooms {args.eot_rooms}" if args.eot_rooms else "",
        sc=f" --schedule {args.schedule}" if args.schedule != "constant" else "",
        sec=f" --seconds {args.seconds:g}" if args.seconds != 3.0 else "")
    path = pert.save(args.out or bundle.folder)
    emit({"file": str(path), "bytes": path.stat().st_size, **pert.meta})


def run_score(args):
    import torch
    from ser_core.attacks.over_the_air import fooling_rate, unseen_clips
    from ser_core.attacks.universal import UniversalPerturbation, load_universal
    from ser_core.models.bundle import ModelBundle
    torch.set_num_threads(args.threads)
    bundle = ModelBundle.load(args.model)
    pert = UniversalPerturbation.load(args.file) if args.file else load_universal(bundle, args.snr, args.target)
    clips, _ = unseen_clips(bundle, args.clips, 0, args.data_dir, args.corpus)
    emit({"model": bundle.name, "corpus": args.corpus or bundle.config["corpus"],
          **fooling_rate(bundle, pert, clips, args.snr, rooms=args.rooms)})
