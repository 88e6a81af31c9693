"""QM9 (Ramakrishnan et al. 2014): 130,831 small organic molecules (H, C, N, O, F; up to 29 atoms)
with B3LYP/6-31G(2df,p) properties. (~520 lines on purpose: both readers, the unit conversions and the
checks of every field share one table of targets and one cache format.)

Two sources, one result (a `Dataset` whose props are `QM9_TARGETS`, in jaxqc units):

* the original published format (`dsgdb9nsd_NNNNNN.xyz`: a single file, a folder of them, or the
  `dsgdb9nsd.xyz.tar.bz2` tarball, read as a stream without extracting): `read_qm9_xyz`;
* the PyPI package `qm9pack` (the same 130,831 molecules as CSV): `load_qm9` converts its CSV files
  once into a compact cache file `$JAXQC_CACHE/qm9_v1.npz` (see `CACHE_NAME`) and loads that.

Units (converted once, here): total energies U0, U, H, G and atomization energies U0_atom, U_atom,
H_atom, G_atom (total minus QM9's free-atom reference energies), HOMO, LUMO, gap and ZPVE in kcal/mol;
mu in D; alpha in bohr^3; R2 in bohr^2; Cv in cal/mol/K; rotational constants A, B, C in GHz;
positions in Å. `props["index"]` is the gdb id (int32, 1-based, as in the file names).

Note: the published tarball holds 133,885 molecules; qm9pack (and `load_qm9`) have the 130,831 that
remain after removing the 3,054 molecules that failed QM9's geometry consistency check.
`read_qm9_xyz` reads whatever files it is given and removes nothing.

The fixed benchmark split is `splits.qm9_protocol` (also importable here as `qm9_protocol_split`).
"""
from __future__ import annotations

import csv
import importlib.util
import json
import sys
import tarfile
import time
import warnings
import zipfile
from collections import OrderedDict
from importlib.metadata import version as package_version
from pathlib import Path

import numpy as np

from .. import units as U
from ..elements import atomic_number, qm9_atom_reference_kcal_mol
from ..errors import DataError, ElementError, FormatError, JaxqcError, where
from ..files import atomic_savez, cache_dir, file_digest
from .molecules import Dataset, validate_arrays
from .splits import N_QM9, qm9_protocol  # noqa: F401 - N_QM9 re-exported: callers import it from here

NAME = "qm9"
THEORY = "B3LYP/6-31G(2df,p)"
QM9_ELEMENTS = (1, 6, 7, 8, 9)  # H C N O F
_QM9_SYMBOLS = {"H": 1, "C": 6, "N": 7, "O": 8, "F": 9}

# Every target, in jaxqc units, in this order.
QM9_TARGETS = OrderedDict([
    ("U0", "kcal/mol"), ("U", "kcal/mol"), ("H", "kcal/mol"), ("G", "kcal/mol"),
    ("U0_atom", "kcal/mol"), ("U_atom", "kcal/mol"), ("H_atom", "kcal/mol"), ("G_atom", "kcal/mol"),
    ("HOMO", "kcal/mol"), ("LUMO", "kcal/mol"), ("gap", "kcal/mol"), ("ZPVE", "kcal/mol"),
    ("mu", "D"), ("alpha", "bohr^3"), ("R2", "bohr^2"), ("Cv", "cal/mol/K"),
    ("A", "GHz"), ("B", "GHz"), ("C", "GHz"),
])

# The 15 properties on line 2 of a QM9 xyz file, in file order and file units.
RAW_NAMES = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
_RAW = {k: i for i, k in enumerate(RAW_NAMES)}
# qm9pack CSV column of each raw property
_CSV_COLUMNS = ("RotA_GHz", "RotB_GHz", "RotC_GHz", "Dipole_debye", "Polarizability_bohr3", "HOMO_au",
                "LUMO_au", "HOMO_LUMO_gap_au", "R2_bohr2", "ZPVE_au", "InternalEnergy_0K_au",
                "InternalEnergy_298K_au", "Enthalphy_298K_au", "GibbsFreeEnergy_298K_au",
                "Heatcapacity_Cv_cal_mol_K")
