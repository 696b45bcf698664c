"""`multicorpus`: the one model of every emotion over EmoDB, EMOVO and RAVDESS
(ser_core/training/multicorpus.py): its protocols (leave one corpus out, pooled speaker folds),
eGeMAPS + SVM on the same folds, test-time averaging, the shipped bundle, the report."""
from __future__ import annotations

from .cli import emit


def register(sub):
    p = sub.add_parser("multicorpus", help="the multi-corpus model: protocols (resumable), "
                                           "baseline, shipped bundle, report")
    p.add_argument("what", choices=["loco", "pooled", "baseline", "tta", "percorpus", "ship", "card", "report"])
    p.add_argument("--data-root", required=True, help="the folder holding emodb/, emovo/, ravdess/")
    p.add_argument("--epochs", type=int, help="epoch cap (default: multicorpus.EPOCHS)")
    p.add_argument("--recipe", help="training recipe (default: multicorpus.RECIPE; "
                                     "ser_core/training/recipes.py)")
    p.add_argument("--folds", help="only these folds (comma-separated names, e.g. loco-emodb)")
    p.add_argument("--partial", action="store_true",
                   help="loco / pooled: train nothing, summarise the folds on disk as <run>-partial.json")
    p.add_argument("--shifts", type=int, default=4, help="tta: time shifts averaged")
    p.add_argument("--protocol", default="loco", help="baseline / tta: loco or pooled")
    p.add_argument("--out", default="models/any", help="ship: the bundle folder")
    p.add_argument("--reports", default="reports/multicorpus")
    p.add_argument("--run-root", default="runs/multicorpus")
    p.set_defaults(func=run)


def run(args):
    import torch
    torch.set_num_threads(1)
    from ser_core.training import multicorpus as mc, multicorpus_run as mr
    if args.what == "report":
        from ser_core.training.multicorpus_report import write_report
        emit({"report": str(write_report(args.reports))})
        return
    pooled = mc.pooled_table(args.data_root)
    recipe = mc.recipe_for(args.epochs or mc.EPOCHS, args.recipe)
    if args.what in mr.PROTOCOLS:
        s = mr.run_protocol(pooled, args.what, recipe, args.folds.split(",") if args.folds else None,
                            args.run_root, args.reports, partial=args.partial)
    elif args.what == "baseline":
        s = mr.baseline(pooled, args.protocol, args.data_root, args.reports,
                        args.folds.split(",") if args.folds else None)
    elif args.what == "percorpus":
        s = mr.per_corpus_loco(pooled, out_dir=args.reports)
    elif args.what == "tta":
        s = mr.tta_summary(pooled, args.protocol, recipe, args.shifts, args.run_root, args.reports)
    elif args.what == "card":  # the published figures into the bundle's config and card
        from ser_core.training.multicorpus_ship import refresh_published
        s = refresh_published(args.out, recipe, args.reports)
    else:
        from ser_core.training.multicorpus_ship import ship
        s = ship(pooled, args.out, recipe, args.run_root, args.reports, args.data_root)
    emit({k: v for k, v in s.items() if k in ("name", "run_dir", "folds_done")}
         | {p: {"uar": v["uar"], "n_clips": v["n_clips"]} for p, v in s.get("parts", {}).items()}
         | ({"overall": {"uar": s["overall"]["uar"]}} if "overall" in s else {}))
