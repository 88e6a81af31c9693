"""Readers and writers: sGDML npz, rMD17 npz, extended XYZ (through ASE); QM9 formats live in qm9.py.

Every reader converts to Å / kcal/mol / kcal/mol/Å once, validates the arrays (shapes, elements,
finite coordinates, no overlapping atoms) and returns a `Dataset`. Every writer is atomic and records
its units. `read` takes a path or a name registered in `registry`. The atomic-write and digest helpers
live in `jaxqc.files` and are re-exported here.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from .. import units as U
from ..elements import MAX_Z, atomic_number
from ..errors import DataError, ElementError, FormatError, JaxqcError
from ..files import atomic_path, atomic_savez, atomic_write_text, file_digest  # noqa: F401 - re-exported
from . import qm9, registry
from .molecules import Dataset


# ---- npz: sGDML and rMD17 ---------------------------------------------------------------------
def _str(x) -> str:
    x = np.asarray(x)
    x = x.item() if x.shape == () else x
    return x.decode() if isinstance(x, bytes) else str(x)


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")


def _load(npz, key: str, path: Path) -> np.ndarray:
    """npz[key]; a one-line FormatError for an array jaxqc never reads (pickled Python objects) or a damaged one."""
    try:
        return npz[key]
    except ValueError as err:
        what = "Python objects (dtype object)" if "allow_pickle" in str(err) else f"an unreadable array ({err})"
        raise FormatError(f"{path}: array {key!r} holds {what}; expected a numeric array") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise FormatError(f"{path}: array {key!r} is not readable ({err})") from None


def _numbers(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """x as float64, or a one-line FormatError for text and other non-numeric arrays."""
    if x.dtype.kind not in "biuf":
        kind = "text" if x.dtype.kind in "US" else f"dtype {x.dtype}"
        raise FormatError(f"{path}: array {key!r} holds {kind}; expected numbers")
    return np.asarray(x, dtype=np.float64)


def _atomic_numbers(z: np.ndarray, key: str, path: Path) -> np.ndarray:
    """z as int, or a one-line error: text, fractions, and (for one molecule's z) 0 or below, which are no element
    (0 would be read as padding and the atom silently dropped)."""
    if z.dtype.kind in "US":
        raise FormatError(f"{path}: atomic numbers {key!r} are text (e.g. {_str(z.flat[0]) if z.size else ''!r}); "
                          f"expected integers")
    zf = _numbers(z, key, path)
    if not np.all(np.isfinite(zf) & (zf == np.round(zf))):
        raise FormatError(f"{path}: atomic numbers {key!r} are not all integers")
    z = zf.astype(np.int64)
    if z.ndim == 1 and np.any(z <= 0):
        i = int(np.flatnonzero(z <= 0)[0])
        raise ElementError(f"{path}: atom {i} has atomic number {z[i]}; expected 1..{MAX_Z} (0 is no element)")
    return z


def npz_problem(err: Exception) -> str:
    """What np.load's error says about a file that is not a readable npz, in words: numpy reads bytes
    that are neither a zip archive nor a .npy array as a pickle and then suggests loading it unsafely."""
    if isinstance(err, ValueError) and "pickle" in str(err):
        return "neither a zip archive nor a .npy array"
    return str(err)


def read_npz(path, energy_unit: str | None = None, force_unit: str | None = None,
             length_unit: str | None = None, unit_check: bool = True) -> Dataset:
    """Read an sGDML (`R, E, F, z`), rMD17 (`coords, energies, forces, nuclear_charges`) or jaxqc npz.

    Units: from the file's `r_unit`/`e_unit` keys when present, else Å and kcal/mol (both formats'
    convention), unless given explicitly. unit_check: refuse energies/forces no molecule has
    (check_units_plausible), the sign of a unit mistake.
    """
    path = Path(path)
    _check_exists(path)
    try:
        npz = np.load(path, allow_pickle=False)
        keys = set(npz.files)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise FormatError(f"{path}: not a readable npz file ({npz_problem(err)})") from None
    with npz:
        get = lambda key: _load(npz, key, path)  # noqa: E731
        if {"R", "z"} <= keys:
            kind, names = "sgdml", ("R", "z", "E", "F")
        elif {"coords", "nuclear_charges"} <= keys:
            kind, names = "rmd17", ("coords", "nuclear_charges", "energies", "forces")
        else:
            raise FormatError(f"{path}: npz with keys {sorted(keys)} is neither sGDML (R, z, E, F) "
                              f"nor rMD17 (coords, nuclear_charges, energies, forces)")
        R, z = _numbers(get(names[0]), names[0], path), _atomic_numbers(get(names[1]), names[1], path)
        E, F = (_numbers(get(k), k, path) if k in keys else None for k in names[2:])
        meta = {"source": str(path), "format": kind}
        if "jaxqc_meta" in keys:
            try:
                meta.update(json.loads(_str(get("jaxqc_meta"))))
            except ValueError as err:
                raise FormatError(f"{path}: 'jaxqc_meta' is not JSON ({err})") from None
        for k in ("name", "theory"):
            if k in keys:
                meta[k] = _str(get(k))
        if kind == "rmd17":
            meta.setdefault("theory", "PBE/def2-SVP (revised MD17)")
        if "md5" in keys:
            meta["file_md5"] = _str(get("md5"))
        e_unit = energy_unit or (_str(get("e_unit")) if "e_unit" in keys else "kcal/mol")
        r_unit = length_unit or (_str(get("r_unit")) if "r_unit" in keys else "Å")
        props = {k[len("prop_"):]: get(k) for k in keys if k.startswith("prop_") and k != "prop_units"}
        prop_units = json.loads(_str(get("prop_units"))) if "prop_units" in keys else {}
    f_unit = force_unit or f"{e_unit}/{r_unit}"
    if R.ndim != 3 or R.shape[-1] != 3:
        raise DataError(f"{path}: expected positions of shape [frames, atoms, 3], got {R.shape}")
    if R.shape[0] == 0 or R.shape[1] == 0:
        raise DataError(f"{path}: no {'frames' if R.shape[0] == 0 else 'atoms'} (positions of shape {R.shape})")
    Z = np.broadcast_to(z, R.shape[:2]) if z.ndim == 1 and z.shape[0] == R.shape[1] else z
    if Z.shape != R.shape[:2]:
        raise DataError(f"{path}: shape mismatch: atomic numbers {z.shape} vs positions {R.shape}")
    if E is not None:
        if E.size != R.shape[0]:
            raise DataError(f"{path}: shape mismatch: {E.size} energies for {R.shape[0]} geometries")
        E = E.reshape(-1) * U.energy_factor(e_unit)
    if F is not None:
        if F.shape != R.shape:
            raise DataError(f"{path}: shape mismatch: forces {F.shape} vs positions {R.shape}")
        F = F * U.force_factor(f_unit)
    R = R * U.length_factor(r_unit)
    meta.setdefault("name", path.stem)
    data = Dataset(Z=Z, R=R, E=E, F=F, props=props, units=prop_units, meta=meta).validate(str(path))
    if unit_check:
        check_units_plausible(data, str(path), e_unit, f_unit, r_unit, force_unit is not None)
    return data


# ---- unit plausibility ---------------------------------------------------------------------------
# Far beyond any molecule (rMD17 at 500 K: force RMS 21-32 kcal/mol/Å, energy std 0.3-0.5 kcal/mol per atom;
# strongly distorted geometries a few times that, a diatomic's dissociation scan ~20 kcal/mol per atom), and
# reached by the 43x of meV read as kcal/mol or the 1000x of meV read as eV. A smaller mistake (eV read as
# kcal/mol, 23x) can pass.
MAX_FORCE_RMS_KCAL_MOL_ANG = 500.0
MAX_ENERGY_STD_KCAL_MOL_ATOM = 50.0
TYPICAL_FORCE_RMS_KCAL_MOL_ANG = 30.0
TYPICAL_ENERGY_STD_KCAL_MOL_ATOM = 0.5


def check_units_plausible(data: Dataset, source: str, energy_unit: str, force_unit: str, length_unit: str,
                          force_unit_given: bool = False) -> None:
    """A one-line DataError when the forces' RMS or the frames' energy spread (after conversion to kcal/mol)
    is far beyond what molecules have: a file read in the wrong unit (meV read as eV gives forces 1000x too
    large). Names the unit that makes the values typical and the flag that reads the file in it. A DataError:
    the data, not the unit string, are what is wrong."""
    stats = data.statistics()
    rms = stats.get("F", {}).get("rms", 0.0)
    if rms > MAX_FORCE_RMS_KCAL_MOL_ANG:
        raw = rms / U.force_factor(force_unit)  # the RMS in the file's numbers
        unit = _typical_energy_unit(raw / U.length_factor(length_unit), TYPICAL_FORCE_RMS_KCAL_MOL_ANG)
        flag = f"--force-unit {unit}/{length_unit}" if force_unit_given else f"--energy-unit {unit}"
        raise DataError(f"{source}: the forces have an RMS of {rms:.4g} kcal/mol/Å read as {force_unit}, far more "
                        f"than molecules have (< {MAX_FORCE_RMS_KCAL_MOL_ANG:g}); "
                        f"{_fix(unit, U.force_factor(force_unit) * U.length_factor(length_unit), flag)}")
    same = len(data) > 1 and data.E is not None and bool(np.all(data.Z == data.Z[:1]))
    spread = float(data.E.std()) / int(data.n_atoms[0]) if same else 0.0
    if spread > MAX_ENERGY_STD_KCAL_MOL_ATOM:
        unit = _typical_energy_unit(spread / U.energy_factor(energy_unit), TYPICAL_ENERGY_STD_KCAL_MOL_ATOM)
        raise DataError(f"{source}: the energies of one molecule spread by {spread:.4g} kcal/mol per atom (std) "
                        f"read as {energy_unit}, far more than its geometries can (< "
                        f"{MAX_ENERGY_STD_KCAL_MOL_ATOM:g}); "
                        f"{_fix(unit, U.energy_factor(energy_unit), f'--energy-unit {unit}')}")


def _fix(unit: str, used_factor: float, flag: str) -> str:
    """The advice of check_units_plausible: the flag for the likely unit, unless that is the one used."""
    if np.isclose(U.energy_factor(unit), used_factor):
        return "no energy unit makes them typical: check the file (or add --no-unit-check to read it as it is)"
    return f"the file is probably in {unit}: add {flag} (or --no-unit-check to read it as it is)"


def _typical_energy_unit(raw: float, typical_kcal_mol: float) -> str:
    """The energy unit in which the file's number `raw` comes closest to `typical_kcal_mol` (log scale)."""
    return min(U.ENERGY_UNITS, key=lambda u: abs(np.log(raw * U.energy_factor(u) / typical_kcal_mol)))