_CSV_FILES = ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv")

CACHE_FORMAT_VERSION = 1
CACHE_NAME = f"qm9_v{CACHE_FORMAT_VERSION}.npz"
INSTALL_HINT = "pip install 'jaxqc[qm9]'"


# ---- units -------------------------------------------------------------------------------------
def _targets(raw: np.ndarray, Z: np.ndarray) -> dict:
    """QM9_TARGETS in jaxqc units from raw file values `raw` [M, 15] (RAW_NAMES order, file units)
    and padded atomic numbers Z [M, A]."""
    raw = np.asarray(raw, dtype=np.float64)
    ha = U.HARTREE_KCAL_MOL
    col = lambda k: raw[:, _RAW[k]]  # noqa: E731
    out = {q: col(q) * ha for q in ("U0", "U", "H", "G")}
    # free-atom references: per-element values from the QM9 table, times per-molecule element counts
    Z = np.asarray(Z)
    counts = np.stack([(Z == z).sum(axis=1) for z in QM9_ELEMENTS], axis=1).astype(np.float64)
    for q in ("U0", "U", "H", "G"):
        per_element = qm9_atom_reference_kcal_mol(np.array([[z] for z in QM9_ELEMENTS]), q)
        out[f"{q}_atom"] = out[q] - counts @ per_element
    out.update(HOMO=col("homo") * ha, LUMO=col("lumo") * ha, gap=col("gap") * ha, ZPVE=col("zpve") * ha,
               mu=col("mu"), alpha=col("alpha"), R2=col("r2"), Cv=col("Cv"), A=col("A"), B=col("B"),
               C=col("C"))
    return {k: np.ascontiguousarray(out[k]) for k in QM9_TARGETS}


def _dataset(Z: np.ndarray, R: np.ndarray, raw: np.ndarray, index: np.ndarray, meta: dict) -> Dataset:
    props = _targets(raw, Z)
    props["index"] = np.asarray(index, dtype=np.int32)
    units = {**QM9_TARGETS, "index": "gdb id"}
    return Dataset(Z=Z, R=R, props=props, units=units,
                   meta={"name": NAME, "theory": THEORY, **meta})


def _pad(n_atoms: np.ndarray, Z_flat: np.ndarray, R_flat: np.ndarray, width: int | None = None):
    """Padded Z [M, A] int32 and R [M, A, 3] from concatenated atoms (molecule after molecule)."""
    n_atoms = np.asarray(n_atoms, dtype=np.int64)
    A = int(n_atoms.max()) if width is None else width
    mask = np.arange(A) < n_atoms[:, None]
    Z = np.zeros((len(n_atoms), A), np.int32)
    R = np.zeros((len(n_atoms), A, 3), np.float64)
    Z[mask] = Z_flat
    R[mask] = R_flat
    return Z, R


