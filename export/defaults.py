"""`train-defaults`: train the six shipped bundles (three corpora x two protocols) one after
another into models/<corpus> (speaker protocol, served by default: the recipe and epochs of
ser_core.training.recipes.SHIPPED) and models/<corpus>-paper (the study's recipe).
Resumable: a finished bundle is skipped, an interrupted one resumes from its checkpoint."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ser_core.data.corpora import CORPORA

from .cli import emit


def register(sub):
    p = sub.add_parser("train-defaults", help="train the shipped bundles (resumable)")
    p.add_argument("--data-root", required=True, help="folder holding emodb/, emovo/, ravdess/")
    p.add_argument("--models-dir", default="models")
    p.add_argument("--protocols", default="speaker,paper")
    p.add_argument("--corpora", default=",".join(CORPORA))
    p.add_argument("--max-epochs", type=int, help="paper protocol: cap on epochs (study: 100); the "
                   "speaker bundles take theirs from ser_core.training.recipes.SHIPPED")
    p.add_argument("--weights-dtype", default="int8", choices=["float32", "float16", "int8"],
                   help="int8 keeps six bundles under the Space's 30 MB budget")
    p.set_defaults(func=run)


def run(args):
    from ser_core.training.study import train_bundle
    for protocol in args.protocols.split(","):
        for corpus in args.corpora.split(","):
            name = corpus if protocol == "speaker" else f"{corpus}-{protocol}"
            out = Path(args.models_dir) / name
            if (out / "config.json").exists():
                print(f"{name}: already trained, skipped", file=sys.stderr)
                continue
            t = time.time()
            if protocol == "speaker":  # the served defaults: our recipe, as ser_core.training.recipes.SHIPPED says
                from ser_core.training.recipes import SHIPPED
                from ser_core.training.ship import train_shipped_bundle
                recipe, epochs = SHIPPED[corpus]
                cmd = (f"python -m export train --corpus {corpus} --data-dir {args.data_root}/{corpus} "
                       f"--recipe {recipe} --out {out} --weights-dtype {args.weights_dtype}"
                       + (f" --max-epochs {epochs}" if epochs else ""))
                b = train_shipped_bundle(corpus, Path(args.data_root) / corpus, out, recipe,
                                         args.weights_dtype, epochs, run_dir=Path("runs") / name,
                                         command=cmd)
                emit({"bundle": name, "wall_seconds": round(time.time() - t, 1),
                      "crossval_accuracy": b.config["crossval"] and b.config["crossval"]["accuracy"]})
                continue
            cmd = (f"python -m export train --corpus {corpus} --data-dir {args.data_root}/{corpus} "
                   f"--protocol {protocol} --out {out} --weights-dtype {args.weights_dtype}"
                   + (f" --max-epochs {args.max_epochs}" if args.max_epochs else ""))
            b = train_bundle(corpus, Path(args.data_root) / corpus, out, protocol,
                             weights_dtype=args.weights_dtype, max_epochs=args.max_epochs,
                             run_dir=Path("runs") / name, name=name, command=cmd)
            emit({"bundle": name, "wall_seconds": round(time.time() - t, 1),
                  "metrics": {k: v for k, v in b.config["metrics"]["test"].items() if k != "confusion"}})