def write_npz(data: Dataset, path, compress: bool = True) -> None:
    """Write an sGDML-style npz (R [Å], E [kcal/mol] (n,1), F [kcal/mol/Å], z, name, theory, md5,
    type='d', r_unit, e_unit) plus `jaxqc_meta` (JSON). Molecules of different composition are
    written with a per-frame `z` of shape [frames, atoms]."""
    same = bool(np.all(data.Z == data.Z[:1]))
    arrays = {
        "R": data.R, "z": data.Z[0] if same else data.Z,
        "name": np.array(str(data.meta.get("name", Path(path).stem))),
        "theory": np.array(str(data.meta.get("theory", "unknown"))),
        "md5": np.array(data.md5), "type": np.array("d"),
        "r_unit": np.array("Ang"), "e_unit": np.array("kcal/mol"),
        "jaxqc_meta": np.array(json.dumps(_jsonable(data.meta))),
    }
    if data.E is not None:
        arrays["E"] = data.E[:, None]
    if data.F is not None:
        arrays["F"] = data.F
    for k, v in data.props.items():
        arrays[f"prop_{k}"] = v
    if data.props:
        arrays["prop_units"] = np.array(json.dumps({k: data.units.get(k, "") for k in data.props}))
    atomic_savez(path, compress=compress, **arrays)


