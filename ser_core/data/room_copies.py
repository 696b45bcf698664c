"""A chunk table's chunks as a microphone in a simulated room would record them, row for row.

Room and noise augmentation for training (the multi-corpus model, TrainConfig.room_p): each
chunk of the table (its 3 s of samples, cut exactly as `dataset._utterance_chunks` cuts them) is
played in one room of a bank (ser_core/audio/room.py: a shoebox's impulse response with a
reverberation tail of RT60 0.2-0.8 s, pink background noise 20-35 dB below the speech, a
band-limited microphone of 80-300 Hz to 3.4-7.6 kHz) and its log-Mel computed again. The copy has
the same rows in the same order as the table, so training can swap a row for its copy.

The bank is drawn from its own seed (`ROOM_SEED`), not the attacks' (their EOT and held-out rooms
use seed 0), so a model trained on these rooms is not trained on the rooms an attack is scored
after. A chunk's room is fixed (the bank's room `(utterance + piece) % n`), so the copy is
computed once and cached beside the table (SER_CACHE_DIR)."""
from __future__ import annotations

import json

import numpy as np

from ser_core.audio.features import log_mel
from ser_core.audio.room import training_rooms
from ser_core.config import stable_hash
from ser_core.data.dataset import ChunkTable, cache_dir, table_key

ROOM_SEED = 27  # apart from the attacks' banks (seed 0)
N_ROOMS = 64


def room_copy(table: ChunkTable, n_rooms: int = N_ROOMS, seed: int = ROOM_SEED) -> np.ndarray:
    """(len(table), frames, bands) float32 log-Mel of each of the table's chunks (as recorded,
    augmentation 0 only) recorded in a room of the bank; cached, memory-mapped."""
    if np.any(table.aug != 0):
        raise ValueError("room copies are made of a table of the clips as recorded (augmentation=False)")
    key = table_key(table.corpus, table.cfg, False)
    path = cache_dir() / "features" / f"{key}-rooms-{stable_hash([n_rooms, seed, table.utt.tolist()])}"
    if (path / "meta.json").exists():
        return np.load(path / "features.npy", mmap_mode="r")
    rooms = training_rooms(n_rooms, seed)
    out = np.empty(table.features.shape, np.float32)
    for u in np.unique(table.utt):
        rows = np.flatnonzero(table.utt == u)
        c = table.recorded_chunks(int(u))
        if len(c) != len(rows):
            raise ValueError(f"{table.corpus.utterances[u].path}: {len(c)} chunks, the table has {len(rows)}")
        played = np.stack([rooms[(int(u) + int(p)) % n_rooms].recording(c[p])
                           for p in table.piece[rows]])
        out[rows] = log_mel(played, table.cfg)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / "features.npy.tmp"
    with open(tmp, "wb") as fh:
        np.save(fh, out)
    tmp.rename(path / "features.npy")
    (path / "meta.json").write_text(json.dumps({"table": key, "rooms": n_rooms, "seed": seed}))
    return np.load(path / "features.npy", mmap_mode="r")
