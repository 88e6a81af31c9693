"""What a comparison learns and on which frames: the data kind, the test file's check, the protocol split.

Two kinds of data (registry.KINDS):
  frames      frames of one molecule with energies (and forces): ethanol-xtb, (r)MD17-style npz files, extxyz;
  property    one geometry per molecule with properties (QM9, or a file with them; --target, default U0).
The split itself is jaxqc.data.splits.benchmark_protocol (the one place that decides indices); this module
only picks its sizes per (kind, budget level).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError

# test and validation sizes of the protocol, per (kind, level): the same frames for every method
SIZES = {
    ("frames", "tiny"): {"n_test": 40, "n_valid": 10},
    ("frames", "quick"): {"n_test": 1000, "n_valid": 50},
    ("frames", "paper"): {"n_test": 1000, "n_valid": 50},
    ("property", "tiny"): {"n_test": 40, "n_valid": 20},
    ("property", "quick"): {"n_test": 10_000, "n_valid": 2_000},
    ("property", "paper"): {"n_test": 10_000, "n_valid": 2_000},
}


def read_data(source, units: dict, what: str = "--data"):
    """A registered data set or a file, in jaxqc's units; a one-line error for neither."""
    from ..data import io, registry

    if not registry.is_registered(str(source)) and not Path(source).exists():
        raise DataError(f"{what} {source}: not a registered data set ({', '.join(registry.NAMES)}) and no such file")
    return io.read(source, **units)


def formula(Z) -> str:
    from ..md.models import formula as _formula

    return _formula(Z)


def data_kind(data, target: str | None) -> tuple[str, str]:
    """('frames', 'energy') for frames of one molecule with energies or forces; ('property', target) for
    molecules with properties (target default U0)."""
    if target not in (None, "energy"):
        if target not in data.props:
            raise DataError(f"--target {target}: not in the data set (available: "
                            f"{', '.join(sorted(data.props)) or 'no properties; use frames with energies'})")
        return "property", target
    if data.props and target is None and data.F is None:
        return "property", "U0" if "U0" in data.props else sorted(data.props)[0]
    if data.E is None and data.F is None:
        raise DataError("the data set has neither energies/forces nor properties to learn")
    if np.any(data.Z != data.Z[:1]):
        raise DataError("frames of different molecules with energies: compare needs frames of one molecule "
                        "(for force fields) or molecules with properties (--target)")
    return "frames", "energy"


def check_test_data(data, test, kind: str, target: str, source) -> None:
    """A --test file must hold the same molecule (frames) or the target (property), with the same labels."""
    if kind == "frames":
        if test.Z.shape[1] != data.Z.shape[1] or np.any(test.Z != data.Z[:1]):
            raise DataError(f"--test {source}: a different molecule ({formula(test.Z[0])}, {test.Z.shape[1]} atoms) "
                            f"from --data ({formula(data.Z[0])}, {data.Z.shape[1]} atoms); the test frames must be "
                            f"the same molecule with the same atom order")
        if data.F is not None and test.F is None:
            raise DataError(f"--test {source}: no forces (--data has forces)")
        if data.E is not None and test.E is None:
            raise DataError(f"--test {source}: no energies (--data has energies)")
    elif target not in test.props:
        raise DataError(f"--test {source}: no {target} values")


def make_protocol(data, kind: str, level: str, has_test_file: bool, n_test_file: int = 0, seed: int = 0) -> dict:
    """{"pool", "valid", "test" (indices into --data, or into the --test file), "description"}; training
    sets are prefixes of "pool" (nested learning curves)."""
    from ..data.splits import benchmark_protocol

    p = SIZES[(kind, level)]
    return benchmark_protocol(data, kind, p["n_test"], p["n_valid"], has_test_file, n_test_file, seed)


def reference(test, target: str):
    """The test labels of the target: energies (frames) or the property's values."""
    return test.E if target == "energy" else np.asarray(test.props[target])