def _jsonable(meta: dict) -> dict:
    drop = {"source", "format", "file_md5", "parent_md5"}
    return {k: v for k, v in meta.items() if k not in drop and isinstance(v, (str, int, float, bool, list, dict))}


# ---- extended XYZ through ASE --------------------------------------------------------------------
def _ase_io():
    try:
        import ase.io
    except ImportError:
        raise JaxqcError("reading extended XYZ needs ASE: pip install 'jaxqc[ase]'") from None
    return ase.io


def read_extxyz(path, energy_unit: str = "eV", force_unit: str | None = None,
                length_unit: str = "Å", energy_key: str = "energy", forces_key: str = "forces",
                unit_check: bool = True) -> Dataset:
    """Read an extended XYZ file with ASE. Energies/forces are in the units the user states
    (default: ASE's eV and eV/Å); they are converted to kcal/mol and kcal/mol/Å once here, and checked
    for plausibility unless unit_check is False (check_units_plausible)."""
    path = Path(path)
    _check_exists(path)
    e_fac = U.energy_factor(energy_unit)
    f_fac = U.force_factor(force_unit or f"{energy_unit}/{length_unit}")
    r_fac = U.length_factor(length_unit)
    _check_xyz_text(path)
    ase_io = _ase_io()
    try:
        frames = ase_io.read(path, index=":", format="extxyz")
    except Exception as err:  # ASE raises many types for malformed files
        raise FormatError(f"{path}: not a readable extended XYZ file ({type(err).__name__}: {err})") from None
    if not frames:
        raise FormatError(f"{path}: no frames")
    n_max = max(len(a) for a in frames)
    M = len(frames)
    Z = np.zeros((M, n_max), np.int32)
    R = np.zeros((M, n_max, 3))
    E = np.full(M, np.nan)
    F = np.zeros((M, n_max, 3))
    has_e = has_f = True
    for m, atoms in enumerate(frames):
        n = len(atoms)
        if np.any(atoms.numbers <= 0):  # a `Z` column of 0 (ASE's 'X'): not an element, and 0 marks padding
            i = int(np.flatnonzero(atoms.numbers <= 0)[0])
            raise ElementError(f"{path}: atom {i} of frame {m} has atomic number {atoms.numbers[i]}; "
                               f"expected 1..{MAX_Z}")
        Z[m, :n] = atoms.numbers
        R[m, :n] = atoms.positions
        e, f = _extxyz_labels(atoms, energy_key, forces_key)
        has_e &= e is not None
        has_f &= f is not None
        if e is not None:
            E[m] = e
        if f is not None:
            F[m, :n] = f
    meta = {"source": str(path), "format": "extxyz", "name": path.stem,
            "original_units": {"energy": energy_unit, "forces": force_unit or f"{energy_unit}/{length_unit}",
                               "length": length_unit}}
    data = Dataset(Z=Z, R=R * r_fac, E=E * e_fac if has_e else None, F=F * f_fac if has_f else None, meta=meta)
    data.validate(str(path))
    if unit_check:
        check_units_plausible(data, str(path), energy_unit, force_unit or f"{energy_unit}/{length_unit}",
                              length_unit, force_unit is not None)
    return data