# ---- the published xyz format ------------------------------------------------------------------
def looks_like_qm9_xyz(path) -> bool:
    """True if `path` starts like a QM9 xyz file: an atom count, then a line starting with 'gdb '."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            first, second = fh.readline(), fh.readline()
    except OSError:
        return False
    return first.strip().isdigit() and second.startswith("gdb ")


def _num(tok: str, source, lineno: int, what: str) -> float:
    try:
        return float(tok)
    except ValueError:
        pass
    if "*^" in tok:  # Mathematica-style exponent in some published files: 1.2*^-6
        try:
            return float(tok.replace("*^", "e"))
        except ValueError:
            pass
    raise FormatError(f"{where(source, lineno)}bad number {tok!r} for {what}, expected a decimal number")


def _parse(text: str, source) -> tuple:
    """(Z [n] int32, R [n, 3] Å, gdb id, raw [15] in file units) of one QM9 xyz file."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise FormatError(f"{where(source, 1)}empty file, expected a QM9 xyz file (atom count on line 1)")
    try:
        n = int(lines[0].strip())
    except ValueError:
        raise FormatError(f"{where(source, 1)}expected the atom count, got {lines[0].strip()[:40]!r}") from None
    if n < 1:
        raise FormatError(f"{where(source, 1)}atom count {n}, expected a positive number")
    if len(lines) < 2:
        raise FormatError(f"{where(source, 2)}missing property line, expected 'gdb <id>' and 15 properties")
    tok = lines[1].split()
    if len(tok) < 2 or tok[0] != "gdb":
        raise FormatError(f"{where(source, 2)}expected 'gdb <id>' and 15 properties, got {lines[1].strip()[:60]!r}")
    try:
        gdb = int(tok[1])
    except ValueError:
        raise FormatError(f"{where(source, 2)}bad gdb id {tok[1]!r}, expected an integer") from None
    if len(tok) != 2 + len(RAW_NAMES):
        raise FormatError(f"{where(source, 2)}{len(tok) - 2} properties after 'gdb {gdb}', expected "
                          f"{len(RAW_NAMES)} ({' '.join(RAW_NAMES)})")
    raw = np.array([_num(t, source, 2, name) for t, name in zip(tok[2:], RAW_NAMES)])
    Z = np.zeros(n, np.int32)
    R = np.zeros((n, 3))
    for i in range(n):
        lineno = 3 + i
        if lineno > len(lines):
            raise FormatError(f"{where(source, lineno)}file ends after {i} atom lines, expected the {n} "
                              f"atoms declared on line 1")
        parts = lines[lineno - 1].split()
        if len(parts) != 5 or not parts[0].isalpha():
            raise FormatError(f"{where(source, lineno)}expected atom {i + 1} of the {n} declared on line 1 as "
                              f"'element x y z charge', got {lines[lineno - 1].strip()[:60]!r}")
        sym = parts[0]
        z = _QM9_SYMBOLS.get(sym)
        if z is None:
            try:
                atomic_number(sym)
            except ElementError:
                raise ElementError(f"{where(source, lineno)}unknown element {sym!r}, "
                                   f"expected one of H, C, N, O, F") from None
            raise ElementError(f"{where(source, lineno)}element {sym!r} is not in QM9, "
                               f"expected one of H, C, N, O, F")
        Z[i] = z
        R[i] = [_num(t, source, lineno, f"coordinate {'xyz'[k]} of atom {i + 1}") for k, t in enumerate(parts[1:4])]
        _num(parts[4], source, lineno, f"the Mulliken charge of atom {i + 1}")
    # the three lines after the atoms: harmonic frequencies (numbers only), SMILES, InChI
    lineno = n + 3
    if lineno > len(lines):
        raise FormatError(f"{where(source, lineno)}file ends after the atoms, expected the harmonic frequencies, "
                          f"SMILES and InChI lines")
    freq = lines[lineno - 1].split()
    try:
        for t in freq:
            float(t.replace("*^", "e"))
    except ValueError:
        raise FormatError(f"{where(source, lineno)}expected the harmonic frequencies after the {n} atoms declared "
                          f"on line 1, got {lines[lineno - 1].strip()[:60]!r} (wrong atom count?)") from None
    if len(lines) < n + 5:
        raise FormatError(f"{where(source, len(lines) + 1)}file ends early, expected the SMILES and InChI lines")
    if not lines[n + 4].lstrip().startswith("InChI="):
        raise FormatError(f"{where(source, n + 5)}expected the InChI line, got {lines[n + 4].strip()[:60]!r}")
    if len(lines) > n + 5:
        raise FormatError(f"{where(source, n + 6)}unexpected text after the InChI line "
                          f"{lines[n + 5].strip()[:40]!r}, expected the end of the file")
    return Z, R, gdb, raw


