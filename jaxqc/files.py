"""File helpers: atomic writes, digests, and where jaxqc keeps its files.

Imports nothing from `jaxqc.data`, so every module (readers, checkpoints, model files, downloads)
can use it without import cycles. `jaxqc.data.io` and `jaxqc.data.registry` re-export these names.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


# ---- atomic writes ----------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def atomic_savez(path, compress: bool = False, **arrays) -> None:
    """np.savez to `path` atomically (the exact name is kept: no '.npz' is appended)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            (np.savez_compressed if compress else np.savez)(fh, **arrays)


def atomic_write_text(path, text: str) -> None:
    """Write `text` to `path` atomically: readers see the old file or the whole new one."""
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)


# ---- digests ----------------------------------------------------------------------------------
def file_digest(path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (hashlib algorithm name), read in 4 MB blocks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


# ---- where files live -------------------------------------------------------------------------
def cache_dir() -> Path:
    """$JAXQC_CACHE, default ~/.cache/jaxqc: converted data sets and downloads."""
    return Path(os.environ.get("JAXQC_CACHE") or Path.home() / ".cache" / "jaxqc")


def shared_data_dir() -> Path:
    """Third-party reference data for benchmarks: $JAXQC_SHARED_DATA, default ../shared/data."""
    return Path(os.environ.get("JAXQC_SHARED_DATA") or "../shared/data")