def _extxyz_labels(atoms, energy_key, forces_key):
    e = atoms.info.get(energy_key)
    f = atoms.arrays.get(forces_key)
    if atoms.calc is not None:  # ASE moves energy/forces into a SinglePointCalculator
        results = getattr(atoms.calc, "results", {})
        e = results.get("energy", e) if energy_key == "energy" else e
        f = results.get("forces", f) if forces_key == "forces" else f
    return e, f


def _check_xyz_text(path: Path) -> None:
    """Catch the common XYZ errors ourselves, with line numbers (ASE's messages rarely have them)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        lineno = 0
        while True:
            line = fh.readline()
            lineno += 1
            if not line:
                return
            if not line.strip():
                continue
            try:
                n = int(line.split()[0])
            except ValueError:
                raise FormatError(f"{path}:{lineno}: expected an atom count, got {line.strip()[:40]!r}") from None
            fh.readline()  # comment line
            lineno += 1
            for _ in range(n):
                line = fh.readline()
                lineno += 1
                parts = line.split()
                if len(parts) < 4:
                    raise FormatError(f"{path}:{lineno}: expected 'element x y z ...', got {line.strip()[:60]!r}")
                try:
                    atomic_number(parts[0])
                except JaxqcError:
                    raise DataError(f"{path}:{lineno}: unknown element {parts[0]!r}") from None
                try:
                    xyz = [float(v) for v in parts[1:4]]
                except ValueError:
                    raise FormatError(f"{path}:{lineno}: expected three coordinates, got {parts[1:4]}") from None
                if not all(np.isfinite(xyz)):
                    raise DataError(f"{path}:{lineno}: non-finite (NaN/inf) coordinate {parts[1:4]}")


def write_extxyz(data: Dataset, path) -> None:
    """Write frames as extended XYZ (eV, eV/Å: ASE's convention, stated in each frame's comment)."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    ase_io = _ase_io()
    frames = []
    for m in range(len(data)):
        n = int(data.n_atoms[m])
        atoms = Atoms(numbers=data.Z[m, :n], positions=data.R[m, :n])
        results = {}
        if data.E is not None:
            results["energy"] = data.E[m] / U.EV_KCAL_MOL
        if data.F is not None:
            results["forces"] = data.F[m, :n] / U.EV_KCAL_MOL
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info["energy_unit"] = "eV"
        frames.append(atoms)
    with atomic_path(path) as tmp:
        ase_io.write(tmp, frames, format="extxyz")