def parse_qm9_xyz_text(text: str, source="<string>") -> tuple:
    """Parse the text of one QM9 xyz file.

    Returns (Z [n] int32, R [n, 3] in Å, props) where props maps every name in QM9_TARGETS to a float
    in jaxqc units (see the module docstring) and "index" to the gdb id (int). Malformed text raises
    FormatError / ElementError with `source:line:` in the message.
    """
    Z, R, gdb, raw = _parse(text, source)
    targets = _targets(raw[None], Z[None])
    props = {k: float(v[0]) for k, v in targets.items()}
    props["index"] = int(gdb)
    return Z, R, props


def _assemble(records: list, meta: dict) -> Dataset:
    """Dataset from [(name, (Z, R, gdb, raw))], in the order given."""
    n_atoms = np.array([len(r[1][0]) for r in records])
    Z_flat = np.concatenate([r[1][0] for r in records])
    R_flat = np.concatenate([r[1][1] for r in records])
    Z, R = _pad(n_atoms, Z_flat, R_flat)
    raw = np.stack([r[1][3] for r in records])
    index = np.array([r[1][2] for r in records])
    validate_arrays(Z, R, source=str(meta.get("source", "")))
    return _dataset(Z, R, raw, index, meta)


def read_qm9_xyz(path) -> Dataset:
    """Read QM9 xyz data: one file, a folder of `*.xyz` files (sorted by name), or a tar archive
    (.tar, .tar.bz2, .tar.gz) read as a stream without extracting anything (members `*.xyz`, sorted by
    their base name so that the result equals reading the extracted folder)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    if path.is_dir():
        files = sorted(path.glob("*.xyz"), key=lambda p: p.name)
        if not files:
            raise DataError(f"{path}: no *.xyz files in this folder, expected QM9 xyz files")
        records = [(f.name, _parse(f.read_text(encoding="utf-8", errors="replace"), f)) for f in files]
        fmt = "qm9-xyz-folder"
    elif tarfile.is_tarfile(path):
        records = []
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if not (member.isfile() and member.name.endswith(".xyz")):
                        continue
                    fh = tar.extractfile(member)
                    text = fh.read().decode("utf-8", errors="replace")
                    records.append((Path(member.name).name, _parse(text, f"{path}[{member.name}]")))
        except (tarfile.TarError, EOFError, OSError, ValueError) as err:
            if isinstance(err, DataError):
                raise
            raise FormatError(f"{path}: unreadable tar archive ({type(err).__name__}: {err})") from None
        if not records:
            raise DataError(f"{path}: no *.xyz members in this archive, expected QM9 xyz files")
        records.sort(key=lambda r: r[0])
        fmt = "qm9-xyz-tar"
    else:
        records = [(path.name, _parse(path.read_text(encoding="utf-8", errors="replace"), path))]
        fmt = "qm9-xyz"
    return _assemble(records, {"source": str(path), "format": fmt})


# ---- qm9pack -> cache --------------------------------------------------------------------------
def qm9pack_data_dir() -> Path:
    """The folder with qm9pack's CSV files, found without importing qm9pack (its import pulls
    pkg_resources). JaxqcError with the install hint when qm9pack is not installed."""
    try:
        spec = importlib.util.find_spec("qm9pack")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise JaxqcError(f"QM9 needs the qm9pack package (the 130,831 molecules as CSV): {INSTALL_HINT}")
    for loc in spec.submodule_search_locations:
        data = Path(loc) / "data"
        if all((data / f).is_file() for f in _CSV_FILES):
            return data
    raise JaxqcError(f"qm9pack is installed but its data files {', '.join(_CSV_FILES)} are missing under "
                     f"{list(spec.submodule_search_locations)}; reinstall it: {INSTALL_HINT}")


def _qm9pack_version() -> str:
    try:
        return package_version("qm9pack")
    except Exception:  # noqa: BLE001 - metadata is informative only
        return "unknown"


_STRIP_BRACKETS = str.maketrans("", "", "[]")
_STRIP_ELEMENTS = str.maketrans("", "", "[]' \"")


def _read_csv(path: Path) -> tuple:
    """(n_atoms, Z_flat, R_flat, index, raw) of one qm9pack CSV file."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise FormatError(f"{where(path, 1)}empty file, expected qm9pack's CSV header") from None
        need = ("Index", "N_atoms", "Elements", "XYZ_Ang", *_CSV_COLUMNS)
        missing = [c for c in need if c not in header]
        if missing:
            raise FormatError(f"{where(path, 1)}missing columns {missing}, expected qm9pack's CSV header")
        ci = {c: header.index(c) for c in need}
        width = len(header)
        i_idx, i_n, i_el, i_xyz = ci["Index"], ci["N_atoms"], ci["Elements"], ci["XYZ_Ang"]
        i_raw = [ci[c] for c in _CSV_COLUMNS]
        index, n_atoms, elements, xyz, raw, line_of = [], [], [], [], [], []
        for row in reader:
            if len(row) != width:
                if not row:
                    continue
                raise FormatError(f"{where(path, reader.line_num)}{len(row)} columns, expected {width}")
            line_of.append(reader.line_num)
            index.append(row[i_idx])
            n_atoms.append(row[i_n])
            elements.append(row[i_el])
            xyz.append(row[i_xyz])
            raw.append([row[i] for i in i_raw])
    M = len(index)
    if M == 0:
        raise FormatError(f"{where(path, 2)}no molecules, expected qm9pack's QM9 rows")

    def to_array(values, dtype, what):
        try:
            return np.array(values, dtype=dtype)
        except ValueError:
            for k, v in enumerate(values):
                for t in (v if isinstance(v, list) else [v]):
                    try:
                        dtype(t)
                    except ValueError:
                        raise FormatError(f"{where(path, line_of[k])}bad {what} {t!r}, expected a number") from None
            raise

    index = to_array(index, np.int64, "Index")
    n_atoms = to_array(n_atoms, np.int64, "N_atoms")
    raw = to_array(raw, np.float64, "property")
    if raw.shape != (M, len(_CSV_COLUMNS)):
        raise FormatError(f"{path}: property table of shape {raw.shape}, expected ({M}, {len(_CSV_COLUMNS)})")
    # elements: one big join, one split, one dict lookup per atom
    symbols = ",".join(elements).translate(_STRIP_ELEMENTS).split(",")
    n_el = np.array([e.count(",") + 1 for e in elements])
    bad = np.flatnonzero(n_el != n_atoms)
    if bad.size:
        k = int(bad[0])
        raise FormatError(f"{where(path, line_of[k])}{n_el[k]} elements for N_atoms={n_atoms[k]}")
    try:
        Z_flat = np.array([_QM9_SYMBOLS[s] for s in symbols], dtype=np.uint8)
    except KeyError:
        k = int(np.searchsorted(np.cumsum(n_el), next(i for i, s in enumerate(symbols) if s not in _QM9_SYMBOLS),
                                side="right"))
        sym = next(s for s in symbols if s not in _QM9_SYMBOLS)
        raise ElementError(f"{where(path, line_of[k])}unknown element {sym!r}, expected one of H, C, N, O, F") from None
    # positions: strip the brackets, parse every number at once
    n_num = np.array([s.count(",") + 1 for s in xyz])
    bad = np.flatnonzero(n_num != 3 * n_atoms)
    if bad.size:
        k = int(bad[0])
        raise FormatError(f"{where(path, line_of[k])}{n_num[k]} coordinates in XYZ_Ang for {n_atoms[k]} atoms, "
                          f"expected {3 * n_atoms[k]}")
    flat = ",".join(xyz).translate(_STRIP_BRACKETS)
    R_flat = None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            R_flat = np.fromstring(flat, dtype=np.float64, sep=",")
        except (ValueError, DeprecationWarning):
            pass
    if R_flat is None or R_flat.size != int(n_num.sum()):
        for k, s in enumerate(xyz):
            for t in s.translate(_STRIP_BRACKETS).split(","):
                try:
                    float(t)
                except ValueError:
                    raise FormatError(f"{where(path, line_of[k])}bad coordinate {t!r} in XYZ_Ang, "
                                      f"expected a number") from None
        raise FormatError(f"{path}: could not parse the XYZ_Ang column")
    return n_atoms, Z_flat, R_flat.reshape(-1, 3), index, raw


