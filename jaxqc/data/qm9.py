"""QM9 (placeholder; being written)."""
from pathlib import Path


def looks_like_qm9_xyz(path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        fh.readline()
        return fh.readline().startswith("gdb ")
