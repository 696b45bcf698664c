"""Files one Space instance writes, kept from piling up.

Attack outputs (images, WAVs, features) go to a folder of this instance, never one shared by
every instance on the host; each request gets a fresh subfolder, removed after
OUTPUT_TTL_SECONDS and, oldest first, whenever the instance holds more than MAX_OUTPUT_BYTES.
The app prunes Gradio's cache the same way (`prune`) and deletes a refused upload at once
(`forget_upload`)."""
from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from pathlib import Path

OUTPUT_TTL_SECONDS = 3600
# Files one instance keeps: attack outputs in its own folder, oldest removed beyond this.
MAX_OUTPUT_BYTES = int(float(os.environ.get("SER_APP_MAX_OUTPUT_MB", "200")) * 1e6)

_output_root: Path | None = None


def output_root() -> Path:
    """This instance's folder for attack outputs: SER_APP_OUTPUT_DIR, or a fresh temporary
    folder per process (removed at exit), never one shared by every instance on the host."""
    global _output_root
    if _output_root is None:
        given = os.environ.get("SER_APP_OUTPUT_DIR")
        if given:
            _output_root = Path(given)
            _output_root.mkdir(parents=True, exist_ok=True)
        else:
            _output_root = Path(tempfile.mkdtemp(prefix=f"ser-space-{os.getpid()}-"))
            atexit.register(shutil.rmtree, _output_root, True)
    return _output_root


def folder_bytes(root) -> int:
    """Bytes of the files under `root` (0 if absent)."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def prune(root, max_bytes: int, max_age: float | None = None, min_age: float = 0.0,
          pattern: str = "*") -> int:
    """Remove entries of `root` matching `pattern`, oldest first, that are older than
    `max_age`, then until the rest fit in `max_bytes`; entries younger than `min_age` seconds
    stay (a page may still be fetching them). Returns the bytes removed."""
    root = Path(root)
    if not root.is_dir():
        return 0
    now = time.time()
    entries = []
    for p in root.glob(pattern):
        try:
            entries.append((p.stat().st_mtime, p, folder_bytes(p) if p.is_dir() else p.stat().st_size))
        except OSError:
            pass
    entries.sort(key=lambda e: e[0])
    total = sum(e[2] for e in entries)
    removed = 0
    for mtime, p, size in entries:
        age = now - mtime
        if age < min_age:
            continue
        if (max_age is not None and age > max_age) or total > max_bytes:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            total -= size
            removed += size
    return removed


def output_folder() -> Path:
    """A fresh folder for one request's files. Older ones go after OUTPUT_TTL_SECONDS, and the
    oldest first whenever this instance holds more than MAX_OUTPUT_BYTES."""
    root = output_root()
    prune(root, MAX_OUTPUT_BYTES, OUTPUT_TTL_SECONDS, min_age=30.0, pattern="attack-*")
    return Path(tempfile.mkdtemp(prefix="attack-", dir=root))


def forget_upload(audio, cache) -> None:
    """Delete an uploaded file (and its folders up to `cache`, when left empty) if it lies in
    `cache`, the instance's Gradio cache; files anywhere else (the examples) are never touched."""
    if not audio or not isinstance(audio, (str, os.PathLike)):
        return
    cache = Path(cache).resolve()
    path = Path(audio).resolve()
    if cache not in path.parents:
        return
    path.unlink(missing_ok=True)
    parent = path.parent
    while parent != cache and cache in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