def convert_qm9pack(out_path, progress: bool = False, data_dir=None) -> Path:
    """Parse qm9pack's three CSV files (all 130,831 molecules) once and write the compact cache file
    `out_path` atomically (uncompressed npz):

        format_version  int                   CACHE_FORMAT_VERSION
        Z               [atoms] uint8         atomic numbers, molecule after molecule
        R               [atoms, 3] float64    positions in Å
        n_atoms         [M] uint8             atoms per molecule
        index           [M] int32             gdb id
        raw             [M, 15] float64       the 15 QM9 properties in file units (RAW_NAMES order)
        meta            JSON                  version, raw_names, source file sizes and md5s, content md5

    The arrays are validated once here (elements, finite coordinates, no overlapping atoms);
    `load_qm9` only repeats the cheap checks. `data_dir` overrides qm9pack's data folder (it must hold
    qm9_part1.csv, qm9_part2.csv, qm9_part3.csv).
    """
    t0 = time.perf_counter()
    data_dir = qm9pack_data_dir() if data_dir is None else Path(data_dir)
    parts, sources = [], {}
    for k, name in enumerate(_CSV_FILES):
        path = data_dir / name
        if not path.is_file():
            raise DataError(f"{path}: no such file, expected qm9pack's {', '.join(_CSV_FILES)}")
        if progress:
            print(f"qm9: reading {path} ({k + 1}/{len(_CSV_FILES)})", file=sys.stderr, flush=True)
        parts.append(_read_csv(path))
        sources[name] = {"size": path.stat().st_size, "md5": file_digest(path, "md5")}
    n_atoms = np.concatenate([p[0] for p in parts])
    Z_flat = np.concatenate([p[1] for p in parts])
    R_flat = np.concatenate([p[2] for p in parts])
    index = np.concatenate([p[3] for p in parts])
    raw = np.concatenate([p[4] for p in parts])
    if np.any(np.diff(index) <= 0):  # keep gdb-id order, whatever order the parts come in
        order = np.argsort(index, kind="stable")
        if np.any(np.diff(index[order]) == 0):
            raise DataError(f"{data_dir}: duplicate gdb ids in the qm9pack CSV files")
        starts = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
        atom_order = np.concatenate([np.arange(starts[m], starts[m] + n_atoms[m]) for m in order])
        n_atoms, index, raw = n_atoms[order], index[order], raw[order]
        Z_flat, R_flat = Z_flat[atom_order], R_flat[atom_order]
    if progress:
        print(f"qm9: {len(index)} molecules parsed in {time.perf_counter() - t0:.1f} s; validating",
              file=sys.stderr, flush=True)
    Z, R = _pad(n_atoms, Z_flat, R_flat)
    validate_arrays(Z, R, source=str(data_dir))
    if not np.all(np.isfinite(raw)):
        m = int(np.argwhere(~np.isfinite(raw))[0, 0])
        raise DataError(f"{data_dir}: non-finite property of gdb {int(index[m])}")
    meta = {"format_version": CACHE_FORMAT_VERSION, "raw_names": list(RAW_NAMES), "n_molecules": int(len(index)),
            "qm9pack_version": _qm9pack_version(), "source_dir": str(data_dir), "source_files": sources}
    meta["md5"] = _dataset(Z, R, raw, index, {}).md5
    out_path = Path(out_path)
    atomic_savez(out_path, format_version=np.array(CACHE_FORMAT_VERSION), Z=Z_flat.astype(np.uint8),
                 R=np.ascontiguousarray(R_flat, dtype=np.float64), n_atoms=n_atoms.astype(np.uint8),
                 index=index.astype(np.int32), raw=np.ascontiguousarray(raw), meta=np.array(json.dumps(meta)))
    if progress:
        print(f"qm9: wrote {out_path} ({out_path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr, flush=True)
    return out_path


def _read_cache(path: Path) -> Dataset:
    """Load a cache file written by convert_qm9pack, with cheap consistency checks (no geometry check:
    that was done at conversion). Any problem -> DataError telling the user to delete the file."""
    def corrupt(why):
        return DataError(f"{path}: QM9 cache file is corrupt or not a jaxqc QM9 cache ({why}); "
                         f"delete it (rm '{path}') and load again to rebuild it from qm9pack")

    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in ("format_version", "Z", "R", "n_atoms", "index", "raw", "meta")}
        meta = json.loads(str(arrays["meta"]))
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, TypeError) as err:
        raise corrupt(f"{type(err).__name__}: {err}") from None
    try:
        version = int(arrays["format_version"])
    except (TypeError, ValueError) as err:
        raise corrupt(f"format version: {err}") from None
    if version != CACHE_FORMAT_VERSION:
        raise corrupt(f"format version {version}, expected {CACHE_FORMAT_VERSION}")
    Z_flat, R_flat, n_atoms = arrays["Z"], arrays["R"], arrays["n_atoms"]
    index, raw = arrays["index"], arrays["raw"]
    M = len(n_atoms)
    if (not isinstance(meta, dict) or M == 0 or Z_flat.dtype != np.uint8 or Z_flat.ndim != 1
            or R_flat.shape != (Z_flat.size, 3) or int(n_atoms.sum(dtype=np.int64)) != Z_flat.size
            or index.shape != (M,) or raw.shape != (M, len(RAW_NAMES)) or meta.get("raw_names") != list(RAW_NAMES)
            or meta.get("n_molecules") != M or n_atoms.min() < 1):
        raise corrupt("inconsistent array shapes")
    present = np.flatnonzero(np.bincount(Z_flat, minlength=1))
    if not np.all(np.isin(present, QM9_ELEMENTS)):
        raise corrupt("atomic numbers other than H, C, N, O, F")
    if not (np.all(np.isfinite(R_flat)) and np.all(np.isfinite(raw))):
        raise corrupt("non-finite values")
    Z, R = _pad(n_atoms, Z_flat, R_flat)
    info = {"source": f"qm9pack {meta.get('qm9pack_version', '?')} ({meta.get('source_dir', '?')})",
            "format": "qm9pack", "cache": str(path), "md5": meta.get("md5"),
            "source_files": meta.get("source_files", {})}
    return _dataset(Z, R, raw, index, info)