# ---- one entry point -----------------------------------------------------------------------------
def read(source, energy_unit: str | None = None, force_unit: str | None = None,
         length_unit: str | None = None, unit_check: bool = True) -> Dataset:
    """Read a data set from a registered name (`qm9`, `ethanol-xtb`) or a path, by its format.
    unit_check=False skips the plausibility check of energies and forces (check_units_plausible)."""
    if registry.is_registered(str(source)):
        return registry.load(str(source))
    path = Path(source)
    _check_exists(path)
    name = path.name.lower()
    if path.is_dir() or name.endswith((".tar.bz2", ".tar", ".tar.gz", ".tbz2")):
        return qm9.read_qm9_xyz(path)
    if name.endswith(".npz"):
        return read_npz(path, energy_unit, force_unit, length_unit, unit_check)
    if name.endswith((".xyz", ".extxyz")):
        if qm9.looks_like_qm9_xyz(path):
            return qm9.read_qm9_xyz(path)
        return read_extxyz(path, energy_unit or "eV", force_unit, length_unit or "Å", unit_check=unit_check)
    raise FormatError(f"{path}: unsupported format (expected .npz, .xyz/.extxyz, a QM9 folder or tarball, "
                      f"or a registered name)")


def write(data: Dataset, path) -> None:
    name = str(path).lower()
    if name.endswith(".npz"):
        write_npz(data, path)
    elif name.endswith((".xyz", ".extxyz")):
        write_extxyz(data, path)
    else:
        raise FormatError(f"{path}: unsupported output format (expected .npz or .extxyz)")
