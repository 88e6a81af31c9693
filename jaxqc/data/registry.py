"""Registered data set names. `qm9`: full QM9 from the qm9pack package (cached after the first
conversion); `ethanol-xtb`: the GFN2-xTB ethanol MD data set that ships inside jaxqc."""
from __future__ import annotations

import os
from pathlib import Path

EMBEDDED_DIR = Path(__file__).parent / "embedded"
NAMES = ("qm9", "ethanol-xtb")


def is_registered(name: str) -> bool:
    return name in NAMES


def cache_dir() -> Path:
    """$JAXQC_CACHE, default ~/.cache/jaxqc."""
    return Path(os.environ.get("JAXQC_CACHE") or Path.home() / ".cache" / "jaxqc")


def shared_data_dir() -> Path:
    """Third-party reference data for benchmarks: $JAXQC_SHARED_DATA, default ../shared/data."""
    return Path(os.environ.get("JAXQC_SHARED_DATA") or "../shared/data")


def load(name: str):
    if name == "qm9":
        from .qm9 import load_qm9
        return load_qm9()
    if name == "ethanol-xtb":
        from .io import read_npz
        data = read_npz(EMBEDDED_DIR / "ethanol_xtb.npz")
        data.meta["name"] = "ethanol-xtb"
        return data
    raise KeyError(name)
