"""Which examples each bundle is attacked on.

Speaker protocol bundles: the unaugmented chunks of the held-out test speakers named in the
bundle's config (`bundle.held_out_speakers`). Paper protocol bundles: the
study's test split recomputed exactly (stratified 80/20 over the augmented chunk table, seed
1938, `ser_core.data.splits.paper_split`), checked against the test size recorded in the bundle.
Features are standardised with the bundle's own standardiser."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_core.errors import ModelBundleError, ParameterError

REPO_ROOT = Path(__file__).resolve().parents[2]
GENDERS = ("male", "female")


def data_root() -> Path:
    """Folder holding emodb/, emovo/, ravdess/ (SER_DATA_DIR, default ../shared/data)."""
    return Path(os.environ.get("SER_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@dataclass
class HeldOutSet:
    """A bundle's test examples (held out from its training): standardised features with
    their true labels, genders and table rows."""

    x: np.ndarray        # (n, 261, 128) float32, standardised
    labels: np.ndarray   # (n,) int
    genders: np.ndarray  # (n,) "male" | "female"
    rows: np.ndarray     # rows of the chunk table (for provenance)

    def __len__(self):
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "HeldOutSet":
        return HeldOutSet(self.x[idx], self.labels[idx], self.genders[idx], self.rows[idx])


def bundle_test_rows(bundle, root: Path | None = None):
    """(chunk table, test rows) of a bundle under its own protocol."""
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    from ser_core.data.splits import paper_split
    corpus_name = bundle.config["corpus"]
    root = Path(root or data_root())
    corpus = read_corpus(corpus_name, root / corpus_name, tuple(bundle.labels))
    protocol = bundle.config.get("protocol", bundle.config["split"]["protocol"])
    if protocol == "paper":
        table = build_table(corpus, bundle.feature_config, augmentation=True, progress=False)
        rows = np.sort(paper_split(table, bundle.config["split"].get("seed", 1938)).test)
    elif protocol == "speaker":
        table = build_table(corpus, bundle.feature_config, augmentation=False, progress=False)
        rows = np.flatnonzero(np.isin(table.speakers, bundle.held_out_speakers))
    else:
        raise ModelBundleError(f"{bundle.folder}: unknown protocol {protocol!r} (accepted: paper, speaker)")
    expected = bundle.held_out_rows
    if expected is not None and expected != len(rows):
        raise ModelBundleError(f"{bundle.folder}: recomputed {len(rows)} test rows, the bundle "
                               f"records {expected} (corpus files or split changed?)")
    return table, rows


def bundle_test_set(bundle, root: Path | None = None) -> HeldOutSet:
    table, rows = bundle_test_rows(bundle, root)
    x = bundle.standardizer.transform(table.features[rows])
    return HeldOutSet(x, table.labels[rows], table.genders[rows], rows)


def balanced_subset(ts: HeldOutSet, per_group: int | None, seed: int = 0) -> np.ndarray:
    """Indices of up to `per_group` examples of every (class, gender) pair, drawn with `seed`,
    sorted; None keeps every example."""
    if per_group is None:
        return np.arange(len(ts))
    if per_group < 1:
        raise ParameterError(f"per_group={per_group} (accepted: an integer >= 1, or None for all)")
    rng = np.random.default_rng(seed)
    pick = []
    for c in np.unique(ts.labels):
        for g in GENDERS:
            idx = np.flatnonzero((ts.labels == c) & (ts.genders == g))
            pick.append(rng.permutation(idx)[:per_group])
    return np.sort(np.concatenate(pick)).astype(int)


def balanced_order(ts: HeldOutSet, seed: int = 0) -> np.ndarray:
    """Every example index, ordered so that each prefix is as balanced as the test set allows:
    genders alternate, and each pick takes the class picked least so far (then the (class,
    gender) pair picked least, then a seeded class rank), examples within a pair in seeded
    random order. With 5 classes the first 10 are one per class and gender; the first 2 are a
    male and a female example of different classes. A smaller quick-profile count is thus a
    subset of a larger one."""
    rng = np.random.default_rng(seed)
    classes = np.unique(ts.labels)
    rank = {c: r for r, c in enumerate(rng.permutation(classes))}
    pools = {(c, g): list(rng.permutation(np.flatnonzero((ts.labels == c) & (ts.genders == g))))
             for c in classes for g in GENDERS}
    per_class = dict.fromkeys(classes, 0)
    per_pair = dict.fromkeys(pools, 0)
    order = []
    while len(order) < len(ts):
        for g in GENDERS:
            open_ = [c for c in classes if pools[(c, g)]]
            if not open_:
                continue
            c = min(open_, key=lambda c: (per_class[c], per_pair[(c, g)], rank[c]))
            order.append(pools[(c, g)].pop())
            per_class[c] += 1
            per_pair[(c, g)] += 1
        if not any(pools.values()):
            break
    return np.array(order, dtype=int)


def held_out_chunks(bundle, data_dir, per_gender: int = 16, seed: int = 0):
    """(x, labels, genders): standardised unaugmented chunks of the bundle's held-out test speakers
    (all speakers for a bundle without them), at most `per_gender` per gender drawn with `seed`,
    in row order. The tests' and the white-box benchmark's examples."""
    import numpy as np
    from pathlib import Path
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    name = bundle.config["corpus"]
    table = build_table(read_corpus(name, Path(data_dir) / name), bundle.feature_config,
                        augmentation=False, progress=False)
    speakers = bundle.held_out_speakers or sorted(set(table.speakers))
    rows = np.flatnonzero(np.isin(table.speakers, speakers))
    rng = np.random.default_rng(seed)
    g = table.genders[rows]
    pick = np.sort(np.concatenate([rng.permutation(rows[g == s])[:per_gender] for s in ("male", "female")]))
    return bundle.standardizer.transform(table.features[pick]), table.labels[pick], table.genders[pick]
