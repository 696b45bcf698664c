"""Corpus -> table of log-Mel chunks (every augmented version of every utterance), cached on disk.

Extraction with augmentation is the slow step (pitch shifting), so the table is computed once
per (corpus files, classes, feature config, augmentation) and stored as a memory-mappable
.npy plus its row metadata under the cache folder (SER_CACHE_DIR, default ~/.cache/ser_core)."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ser_core.audio.decode import load_audio
from ser_core.audio.augment import augmented_length, versions
from ser_core.audio.chunks import chunks, n_windows, trim
from ser_core.config import FeatureConfig, PAPER_FEATURES, stable_hash
from ser_core.data.corpora import Corpus
from ser_core.audio.features import log_mel


def cache_dir() -> Path:
    return Path(os.environ.get("SER_CACHE_DIR", Path.home() / ".cache" / "ser_core"))


@dataclass
class ChunkTable:
    """One row per chunk. features[i] belongs to corpus.utterances[utt[i]], augmentation
    cfg.augmentations()[aug[i]], window piece[i]."""

    corpus: Corpus
    cfg: FeatureConfig
    features: np.ndarray  # (N, frames, bands) float32, usually a read-only memmap
    utt: np.ndarray
    aug: np.ndarray
    piece: np.ndarray

    def __len__(self):
        return len(self.utt)

    @property
    def labels(self) -> np.ndarray:
        lab = np.array([self.corpus.label_index(u) for u in self.corpus.utterances])
        return lab[self.utt]

    @property
    def genders(self) -> np.ndarray:
        return np.array([u.gender for u in self.corpus.utterances])[self.utt]

    @property
    def speakers(self) -> np.ndarray:
        return np.array([u.speaker for u in self.corpus.utterances])[self.utt]

    def recorded_chunks(self, u: int) -> np.ndarray:
        """(pieces, window_samples) the samples behind utterance u's rows of augmentation 0 (the
        clip as recorded), cut exactly as the table's features were: decoded, trimmed, chunked."""
        return chunks(trim(load_audio(self.corpus.utterances[u].path, self.cfg.sample_rate), self.cfg), self.cfg)


def _utterance_chunks(args):
    path, cfg, augmentation = args
    y = trim(load_audio(path, cfg.sample_rate), cfg)
    feats, augs, pieces = [], [], []
    for i, version in versions(y, cfg, augmentation):
        c = chunks(version, cfg)
        feats.append(log_mel(c, cfg))
        augs += [i] * len(c)
        pieces += list(range(len(c)))
    return np.concatenate(feats), augs, pieces


def table_key(corpus: Corpus, cfg: FeatureConfig, augmentation: bool) -> str:
    files = [(str(u.path.relative_to(corpus.root)), u.path.stat().st_size) for u in corpus.utterances]
    return f"{corpus.name}-{stable_hash([files, cfg.to_dict(), augmentation])}"


def chunk_counts(corpus: Corpus, cfg: FeatureConfig = PAPER_FEATURES, augmentation: bool = True,
                 progress: bool = True) -> list[list[int]]:
    """Chunks per utterance and augmentation, from trimmed lengths alone (no features)."""
    augs = cfg.augmentations() if augmentation else cfg.augmentations()[:1]
    out = []
    for u in _progress(corpus.utterances, "trimming", progress):
        n = len(trim(load_audio(u.path, cfg.sample_rate), cfg))
        out.append([n_windows(augmented_length(n, k, v), cfg) for k, v in augs])
    return out


def build_table(corpus: Corpus, cfg: FeatureConfig = PAPER_FEATURES, augmentation: bool = True,
                workers: int | None = None, progress: bool = True) -> ChunkTable:
    """The cached table, computing it (in `workers` processes) if it is not on disk yet.

    Without augmentation, an augmented table already on disk is reused (its rows with
    augmentation index 0 are exactly the unaugmented table)."""
    folder = cache_dir() / "features"
    key = table_key(corpus, cfg, augmentation)
    if not augmentation:
        full = folder / table_key(corpus, cfg, True)
        if (full / "meta.json").exists():
            t = _load(full, corpus, cfg)
            keep = np.flatnonzero(t.aug == 0)
            return ChunkTable(corpus, cfg, t.features[keep], t.utt[keep], t.aug[keep], t.piece[keep])
    path = folder / key
    if (path / "meta.json").exists():
        return _load(path, corpus, cfg)
    workers = workers or os.cpu_count() or 1
    jobs = [(u.path, cfg, augmentation) for u in corpus.utterances]
    feats, utt, aug, piece = [], [], [], []
    if workers > 1:
        with mp.get_context("spawn").Pool(workers) as pool:
            results = pool.imap(_utterance_chunks, jobs, chunksize=4)
            results = _progress(results, f"features {corpus.name}", progress, total=len(jobs))
            for i, (f, a, p) in enumerate(results):
                feats.append(f); utt += [i] * len(a); aug += a; piece += p
    else:
        for i, job in enumerate(_progress(jobs, f"features {corpus.name}", progress)):
            f, a, p = _utterance_chunks(job)
            feats.append(f); utt += [i] * len(a); aug += a; piece += p
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "features.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, np.concatenate(feats).astype(np.float32))
    tmp.rename(path / "features.npy")
    np.savez(path / "rows.npz", utt=np.array(utt, np.int32), aug=np.array(aug, np.int8),
             piece=np.array(piece, np.int16))
    (path / "meta.json").write_text(json.dumps({
        "corpus": corpus.name, "root": str(corpus.root), "classes": corpus.classes,
        "files": [str(u.path.relative_to(corpus.root)) for u in corpus.utterances],
        "feature_config": cfg.to_dict(), "augmentation": augmentation}, indent=1))
    return _load(path, corpus, cfg)


def _load(path: Path, corpus: Corpus, cfg: FeatureConfig) -> ChunkTable:
    rows = np.load(path / "rows.npz")
    return ChunkTable(corpus, cfg, np.load(path / "features.npy", mmap_mode="r"),
                      rows["utt"], rows["aug"], rows["piece"])


def _progress(iterable, desc, enabled, total=None):
    if not enabled:
        return iterable
    from tqdm import tqdm
    return tqdm(iterable, desc=desc, total=total, file=sys.stderr, unit="clip", mininterval=2)
