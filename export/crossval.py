"""`crossval`: speaker-fold cross-validation of a training recipe, beside chance, the majority
class and eGeMAPS + SVM on the same folds (ser_core/training/crossval.py)."""
from __future__ import annotations

from .cli import emit


def register(sub):
    p = sub.add_parser("crossval", help="speaker-fold cross-validation of a training recipe "
                                        "(one model per fold; resumes per fold)")
    from ser_core.data.corpora import CORPORA
    from ser_core.training.recipes import DEFAULT_RECIPE, RECIPES, recipe_names
    p.add_argument("--corpus", required=True, choices=list(CORPORA))
    p.add_argument("--data-dir", required=True)
    p.add_argument("--recipe", default=DEFAULT_RECIPE, choices=recipe_names(), metavar="RECIPE",
                   help=f"training recipe (ser_core/training/recipes.py): {', '.join(RECIPES)}, or "
                        f"the name it was first run under; default %(default)s")
    p.add_argument("--folds", type=lambda s: [int(x) for x in s.split(",")],
                   help="only these folds (0-based, comma-separated); the report needs all")
    p.add_argument("--max-epochs", type=int, help="override the recipe's epoch cap")
    p.add_argument("--out", default="reports/crossval", help="report folder")
    p.add_argument("--run-dir", default="runs/crossval", help="fold results and checkpoints")
    p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"])
    p.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    p.add_argument("--executor", default="local", choices=["local", "ray"],
                   help="ray: one Ray task per fold (pip install -r requirements-cluster.txt)")
    p.add_argument("--address", help="Ray cluster address (default: start a local one)")
    p.add_argument("--cpus-per-task", type=float, default=1)
    p.add_argument("--gpus-per-task", type=float, help="default: 1 when the cluster has a GPU")
    p.add_argument("--pretrain-data-root", help="recipes with pre-training: the folder holding the "
                   "other corpora's folders (default: the folder holding --data-dir)")
    p.add_argument("--baselines-only", action="store_true",
                   help="only chance, majority and eGeMAPS + SVM, and the report")
    p.set_defaults(func=run)


def run(args):
    from ser_core.training import crossval
    if args.baselines_only:
        from ser_core.training.baseline import write_baselines
        from ser_core.training.crossval_report import write_report
        b = write_baselines(args.corpus, args.data_dir, args.out)
        write_report(args.out)
        emit({k: {"accuracy": v["accuracy"], "uar": v["uar"]} for k, v in b.items() if k != "corpus"})
        return
    executor = None
    if args.executor == "ray":
        executor = crossval.ray_folds(args.address, args.cpus_per_task, args.gpus_per_task)
    s = crossval.run_crossval(args.corpus, args.data_dir, args.recipe, args.folds, args.max_epochs,
                              args.out, args.run_dir, args.precision, args.device,
                              executor=executor, pretrain_data_root=args.pretrain_data_root)
    emit({k: s[k] for k in ("name", "accuracy", "accuracy_speaker_bootstrap95", "uar",
                            "uar_speaker_bootstrap95", "macro_f1", "min_class_recall", "n_clips",
                            "n_speakers") if k in s} if "accuracy" in s else s)
