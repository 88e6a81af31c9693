"""File helpers: atomic writes, run-directory locks, digests, and where jaxqc keeps its files.

Imports nothing from `jaxqc.data`, so every module (readers, checkpoints, model files, downloads)
can use it without import cycles. `jaxqc.data.io` and `jaxqc.data.registry` re-export these names.

A temporary file is named `.NAME.PID@HOST.RANDOM.tmp`: a writer killed with kill -9 cannot remove it, so
the next writer of NAME (and whoever locks a run directory or opens the cache) removes those whose PID is
dead on this host, and never the file of a live concurrent writer.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import socket
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import RunLocked, WriteError


# ---- atomic writes ----------------------------------------------------------------------------
def _host() -> str:
    return re.sub(r"[^\w-]", "_", socket.gethostname().split(".")[0]) or "host"


def temp_tag() -> str:
    """PID@HOST of this process: the part of a temporary file's name that says who writes it."""
    return f"{os.getpid()}@{_host()}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's live process (or not a pid we can judge): keep its file
    return True


LEGACY_TEMP_AGE_S = 3600.0  # temporary files of jaxqc before the PID tag: stale when untouched this long


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """True for a `.*.tmp` file left by a dead writer: its PID is dead on this host, or (a name without a
    PID tag, written by an older jaxqc) it was not modified for LEGACY_TEMP_AGE_S."""
    name = path.name
    if not (name.startswith(".") and name.endswith(".tmp")):
        return False
    parts = name[:-len(".tmp")].rsplit(".", 2)
    m = re.fullmatch(r"(\d+)@([\w-]+)", parts[1]) if len(parts) == 3 else None
    if m:
        return m.group(2) == _host() and not _pid_alive(int(m.group(1)))
    try:
        return (now or time.time()) - path.stat().st_mtime > LEGACY_TEMP_AGE_S
    except FileNotFoundError:
        return False


def clean_stale_temps(folder, name: str | None = None) -> list:
    """Remove the temporary files of dead writers in `folder` (only those of `name`, when given);
    returns the paths removed. Never fails: a file that vanished or cannot be removed is skipped."""
    folder = Path(folder)
    removed = []
    try:
        candidates = list(folder.glob(f".{glob_escape(name)}.*.tmp" if name else ".*.tmp"))
    except OSError:
        return removed
    for path in candidates:
        if is_stale_temp(path):
            with contextlib.suppress(OSError):
                path.unlink()
                removed.append(path)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds.
    Stale temporary files of `path` from killed writers are removed first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{temp_tag()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_failed(path, err: OSError) -> str:
    """'PATH: disk full (No space left on device); the earlier file, if any, is unchanged'."""
    full = err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    return (f"{path}: {'disk full' if full else 'write failed'} ({err.strerror or err}); "
            f"the earlier file, if any, is unchanged")


@contextlib.contextmanager
def write_errors(path):
    """Turn an OSError while writing `path` (disk full, permission, read-only) into a one-line WriteError."""
    try:
        yield
    except OSError as err:
        raise WriteError(write_failed(path, err)) from err


def atomic_savez(path, compress: bool = False, **arrays) -> None:
    """np.savez to `path` atomically (the exact name is kept: no '.npz' is appended)."""
    with write_errors(path), atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)


def atomic_write_text(path, text: str) -> None:
    """Write `text` to `path` atomically: readers see the old file or the whole new one."""
    with write_errors(path), atomic_path(path) as tmp:
        Path(tmp).write_text(text)


def rescue_dir(write) -> Path | None:
    """Call write(folder) on a fresh folder under the temporary directory (often another disk than a full
    one): the folder when that worked, else None (and nothing is left behind)."""
    import shutil

    folder = None
    try:
        folder = Path(tempfile.mkdtemp(prefix="jaxqc-rescue-"))
        write(folder)
        return folder
    except (OSError, WriteError):
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        return None


# ---- run-directory locks -----------------------------------------------------------------------
LOCK_NAME = ".lock"
_HELD: dict = {}  # realpath -> how many times this process holds it (the CLI and the loop both take it)


@contextlib.contextmanager
def run_lock(directory):
    """Hold an exclusive lock on a run directory (flock on DIR/.lock) for the block; a second process
    gets a one-line RunLocked naming the holder's PID. The kernel drops the lock when its holder dies,
    so kill -9 leaves no stale lock. Re-entrant within a process. Creates `directory`; removes it again
    when it was created here and is still empty, and removes stale temporary files of killed writers."""
    directory = Path(directory)
    key = os.path.realpath(directory)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield directory
        finally:
            _HELD[key] -= 1
        return
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = _acquire(directory / LOCK_NAME, directory)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    _HELD[key] = 1
    try:
        clean_stale_temps(directory)
        yield directory
    finally:
        del _HELD[key]
        with contextlib.suppress(OSError):
            os.unlink(directory / LOCK_NAME)  # while still locked: a waiting opener sees it vanish and retries
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()


def _acquire(path: Path, directory: Path) -> int:
    """An fd holding flock(LOCK_EX) on `path`, which is still the file at `path` (a holder that just
    released may have removed it: then open the new one). Raises RunLocked when another process holds it."""
    import fcntl

    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunLocked(f"{directory}: another jaxqc process (pid {holder}) is writing this run directory; "
                            f"wait for it to finish or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)


# ---- digests ----------------------------------------------------------------------------------
def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (hashlib algorithm name), read in 4 MB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---- where files live -------------------------------------------------------------------------
_CLEANED: set = set()  # cache folders whose stale temporary files this process has removed


def cache_dir() -> Path:
    """$JAXQC_CACHE, default ~/.cache/jaxqc: converted data sets and downloads. The first call for a
    folder removes the stale temporary files of killed writers in it (a QM9 cache one is 63 MB)."""
    path = Path(os.environ.get("JAXQC_CACHE") or Path.home() / ".cache" / "jaxqc")
    if path not in _CLEANED:
        _CLEANED.add(path)
        for folder in (path, path / "downloads"):
            clean_stale_temps(folder)
    return path


def shared_data_dir() -> Path:
    """Third-party reference data for benchmarks: $JAXQC_SHARED_DATA, default ../shared/data."""
    return Path(os.environ.get("JAXQC_SHARED_DATA") or "../shared/data")
