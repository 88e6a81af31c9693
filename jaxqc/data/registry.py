"""Registered data set names: the one map from a name to its loader.

`qm9`: full QM9 from the qm9pack package (cached after the first conversion); `ethanol-xtb`: the
GFN2-xTB ethanol MD data set that ships inside jaxqc; `water-dft-hamiltonian`: 100 frames of water (GFN2-xTB
Langevin MD at 500 K) labelled with PBE/def2-SVP by PySCF, with the Kohn-Sham matrix H, S and orbitals per
frame and H0, the Kohn-Sham matrix of the minao guess (1.3 MB; its meta records the command that made it).

Loaders are named as "module:function" and imported when a name is loaded, so this module imports
no reader: `io.read` can look names up here without an import cycle.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ..files import cache_dir, shared_data_dir  # noqa: F401 - re-exported: callers import them from here

EMBEDDED_DIR = Path(__file__).parent / "embedded"

# name -> ("module:function", positional arguments)
LOADERS = {
    "qm9": ("jaxqc.data.qm9:load_qm9", ()),
    "ethanol-xtb": ("jaxqc.data.io:read_npz", (EMBEDDED_DIR / "ethanol_xtb.npz",)),
    "water-dft-hamiltonian": ("jaxqc.data.io:read_npz", (EMBEDDED_DIR / "water_dft_hamiltonian.npz",)),
}
NAMES = tuple(LOADERS)


def is_registered(name: str) -> bool:
    return name in LOADERS


def loader(name: str):
    """(function, arguments) that load the registered data set `name`; KeyError if not registered."""
    target, args = LOADERS[name]
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function), args


def load(name: str):
    """The registered data set `name` as a Dataset whose meta["name"] is `name`."""
    function, args = loader(name)
    data = function(*args)
    data.meta["name"] = name
    return data
