"""Dispatcher for `python -m export`. Each command lives in its own module of this package
with `register(subparsers)`; typed project errors become one-line messages and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

# module name in this package -> its commands (imported lazily so `--help` stays fast)
COMMAND_MODULES = ["stats", "train", "crossval", "multicorpus", "predict", "defaults", "push", "evaluate", "attack",
                   "universal", "transfer", "space", "robustness"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export",
                                     description="Speech emotion recognition under adversarial attack: "
                                                 "features, training, ONNX export, prediction, attacks.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"export.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    from ser_core.errors import SERError
    try:
        return args.func(args) or 0
    except SERError as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}), file=sys.stderr)
        return 2


def emit(obj) -> None:
    print(json.dumps(obj, indent=None, default=_default))


def _default(o):
    import numpy as np
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
