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

    x: np.ndarray        # (n, 261, 128) float32, standardised (waveform: an object array of clips)
    labels: np.ndarray   # (n,) int
    genders: np.ndarray  # (n,) "male" | "female"
    rows: np.ndarray     # rows of the chunk table (for provenance)

    def __len__(self):
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "HeldOutSet":
        return HeldOutSet(self.x[idx], self.labels[idx], self.genders[idx], self.rows[idx])


def is_multicorpus(bundle) -> bool:
    """A bundle trained on several corpora (config "corpora"; ser_core/training/multicorpus_ship.py):
    its speakers are named "corpus:speaker" and its labels span the corpora."""
    return bool(bundle.config.get("corpora"))


def _multicorpus_utterances(bundle, root: Path | None = None, speakers=None) -> list:
    """(utterance, label index, "corpus:speaker") of every clip of a multi-corpus bundle's
    corpora whose emotion it outputs (through its label_map), of `speakers` when given."""
    from ser_core.data.corpora import read_corpus
    root = Path(root or data_root())
    merge = bundle.config.get("label_map") or {}
    out = []
    for name in bundle.config["corpora"]:
        for u in read_corpus(name, root / name, classes="all").utterances:
            key, label = f"{name}:{u.speaker}", merge.get(u.emotion, u.emotion)
            if label in bundle.labels and (speakers is None or key in speakers):
                out.append((u, bundle.labels.index(label), key))
    return out


def _multicorpus_test_set(bundle, root: Path | None = None) -> HeldOutSet:
    """The unaugmented chunks of a multi-corpus bundle's held-out speakers, corpus by corpus."""
    from ser_core.data.corpora import read_corpus
    from ser_core.data.dataset import build_table
    root = Path(root or data_root())
    held = set(bundle.held_out_speakers)
    merge = bundle.config.get("label_map") or {}
    xs, labels, genders, rows, offset = [], [], [], [], 0
    for name in bundle.config["corpora"]:
        t = build_table(read_corpus(name, root / name, classes="all"), bundle.feature_config,
                        augmentation=False, progress=False)
        names = np.array([t.corpus.classes[k] for k in t.labels])
        keep = np.flatnonzero(np.isin(np.char.add(f"{name}:", t.speakers.astype(str)), sorted(held)))
        xs.append(bundle.standardizer.transform(t.features[keep]))
        labels.append([bundle.labels.index(merge.get(e, e)) for e in names[keep]])
        genders.append(t.genders[keep])
        rows.append(keep + offset)
        offset += len(t)
    ts = HeldOutSet(np.concatenate(xs), np.concatenate(labels).astype(int), np.concatenate(genders),
                    np.concatenate(rows))
    if bundle.held_out_rows is not None and bundle.held_out_rows != len(ts):
        raise ModelBundleError(f"{bundle.folder}: recomputed {len(ts)} held-out rows, the bundle "
                               f"records {bundle.held_out_rows} (corpus files or split changed?)")
    return ts


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
    if is_multicorpus(bundle):
        return _multicorpus_test_set(bundle, root)
    table, rows = bundle_test_rows(bundle, root)
    x = bundle.standardizer.transform(table.features[rows])
    return HeldOutSet(x, table.labels[rows], table.genders[rows], rows)


def has_held_out_speakers(bundle) -> bool:
    """Speaker-protocol bundles name test speakers they never trained on; the study's (paper
    protocol) test split is of augmented chunks, so it has no whole clips to attack."""
    return bundle.config.get("protocol", bundle.config["split"]["protocol"]) == "speaker" and bool(bundle.held_out_speakers)


def bundle_test_clips(bundle, root: Path | None = None) -> HeldOutSet:
    """Every utterance of the bundle's held-out test speakers, whole, as the serving path
    decodes it (x: an object array of float32 sample arrays at the bundle's rate), with its
    label, gender and index in the corpus listing: what waveform attacks are evaluated on."""
    from ser_core.audio.decode import load_audio
    from ser_core.data.corpora import read_corpus
    if not has_held_out_speakers(bundle):
        raise ParameterError(f"model {bundle.name} has no held-out test speakers (accepted: a speaker-protocol "
                             f"bundle for waveform attacks)")
    if is_multicorpus(bundle):
        utts = _multicorpus_utterances(bundle, root, set(bundle.held_out_speakers))
        x = np.empty(len(utts), dtype=object)
        x[:] = [load_audio(u.path, bundle.feature_config.sample_rate) for u, _, _ in utts]
        return HeldOutSet(x, np.array([k for _, k, _ in utts], dtype=int),
                          np.array([u.gender for u, _, _ in utts]), np.arange(len(utts)))
    corpus_name = bundle.config["corpus"]
    corpus = read_corpus(corpus_name, Path(root or data_root()) / corpus_name, tuple(bundle.labels))
    speakers = set(bundle.held_out_speakers)
    rows = np.array([i for i, u in enumerate(corpus.utterances) if u.speaker in speakers], dtype=int)
    utts = [corpus.utterances[i] for i in rows]
    x = np.empty(len(utts), dtype=object)
    x[:] = [load_audio(u.path, bundle.feature_config.sample_rate) for u in utts]
    return HeldOutSet(x, np.array([bundle.labels.index(u.emotion) for u in utts], dtype=int),
                      np.array([u.gender for u in utts]), rows)


