"""Files one Space instance writes, kept from piling up.

Attack outputs (images, WAVs, features) go to a folder of this instance, never one shared by
every instance on the host; each request gets a fresh subfolder, removed after
OUTPUT_TTL_SECONDS and, oldest first, whenever the instance holds more than MAX_OUTPUT_BYTES.
The app prunes Gradio's cache the same way (`prune`, per request and on a timer: `prune_every`)
and deletes a refused upload at once (`forget_upload`).

An instance's folders (`instance_folder`: its outputs, its Gradio cache) are removed at exit,
and hold a lock for as long as the process lives: the kernel drops it however the process ends
(SIGKILL, a crash, the out-of-memory killer), so the next instance to start finds the folders
nobody holds and removes them (`remove_dead_instances`)."""
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the process id alone tells a dead instance
    fcntl = None

# Prefix of every instance folder under the system's temporary folder.
INSTANCE_PREFIX = "ser-space-"
INSTANCE_LOCK = ".instance-lock"
_held_locks: list[int] = []  # descriptors of this process's instance locks, open until it ends

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
            _output_root = instance_folder(INSTANCE_PREFIX)
    return _output_root


def instance_folder(prefix: str = INSTANCE_PREFIX, parent=None) -> Path:
    """A fresh folder of this process, `<prefix><pid>-<random>` under `parent` (the system's
    temporary folder): locked while the process lives, removed at exit (atexit: a normal end,
    or SIGTERM once the app turns it into one)."""
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    fd = os.open(folder / INSTANCE_LOCK, os.O_CREAT | os.O_RDWR, 0o600)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _held_locks.append(fd)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def remove_dead_instances(parent=None, prefix: str = INSTANCE_PREFIX) -> list[Path]:
    """Remove the instance folders (`<prefix>...<pid>-...` under `parent`, this user's) whose
    process has ended without removing them; returns them. A folder stays while its lock is
    held or its process id is alive (a folder just made, not yet locked, is one of those)."""
    parent = Path(parent or tempfile.gettempdir())
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        try:
            if folder.is_symlink() or not folder.is_dir() or folder.stat().st_uid != os.getuid():
                continue
        except OSError:
            continue
        if _lock_held(folder) or _pid_alive(folder.name, prefix):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _lock_held(folder: Path) -> bool:
    try:
        fd = os.open(folder / INSTANCE_LOCK, os.O_RDWR)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # cannot tell: keep it
    try:
        if fcntl is None:
            return False
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False  # nobody held it; closing the descriptor lets it go again
    except OSError:
        return True
    finally:
        os.close(fd)


def _pid_alive(name: str, prefix: str) -> bool:
    found = re.match(rf"{re.escape(prefix)}(?:[a-z]+-)*(\d+)-", name)
    if not found:
        return False
    try:
        os.kill(int(found.group(1)), 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # another user's process, or cannot tell: keep it
    return True


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
        if p.name.startswith("."):  # the instance lock, never a file of a request
            continue
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


def prune_every(every_s: float, root, max_bytes: int, max_age: float | None = None,
                min_age: float = 0.0) -> threading.Event:
    """Prune `root` (as `prune`) every `every_s` seconds in a daemon thread, so a cap holds
    between requests too; set the returned event to stop it."""
    stop = threading.Event()

    def loop():
        while not stop.wait(every_s):
            try:
                prune(root, max_bytes, max_age, min_age=min_age)
            except OSError:
                pass  # a file went while being looked at: the next round counts again

    threading.Thread(target=loop, name=f"prune {root}", daemon=True).start()
    return stop


def housekeeping(cache, max_cache_bytes: int, cache_age_s: float, min_age: float = 120.0,
                 every_s: float = 10.0) -> list[Path]:
    """What a serving process does once at start so its caps hold at every moment: SIGTERM ends
    it as Ctrl-C does (its folders are removed at exit), the folders of instances that ended
    without removing theirs go now (returned), and Gradio's `cache` and the attack outputs are
    pruned every `every_s` seconds between requests."""
    end_on_sigterm()
    gone = remove_dead_instances()
    if gone:
        print(f"removed the folders of {len(gone)} ended instances: {[p.name for p in gone]}", flush=True)
    prune_every(every_s, cache, max_cache_bytes, cache_age_s, min_age=min_age)
    prune_every(every_s, output_root(), MAX_OUTPUT_BYTES, OUTPUT_TTL_SECONDS, min_age=30.0)
    return gone


def end_on_sigterm() -> None:
    """SIGTERM (a Space restart, `kill`, a test's terminate) raises KeyboardInterrupt in the main
    thread, as Ctrl-C does: Gradio's block_thread closes the server, and atexit removes this
    instance's folders, which the default SIGTERM (an immediate end) skips."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


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
