"""`predict`: one JSON object per audio file with the label and probabilities."""
from __future__ import annotations

from .cli import emit


def register(sub):
    p = sub.add_parser("predict", help="predict the emotion of audio files")
    p.add_argument("--model", required=True, help="bundle folder, shipped name, or Hub repo id")
    p.add_argument("--chunks", action="store_true", help="also print per-chunk probabilities")
    p.add_argument("audio", nargs="+")
    p.set_defaults(func=run)


def run(args):
    from ser_core.models.bundle import ModelBundle
    from ser_core.errors import AudioError
    bundle = ModelBundle.load(args.model)
    failed = 0
    for path in args.audio:
        try:
            d = bundle.predict_clip(path).to_dict()
            if not args.chunks:
                d.pop("chunks")
            emit({"file": path, "model": bundle.name, **d})
        except AudioError as exc:
            failed += 1
            emit({"file": path, "error": type(exc).__name__, "message": str(exc)})
    return 2 if failed else 0
