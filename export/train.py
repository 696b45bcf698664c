"""`train` and `onnx`: train a bundle from a corpus folder; (re)build a bundle's ONNX model."""
from __future__ import annotations

import shlex
import sys

from .cli import emit


def register(sub):
    from ser_core.data.corpora import CORPORA
    p = sub.add_parser("train", help="train a CNN-LSTM bundle from a corpus folder")
    p.add_argument("--corpus", required=True, choices=list(CORPORA))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--protocol", default="speaker", choices=["paper", "speaker"],
                   help="paper: the study's split (weak); speaker: held-out speakers (default)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--classes", default="paper", help="paper (the study's five) or all")
    p.add_argument("--no-augmentation", action="store_true", help="skip pitch/time copies (fast runs)")
    p.add_argument("--max-epochs", type=int, help="cap on epochs (study: 100)")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--weights-dtype", default="float32", choices=["float32", "float16", "int8"])
    p.add_argument("--seed", type=int)
    p.add_argument("--run-dir", help="checkpoint folder (resumes if a checkpoint is there)")
    p.add_argument("--pretrain-data-root", help="recipes with pre-training: the folder holding the "
                   "other corpora's folders (default: the folder holding --data-dir)")
    p.add_argument("--recipe", help="one of our training recipes (ser_core/training/recipes.py, e.g. "
                   "transfer, the default models' one): trains on every speaker but the two "
                   "validation speakers of ser_core/data/folds.SHIP_VALIDATION and quotes the "
                   "recipe's cross-validation; without it, the study's recipe under --protocol")
    p.set_defaults(func=run_train)

    o = sub.add_parser("onnx", help="(re)build a bundle's model.onnx and check parity with torch")
    o.add_argument("--model", required=True, help="bundle folder or shipped model name")
    o.set_defaults(func=run_onnx)

    c = sub.add_parser("card", help="re-render a bundle's model card (README.md) from its config")
    c.add_argument("--model", required=True, nargs="+")
    c.set_defaults(func=run_card)


def run_train(args):
    command = "python -m export " + shlex.join(sys.argv[1:])
    if args.recipe:
        from ser_core.training.ship import train_shipped_bundle
        b = train_shipped_bundle(args.corpus, args.data_dir, args.out, args.recipe,
                                 args.weights_dtype, args.max_epochs, args.precision, args.run_dir,
                                 command=command, pretrain_data_root=args.pretrain_data_root)
        emit({"bundle": str(b.folder), "crossval": b.config["crossval"],
              "held_out_clips": {k: b.config["metrics"]["held_out_clips"][k]
                                 for k in ("accuracy", "uar", "n_clips", "per_class_recall")},
              "onnx_parity": b.config["onnx_parity"], "training_seconds": b.config["training"]["seconds"]})
        return
    from ser_core.training.study import train_bundle
    b = train_bundle(args.corpus, args.data_dir, args.out, args.protocol, args.classes,
                     not args.no_augmentation, args.max_epochs, args.precision, args.weights_dtype,
                     args.seed, args.run_dir, command=command)
    emit({"bundle": str(b.folder), "metrics": b.config["metrics"]["test"],
          "onnx_parity": b.config["onnx_parity"], "training_seconds": b.config["training"]["seconds"]})


def run_onnx(args):
    from ser_core.models.bundle import ModelBundle, ONNX
    from ser_core.models.onnx_export import check_parity, export_onnx
    from ser_core.models import bundle as bm
    b = ModelBundle.load(args.model)
    path = export_onnx(b.torch_model(), b.folder / ONNX, b.feature_config.input_shape)
    emit({"onnx": str(path), "parity": check_parity(b.torch_model(), bm._make_session(path),
                                                    b.parity_features())})


def run_card(args):
    from ser_core.models.bundle import ModelBundle
    from ser_core.models.card import render
    for m in args.model:
        b = ModelBundle.load(m)
        (b.folder / "README.md").write_text(render(b.config))
        emit({"card": str(b.folder / "README.md")})
