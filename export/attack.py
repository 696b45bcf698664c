"""`attacks`: the registered attacks, their parameters and the study's settings, as JSON.
`attack`: attack one audio clip and print the clip decision before and after, as JSON."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from .cli import emit


def register(sub):
    p = sub.add_parser("attacks", help="list the attacks with their parameters (JSON)")
    p.set_defaults(func=run_list)

    p = sub.add_parser("attack", help="attack one audio clip and print the decision before and after")
    p.add_argument("--model", required=True, help="bundle folder, shipped name, or Hub repo id")
    p.add_argument("--attack", required=True, help="registry name (see `python -m export attacks`)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="attack parameter, repeatable (e.g. --set eps=0.5)")
    p.add_argument("--domain", choices=("features", "waveform"), default="features",
                   help="attack the standardised log-Mel features (the study) or the waveform")
    p.add_argument("--target", default=None,
                   help="waveform domain: the emotion to land on (default: any other emotion)")
    p.add_argument("--max-seconds", type=float, default=None, help="refuse longer clips")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for result.json and, features domain, clean.npy and adversarial.npy; "
                        "waveform domain, the adversarial 16-bit WAV (default: a temporary folder)")
    p.add_argument("audio")
    p.set_defaults(func=run_attack)


def run_list(args):
    from ser_core.attacks import describe_attacks
    emit(describe_attacks())


BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _parse_sets(items, attack: str) -> dict:
    """--set NAME=VALUE strings -> parameters; each Param converts and range-checks its value,
    except booleans, which are spelled out here (bool("false") would be True)."""
    from ser_core.attacks import REGISTRY
    from ser_core.errors import ParameterError
    declared = REGISTRY[attack].params if attack in REGISTRY else {}
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ParameterError(f"--set {item!r} (accepted: NAME=VALUE, e.g. --set eps=0.5)")
        if name in declared and declared[name].type is bool:
            if value.lower() not in BOOLEANS:
                raise ParameterError(f"{attack}: {name}={value!r} (accepted: true, false)")
            value = BOOLEANS[value.lower()]
        params[name] = value
    return params


def run_attack(args):
    from ser_core.bundle import ModelBundle
    from ser_core.errors import ParameterError
    params = _parse_sets(args.set, args.attack)
    if args.target is not None and args.domain != "waveform":
        raise ParameterError("--target is for waveform attacks (accepted: --domain waveform, or no --target)")
    bundle = ModelBundle.load(args.model)
    if args.domain == "waveform":
        try:
            from ser_core.waveform import attack_waveform_clip
        except ImportError as exc:
            print(json.dumps({"error": "WaveformAttacksUnavailable",
                              "message": f"waveform attacks are not available in this installation "
                                         f"({exc}); use --domain features"}), file=sys.stderr)
            return 2
        res = attack_waveform_clip(bundle, args.audio, attack=args.attack, params=params,
                                   max_seconds=args.max_seconds, out_dir=args.out, target=args.target)
        # label_after is the serving path's decision on the written WAV (the verified one)
        d = {"file": args.audio, **res.to_dict()}
        if args.out is not None:
            d["files"] = [d["wav_path"], str(args.out / "result.json")]
            (args.out / "result.json").write_text(json.dumps(d, indent=1))
        emit(d)
        return 0
    import numpy as np
    from ser_core.clip_attack import attack_clip
    res = attack_clip(bundle, args.audio, args.attack, params, max_seconds=args.max_seconds)
    d = {"file": args.audio, **res.to_dict()}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        np.save(args.out / "clean.npy", res.features)
        np.save(args.out / "adversarial.npy", res.adversarial_features)
        d["files"] = [str(args.out / f) for f in ("clean.npy", "adversarial.npy", "result.json")]
        (args.out / "result.json").write_text(json.dumps(d, indent=1))
    emit(d)
