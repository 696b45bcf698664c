"""`stats`: clip and chunk counts per class and gender (and per split) as JSON. The first
fidelity check: the study's 5-class chunk counts (PAPER.md)."""
from __future__ import annotations

from collections import Counter

import numpy as np

from .cli import emit


def register(sub):
    from ser_core.data.corpora import CORPORA
    p = sub.add_parser("stats", help="clip and chunk counts of a corpus (JSON)")
    p.add_argument("--corpus", required=True, choices=list(CORPORA))
    p.add_argument("--data-dir", required=True, help="folder of the corpus (.wav or .flac)")
    p.add_argument("--classes", default="paper", help="paper (the study's five) or all")
    p.add_argument("--protocol", choices=["paper", "speaker"], help="also count each split")
    p.set_defaults(func=run)


def row_table(corpus, cfg, progress=True):
    """A ChunkTable without features: enough for counting and splitting."""
    from ser_core.data.dataset import ChunkTable, chunk_counts
    counts = chunk_counts(corpus, cfg, True, progress)
    utt, aug, piece = [], [], []
    for i, per_aug in enumerate(counts):
        for a, n in enumerate(per_aug):
            utt += [i] * n; aug += [a] * n; piece += list(range(n))
    return ChunkTable(corpus, cfg, None, np.array(utt), np.array(aug), np.array(piece))


def _counts(table, rows):
    lab = np.array(table.corpus.classes)[table.labels[rows]]
    gen = table.genders[rows]
    clips = sorted(set(table.utt[rows].tolist()))
    utts = table.corpus.utterances
    return {"clips": len(clips), "chunks": int(len(rows)),
            "clips_by_class": dict(Counter(utts[i].emotion for i in clips)),
            "clips_by_gender": dict(Counter(utts[i].gender for i in clips)),
            "chunks_by_class": dict(Counter(lab.tolist())),
            "chunks_by_gender": dict(Counter(gen.tolist()))}


def run(args):
    from ser_core.config import PAPER_FEATURES
    from ser_core.data.corpora import read_corpus
    corpus = read_corpus(args.corpus, args.data_dir, args.classes)
    table = row_table(corpus, PAPER_FEATURES)
    original = np.flatnonzero(table.aug == 0)
    out = {"corpus": corpus.name, "data_dir": str(corpus.root), "classes": list(corpus.classes),
           "skipped_files": [{"path": str(p), "reason": r} for p, r in corpus.skipped],
           "without_augmentation": _counts(table, original),
           "with_augmentation": _counts(table, np.arange(len(table)))}
    if args.protocol:
        from ser_core.data.splits import make_split
        split = make_split(table, args.protocol)
        out["split"] = split.describe()
        out["splits"] = {k: _counts(table, getattr(split, k)) for k in ("train", "val", "test")}
    emit(out)
