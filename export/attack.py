"""`attacks`: the registered attacks of both domains (features, waveform), their parameters and
the study's settings, as JSON (`Attack.describe`, as the app shows them).
`attack`: attack one audio clip in either domain and print the clip decision before and after,
as JSON (`ser_core.attacks.clip.attack_clip`)."""
from __future__ import annotations

import json
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
    p.add_argument("--domain", choices=("features", "waveform"), default=None,
                   help="optional check: the attack's domain (features: the study's standardised log-Mel; "
                        "waveform: the audio); the attack name alone decides it")
    p.add_argument("--target", default=None,
                   help="the emotion to land on, for attacks with a targeted mode (default: any other emotion)")
    p.add_argument("--eot", type=int, default=None, metavar="N",
                   help="waveform attacks with EOT (apgd): average the loss over N training rooms a step "
                        "(expectation over transformations; the same as --set eot=N; flips then meant to "
                        "survive rooms, docs/attacks.md)")
    p.add_argument("--max-seconds", type=float, default=None, help="refuse longer clips")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for result.json and what the attack writes (features: clean.npy and "
                        "adversarial.npy; waveform: the adversarial 16-bit WAV; default: a temporary folder)")
    p.add_argument("audio")
    p.set_defaults(func=run_attack)


def run_list(args):
    from ser_core.attacks import describe_attacks
    emit(describe_attacks())


def _parse_sets(items) -> dict:
    """--set NAME=VALUE strings -> parameters, still strings: the attack's declared Param
    converts and range-checks each (true/false, yes/no, 1/0 for booleans)."""
    from ser_core.errors import ParameterError
    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ParameterError(f"--set {item!r} (accepted: NAME=VALUE, e.g. --set eps=0.5)")
        params[name] = value
    return params


def _with_eot(params: dict, attack: str, eot: int | None) -> dict:
    """--eot N as the attack's `eot` parameter; refused for an attack that has none, or when
    --set eot=... says otherwise."""
    if eot is None:
        return params
    from ser_core.attacks import REGISTRY
    from ser_core.errors import ParameterError
    with_eot = sorted(n for d in REGISTRY.values() for n, c in d.items() if "eot" in c.params)
    if attack not in with_eot:
        raise ParameterError(f"--eot: {attack} has no EOT (accepted: {', '.join(with_eot)})")
    if "eot" in params and str(params["eot"]) != str(eot):
        raise ParameterError(f"--eot {eot} and --set eot={params['eot']} disagree (accepted: one of them)")
    return {**params, "eot": str(eot)}


def run_attack(args):
    from ser_core.attacks.clip import attack_clip
    from ser_core.models.bundle import ModelBundle
    params = _with_eot(_parse_sets(args.set), args.attack, args.eot)
    bundle = ModelBundle.load(args.model)
    res = attack_clip(bundle, args.audio, args.attack, params, domain=args.domain,
                      max_seconds=args.max_seconds, out_dir=args.out, target=args.target)
    # label_after: features, the decision on the adversarial features; waveform, the serving
    # path's decision on the written WAV (the verified one)
    d = {"file": args.audio, **res.to_dict()}
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        d["files"] = [str(f) for f in res.save(args.out)] + [str(args.out / "result.json")]
        (args.out / "result.json").write_text(json.dumps(d, indent=1))
    emit(d)