def default_cache_path() -> Path:
    """$JAXQC_CACHE/qm9_v1.npz (see `CACHE_NAME`)."""
    return cache_dir() / CACHE_NAME


def load_qm9(cache=None, progress: bool = False) -> Dataset:
    """All 130,831 QM9 molecules (gdb-id order) as a Dataset padded to 29 atoms, props QM9_TARGETS.

    The first call converts qm9pack's CSV files (needs `pip install 'jaxqc[qm9]'`) into the cache file
    `cache` (default `$JAXQC_CACHE/qm9_v1.npz`, i.e. ~/.cache/jaxqc/qm9_v1.npz); later calls only load
    that file (qm9pack is then no longer needed). A corrupt or unreadable cache file is NOT rebuilt
    silently: it raises DataError naming the file and telling the user to delete it. The geometry
    check (validate_arrays) runs at conversion; loading repeats only cheap checks. meta["md5"] is the
    Dataset.md5 computed at conversion (equal to Dataset.md5 of the loaded arrays).
    """
    path = default_cache_path() if cache is None else Path(cache)
    if path.is_dir():
        path = path / CACHE_NAME
    if not path.exists():
        convert_qm9pack(path, progress=progress)
    return _read_cache(path)


# ---- the fixed benchmark split -------------------------------------------------------------------
# The policy lives in splits.py (the one place that decides splits); this is its historical name.
qm9_protocol_split = qm9_protocol