# What each attack domain is evaluated on (a bundle's held-out examples of that domain), which
# bundles have such examples, and how many (male, female) the bundle records, before loading them.
TEST_SETS = {"features": bundle_test_set, "waveform": bundle_test_clips}
HAS_TEST_SET = {"features": lambda bundle: True, "waveform": has_held_out_speakers}


def _recorded(bundle, metrics: str, all_: str, male: str | None, female: str | None):
    m = bundle.config.get("metrics", {}).get(metrics, {})
    return m.get(all_), (m.get(male) if male else None), (m.get(female) if female else None)


TEST_SIZES = {"features": lambda b: (b.held_out_rows,) + _recorded(b, "test", "n", "n_male", "n_female")[1:],
              "waveform": lambda b: _recorded(b, "held_out_clips", "n_clips", None, None)}


def held_out_clips(bundle, n: int, seed: int = 0, data_dir=None) -> list:
    """Up to n utterances of the speakers the bundle never trained on (every speaker of its
    corpus not in config["split"]["speakers"]["train"]), balanced by gender and class, seeded.

    Each (gender, class) cell is shuffled; clips are then taken round by round, one per cell, the
    classes in a fresh seeded order each round and male before female within a class, so any
    prefix is as balanced as the cells allow (n = 2 x classes x k: k clips per cell)."""
    from ser_core.data.corpora import read_corpus
    if n < 1:
        raise ParameterError(f"held-out clips n={n} (accepted: an integer >= 1)")
    trained = set(bundle.config["split"].get("speakers", {}).get("train") or ())
    if not trained:
        raise ParameterError(f"model {bundle.name} names no training speakers (config split.speakers.train); "
                             "held-out clips need a speaker-protocol bundle")
    if is_multicorpus(bundle):
        utts = [(u, bundle.labels[k]) for u, k, key in _multicorpus_utterances(bundle, data_dir)
                if key not in trained]
    else:
        corpus_name = bundle.config["corpus"]
        corpus = read_corpus(corpus_name, Path(data_dir or data_root()) / corpus_name, tuple(bundle.labels))
        utts = [(u, u.emotion) for u in corpus.utterances if u.speaker not in trained]
    rng = np.random.default_rng(seed)
    cells = {}
    for u, emotion in utts:
        cells.setdefault((emotion, u.gender), []).append(u)
    for key in sorted(cells):
        order = rng.permutation(len(cells[key]))
        cells[key] = [cells[key][i] for i in order]
    picked, depth = [], 0
    while len(picked) < n and any(len(v) > depth for v in cells.values()):
        for emotion in [bundle.labels[i] for i in rng.permutation(len(bundle.labels))]:
            for gender in GENDERS:
                cell = cells.get((emotion, gender), [])
                if len(cell) > depth and len(picked) < n:
                    picked.append(cell[depth])
        depth += 1
    return picked


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
    if is_multicorpus(bundle):
        ts = bundle_test_set(bundle, data_dir)
        rng = np.random.default_rng(seed)
        pick = np.sort(np.concatenate([rng.permutation(np.flatnonzero(ts.genders == s))[:per_gender]
                                       for s in ("male", "female")]))
        return ts.x[pick], ts.labels[pick], ts.genders[pick]
    name = bundle.config["corpus"]
    table = build_table(read_corpus(name, Path(data_dir) / name), bundle.feature_config,
                        augmentation=False, progress=False)
    speakers = bundle.held_out_speakers or sorted(set(table.speakers))
    rows = np.flatnonzero(np.isin(table.speakers, speakers))
    rng = np.random.default_rng(seed)
    g = table.genders[rows]
    pick = np.sort(np.concatenate([rng.permutation(rows[g == s])[:per_gender] for s in ("male", "female")]))
    return bundle.standardizer.transform(table.features[pick]), table.labels[pick], table.genders[pick]
