"""QM9: the published xyz format (file, folder, tarball stream), the qm9pack cache, the protocol split."""
import csv
import json
import shutil
import sys
import tarfile
import time

import numpy as np
import pytest

from jaxqc import cli
from jaxqc import units as U
from jaxqc.data import io, qm9
from jaxqc.data.qm9 import (QM9_TARGETS, RAW_NAMES, convert_qm9pack, load_qm9, parse_qm9_xyz_text,
                            qm9_protocol_split, read_qm9_xyz)
from jaxqc.elements import QM9_ATOM_REF_HA
from jaxqc.errors import DataError, ElementError, FormatError, JaxqcError

from conftest import shared

HA = U.HARTREE_KCAL_MOL

# A made-up molecule in QM9's published format (not real QM9 values); one coordinate and one
# property use the Mathematica exponent `*^`.
SYNTH_RAW = {"A": 123.45, "B": 67.891, "C": 54.321, "mu": 1.2345, "alpha": 10.5, "homo": -0.25, "lumo": 0.0125,
             "gap": 0.2625, "r2": 30.5, "zpve": 0.034, "U0": -56.5, "U": -56.497, "H": -56.496, "G": -56.52,
             "Cv": 6.5}
SYNTH_Z = [7, 1, 1, 1]
SYNTH_R = [[0.1, 0.2, 0.3], [1.1, 0.2, 1.5e-6], [-0.3, 1.1, 0.3], [-0.3, -0.4, 1.1]]


def synth_text(gdb=7, n_declared=None, atoms=None, props=None):
    props = props if props is not None else [repr(SYNTH_RAW[k]) for k in RAW_NAMES]
    props = ["3.4*^-2" if k == "zpve" else v for k, v in zip(RAW_NAMES, props)] if len(props) == 15 else props
    atoms = atoms if atoms is not None else [
        "N\t 0.1\t 0.2\t 0.3\t-0.5",
        "H\t 1.1\t 0.2\t 1.5*^-6\t 0.2",
        "H\t-0.3\t 1.1\t 0.3\t 0.15",
        "H\t-0.3\t-0.4\t 1.1\t 0.15",
    ]
    n = len(atoms) if n_declared is None else n_declared
    lines = [str(n), f"gdb {gdb}\t" + "\t".join(props) + "\t", *atoms,
             "1000.0\t1500.5\t1600.25\t3300.0\t3400.0\t3500.0", "N\tN\t", "InChI=1S/H3N/h1H3\tInChI=1S/H3N/h1H3"]
    return "\n".join(lines) + "\n"


def other_text(gdb, n_h):
    """A made-up CH_n-like molecule with n_h hydrogens on a line (distinct sizes for padding tests)."""
    atoms = ["C\t0.0\t0.0\t0.0\t-0.4"] + [f"H\t{1.1 * (k + 1)}\t0.5\t-0.25\t0.1" for k in range(n_h)]
    props = [repr(v + gdb) for v in SYNTH_RAW.values()]
    return synth_text(gdb=gdb, atoms=atoms, props=props)


# ---- the published xyz format ------------------------------------------------------------------
def test_parse_synthetic_file_exact_values_and_units(tmp_path):
    path = tmp_path / "dsgdb9nsd_000007.xyz"
    path.write_text(synth_text())
    assert qm9.looks_like_qm9_xyz(path)
    Z, R, props = parse_qm9_xyz_text(path.read_text(), path)
    np.testing.assert_array_equal(Z, SYNTH_Z)
    np.testing.assert_array_equal(R, SYNTH_R)  # exact, `1.5*^-6` included
    assert props["index"] == 7 and isinstance(props["index"], int)
    assert set(props) == set(QM9_TARGETS) | {"index"}
    for k in ("U0", "U", "H", "G"):
        assert props[k] == pytest.approx(SYNTH_RAW[k] * HA, rel=1e-14)
        ref = QM9_ATOM_REF_HA[k][7] + 3 * QM9_ATOM_REF_HA[k][1]
        assert props[f"{k}_atom"] == pytest.approx((SYNTH_RAW[k] - ref) * HA, rel=1e-10)
    assert props["HOMO"] == pytest.approx(-0.25 * HA, rel=1e-14)
    assert props["LUMO"] == pytest.approx(0.0125 * HA, rel=1e-14)
    assert props["gap"] == pytest.approx(0.2625 * HA, rel=1e-14)
    assert props["ZPVE"] == pytest.approx(3.4e-2 * HA, rel=1e-14)  # `3.4*^-2` in Ha
    for k, raw in (("mu", "mu"), ("alpha", "alpha"), ("R2", "r2"), ("Cv", "Cv"), ("A", "A"), ("B", "B"), ("C", "C")):
        assert props[k] == SYNTH_RAW[raw]

    data = io.read(path)  # dispatches to read_qm9_xyz
    assert len(data) == 1 and data.meta["name"] == "qm9" and data.meta["theory"] == "B3LYP/6-31G(2df,p)"
    assert data.meta["source"] == str(path)
    np.testing.assert_array_equal(data.Z[0], SYNTH_Z)
    np.testing.assert_array_equal(data.R[0], SYNTH_R)
    for k in QM9_TARGETS:
        assert data.props[k][0] == props[k]
        assert data.units[k] == QM9_TARGETS[k]
    assert data.props["index"].dtype.kind == "i" and data.props["index"][0] == 7


def test_targets_and_units_table():
    assert list(QM9_TARGETS) == ["U0", "U", "H", "G", "U0_atom", "U_atom", "H_atom", "G_atom", "HOMO", "LUMO",
                                 "gap", "ZPVE", "mu", "alpha", "R2", "Cv", "A", "B", "C"]
    assert all(QM9_TARGETS[k] == "kcal/mol" for k in list(QM9_TARGETS)[:12])
    assert (QM9_TARGETS["mu"], QM9_TARGETS["alpha"], QM9_TARGETS["R2"], QM9_TARGETS["Cv"], QM9_TARGETS["A"]) == (
        "D", "bohr^3", "bohr^2", "cal/mol/K", "GHz")


def _write_folder(folder):
    folder.mkdir()
    texts = {7: synth_text(), 12: other_text(12, 4), 3: other_text(3, 2), 120: other_text(120, 6)}
    for gdb, text in texts.items():
        (folder / f"dsgdb9nsd_{gdb:06d}.xyz").write_text(text)
    (folder / "README.txt").write_text("not a molecule")
    return folder


def test_folder_and_tarball_stream_give_the_same_dataset(tmp_path, monkeypatch):
    folder = _write_folder(tmp_path / "qm9")
    tarball = tmp_path / "dsgdb9nsd.xyz.tar.bz2"
    with tarfile.open(tarball, "w:bz2") as tar:
        for f in sorted(folder.iterdir(), reverse=True):  # archive order differs from name order
            tar.add(f, arcname=f.name)

    a = read_qm9_xyz(folder)

    def no_extract(*args, **kw):
        raise AssertionError("the tarball must be read as a stream, not extracted")
    monkeypatch.setattr(tarfile.TarFile, "extractall", no_extract)
    monkeypatch.setattr(tarfile.TarFile, "extract", no_extract)
    b = io.read(tarball)

    assert len(a) == 4 and a.max_atoms == 7
    np.testing.assert_array_equal(a.props["index"], [3, 7, 12, 120])  # sorted by file name
    np.testing.assert_array_equal(a.n_atoms, [3, 4, 5, 7])
    np.testing.assert_array_equal(a.Z, b.Z)
    np.testing.assert_array_equal(a.R, b.R)
    assert a.props.keys() == b.props.keys()
    for k in a.props:
        np.testing.assert_array_equal(a.props[k], b.props[k])
    assert a.md5 == b.md5
    assert a.meta["format"] == "qm9-xyz-folder" and b.meta["format"] == "qm9-xyz-tar"
    # padding atoms are Z = 0 at the origin
    assert np.all(a.Z[0, 3:] == 0) and np.all(a.R[0, 3:] == 0)


def _bad_cases():
    good = synth_text().splitlines()
    unknown = good.copy()
    unknown[4] = unknown[4].replace("H", "Qq", 1)
    not_qm9 = good.copy()
    not_qm9[4] = not_qm9[4].replace("H", "S", 1)
    bad_number = good.copy()
    bad_number[3] = bad_number[3].replace("0.2", "0.2x", 1)
    few_props = good.copy()
    few_props[1] = "\t".join(few_props[1].split("\t")[:10])
    bad_prop = good.copy()
    bad_prop[1] = bad_prop[1].replace("-0.25", "-0,25")
    return {
        # declared 5 atoms, 4 present: line 7 (the frequency line) is read as atom 5
        "too_many_declared": (synth_text(n_declared=5), FormatError, 7, "declared on line 1"),
        # declared 3 atoms, 4 present: line 6 (the 4th atom) is not the frequency line
        "too_few_declared": (synth_text(n_declared=3), FormatError, 6, "wrong atom count"),
        "bad_count": ("four\n" + "\n".join(good[1:]), FormatError, 1, "atom count"),
        "bad_coordinate": ("\n".join(bad_number), FormatError, 4, "0.2x"),
        "bad_property": ("\n".join(bad_prop), FormatError, 2, "-0,25"),
        "few_properties": ("\n".join(few_props), FormatError, 2, "expected 15"),
        "unknown_element": ("\n".join(unknown), ElementError, 5, "unknown element 'Qq'"),
        "element_not_in_qm9": ("\n".join(not_qm9), ElementError, 5, "not in QM9"),
        "truncated": ("\n".join(good[:5]), FormatError, 6, "declared on line 1"),
    }


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_malformed_files_name_file_and_line(tmp_path, case):
    text, err, line, what = _bad_cases()[case]
    path = tmp_path / f"dsgdb9nsd_{case}.xyz"
    path.write_text(text)
    with pytest.raises(err) as info:
        read_qm9_xyz(path)
    msg = str(info.value)
    assert isinstance(info.value, DataError)
    assert f"{path}:{line}:" in msg, msg
    assert what in msg, msg
    assert "\n" not in msg


def test_malformed_tar_member_names_member_and_line(tmp_path):
    folder = _write_folder(tmp_path / "qm9")
    (folder / "dsgdb9nsd_000099.xyz").write_text(synth_text(n_declared=5))
    tarball = tmp_path / "bad.tar.bz2"
    with tarfile.open(tarball, "w:bz2") as tar:
        tar.add(folder, arcname="qm9")
    with pytest.raises(FormatError, match=r"bad\.tar\.bz2\[qm9/dsgdb9nsd_000099\.xyz\]:7:"):
        read_qm9_xyz(tarball)


def test_empty_folder_and_not_qm9(tmp_path):
    with pytest.raises(DataError, match="no \\*.xyz files"):
        read_qm9_xyz(tmp_path)
    plain = tmp_path / "water.xyz"
    plain.write_text("3\nwater\nO 0 0 0\nH 0.96 0 0\nH 0 0.96 0\n")
    assert not qm9.looks_like_qm9_xyz(plain)
    assert not qm9.looks_like_qm9_xyz(tmp_path / "missing.xyz")


# ---- qm9pack -> cache ------------------------------------------------------------------------------
def _qm9pack_dir():
    try:
        return qm9.qm9pack_data_dir()
    except JaxqcError as err:
        pytest.skip(f"qm9pack not installed ({err})")


@pytest.fixture(scope="module")
def small_qm9pack(tmp_path_factory):
    """qm9pack's first 30 rows (gdb 1..30) split over three CSV files, and its cache."""
    src = _qm9pack_dir()
    out = tmp_path_factory.mktemp("qm9pack_small")
    with open(src / "qm9_part1.csv", newline="") as fh:
        lines = [next(fh) for _ in range(31)]
    for name, rows in zip(("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"), (lines[1:11], lines[11:21], lines[21:])):
        (out / name).write_text(lines[0] + "".join(rows))
    cache = convert_qm9pack(out / "qm9_small.npz", data_dir=out)
    return out, cache


def test_real_qm9_xyz_files_match_qm9pack(small_qm9pack):
    folder = shared("qm9_xyz")
    files = sorted(folder.glob("dsgdb9nsd_*.xyz"))
    assert len(files) == 20
    x = read_qm9_xyz(folder)
    p = load_qm9(cache=small_qm9pack[1])
    ids = x.props["index"]
    np.testing.assert_array_equal(ids, [int(f.stem.split("_")[1]) for f in files])
    rows = np.searchsorted(p.props["index"], ids)
    np.testing.assert_array_equal(p.props["index"][rows], ids)
    p = p.subset(rows)
    np.testing.assert_array_equal(x.Z, p.Z[:, :x.max_atoms])
    assert np.all(p.Z[:, x.max_atoms:] == 0)
    np.testing.assert_allclose(x.R, p.R[:, :x.max_atoms], rtol=0, atol=1e-8)
    for k in QM9_TARGETS:  # printed with >= 4 significant digits in both sources
        np.testing.assert_allclose(x.props[k], p.props[k], rtol=1e-9, atol=1e-9, err_msg=k)


def _data_offset(path, member: str) -> int:
    """Byte offset of a zip member's stored data (after its local header)."""
    import struct
    import zipfile

    info = zipfile.ZipFile(path).getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        header = f.read(30)
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def test_cache_roundtrip_and_corrupt_cache_errors(small_qm9pack, tmp_path):
    _, cache = small_qm9pack
    a, b = load_qm9(cache=cache), load_qm9(cache=cache)
    assert len(a) == 30 and a.meta["name"] == "qm9" and a.meta["theory"] == "B3LYP/6-31G(2df,p)"
    assert a.md5 == b.md5 == a.meta["md5"]
    np.testing.assert_array_equal(a.props["index"], np.arange(1, 31))
    meta = json.loads(str(np.load(cache)["meta"]))
    assert meta["format_version"] == qm9.CACHE_FORMAT_VERSION
    assert set(meta["source_files"]) == {"qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"}

    blob = cache.read_bytes()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(blob[: len(blob) // 2])
    flipped = tmp_path / "flipped.npz"
    mid = bytearray(blob)
    mid[_data_offset(cache, "R.npy") + 1000] ^= 0xFF  # a byte of the coordinates (the middle of the file may
    mid = bytes(mid)                                 # be a zip header field that no reader looks at)
    flipped.write_bytes(mid)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    for bad in (truncated, flipped, garbage):
        with pytest.raises(DataError, match="corrupt") as info:
            load_qm9(cache=bad)
        msg = str(info.value)
        assert str(bad) in msg and "delete it" in msg and "\n" not in msg
        assert bad.read_bytes() != blob  # not silently rebuilt


def test_csv_parts_in_any_order_give_gdb_order(small_qm9pack, tmp_path):
    src, cache = small_qm9pack
    for a, b in (("qm9_part1.csv", "qm9_part3.csv"), ("qm9_part2.csv", "qm9_part2.csv"),
                 ("qm9_part3.csv", "qm9_part1.csv")):
        shutil.copy(src / a, tmp_path / b)
    swapped = load_qm9(cache=convert_qm9pack(tmp_path / "swapped.npz", data_dir=tmp_path))
    ref = load_qm9(cache=cache)
    np.testing.assert_array_equal(swapped.props["index"], np.arange(1, 31))
    assert swapped.md5 == ref.md5


def test_missing_qm9pack_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "qm9pack", None)  # find_spec("qm9pack") -> None
    with pytest.raises(JaxqcError, match=r"pip install 'jaxqc\[qm9\]'"):
        load_qm9(cache=tmp_path / "qm9_v1.npz")
    assert not (tmp_path / "qm9_v1.npz").exists()


def test_bad_csv_names_file_and_line(small_qm9pack, tmp_path):
    src, _ = small_qm9pack
    for name in ("qm9_part1.csv", "qm9_part2.csv", "qm9_part3.csv"):
        shutil.copy(src / name, tmp_path / name)
    part2 = (tmp_path / "qm9_part2.csv").read_text().splitlines(keepends=True)
    part2[3] = part2[3].replace("'C'", "'Qq'", 1).replace("'N'", "'Qq'", 1).replace("'O'", "'Qq'", 1)
    (tmp_path / "qm9_part2.csv").write_text("".join(part2))
    with pytest.raises(ElementError, match=r"qm9_part2\.csv:4: unknown element 'Qq'"):
        convert_qm9pack(tmp_path / "out.npz", data_dir=tmp_path)
    assert not (tmp_path / "out.npz").exists()


# ---- the full QM9 (one conversion, ~10 s here) ------------------------------------------------------
@pytest.fixture(scope="module")
def full_qm9(qm9_full_cache):
    return qm9_full_cache


def test_full_qm9(full_qm9):
    cache_dir, data, _ = full_qm9
    assert len(data) == 130_831
    assert data.elements == ["H", "C", "N", "O", "F"]
    assert data.max_atoms == 29 and data.n_atoms.max() == 29 and data.n_atoms.min() == 3
    assert data.Z.shape == (130_831, 29) and data.R.shape == (130_831, 29, 3)
    assert set(data.props) == set(QM9_TARGETS) | {"index"}
    assert all(np.all(np.isfinite(data.props[k])) for k in QM9_TARGETS)
    assert data.md5 == data.meta["md5"]
    ids = data.props["index"]
    assert ids[0] == 1 and ids[-1] == 133_885 and np.all(np.diff(ids) > 0)
    # methane (gdb 1): U0_atom from the CSV's own numbers, and a sanity range
    with open(qm9.qm9pack_data_dir() / "qm9_part1.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        row = next(reader)
    assert row["Index"] == "1" and row["Elements"] == "['C','H','H','H','H']"
    ref = QM9_ATOM_REF_HA["U0"][6] + 4 * QM9_ATOM_REF_HA["U0"][1]
    expected = (float(row["InternalEnergy_0K_au"]) - ref) * HA
    assert data.props["U0_atom"][0] == pytest.approx(expected, abs=1e-8)
    assert -420 < data.props["U0_atom"][0] < -370
    np.testing.assert_array_equal(data.Z[0, :5], [6, 1, 1, 1, 1])
    assert data.props["U0"][0] == pytest.approx(float(row["InternalEnergy_0K_au"]) * HA, rel=1e-14)
    # atomization energies are negative and total energies far more so
    assert np.all(data.props["U0_atom"] < 0) and np.all(data.props["U0"] < data.props["U0_atom"])


def test_full_qm9_cached_load_is_identical(full_qm9, monkeypatch, capsys):
    cache_dir, data, _ = full_qm9
    cache = cache_dir / qm9.CACHE_NAME
    mtime = cache.stat().st_mtime_ns
    monkeypatch.setenv("JAXQC_CACHE", str(cache_dir))
    t0 = time.perf_counter()
    again = load_qm9()  # default location: $JAXQC_CACHE/qm9_v1.npz
    seconds = time.perf_counter() - t0
    assert cache.stat().st_mtime_ns == mtime  # loaded, not converted again
    assert seconds < 5, seconds
    np.testing.assert_array_equal(again.Z, data.Z)
    np.testing.assert_array_equal(again.R, data.R)
    for k in data.props:
        np.testing.assert_array_equal(again.props[k], data.props[k])
    assert cli.main(["data", "info", "qm9", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_molecules"] == 130_831 and summary["n_atoms"] == {"min": 3, "max": 29}
    assert summary["theory"] == "B3LYP/6-31G(2df,p)" and summary["md5"] == data.meta["md5"]


def test_full_qm9_corrupt_cache(full_qm9, tmp_path):
    cache_dir, _, _ = full_qm9
    blob = (cache_dir / qm9.CACHE_NAME).read_bytes()
    bad = tmp_path / qm9.CACHE_NAME
    bad.write_bytes(blob[: len(blob) - 1000])
    with pytest.raises(DataError, match="corrupt.*delete it"):
        load_qm9(cache=tmp_path)  # a folder means <folder>/qm9_v1.npz


# ---- the protocol split --------------------------------------------------------------------------
def test_protocol_split_sizes_disjoint_deterministic():
    s = qm9_protocol_split()
    assert [len(s[k]) for k in ("test", "valid", "train")] == [10_000, 2_000, 118_831]
    all_idx = np.concatenate([s["test"], s["valid"], s["train"]])
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(130_831))  # disjoint and complete
    again = qm9_protocol_split()
    for k in s:
        np.testing.assert_array_equal(s[k], again[k])
    # pinned: the protocol must not change with numpy versions
    np.testing.assert_array_equal(s["test"][:5], [2275, 111633, 104936, 64628, 76262])
    perm = np.random.default_rng(0).permutation(130_831)
    np.testing.assert_array_equal(all_idx, perm)


def test_protocol_split_train_prefixes_are_nested():
    s = qm9_protocol_split()
    train = s["train"]
    assert np.any(np.diff(train) < 0)  # permutation order, not sorted
    sizes = [100, 1000, 10_000, 100_000]
    for small, big in zip(sizes, sizes[1:]):
        assert set(train[:small]) <= set(train[:big])
    # the prefixes are random subsets: their mean index is near the middle
    assert abs(train[:10_000].mean() - 130_831 / 2) < 2_000
    # a different seed gives a different split; small n works
    assert not np.array_equal(qm9_protocol_split(seed=1)["test"], s["test"])
    t = qm9_protocol_split(n=100, n_test=10, n_valid=5)
    assert [len(t[k]) for k in ("test", "valid", "train")] == [10, 5, 85]
    with pytest.raises(DataError, match="need more than"):
        qm9_protocol_split(n=100, n_test=90, n_valid=20)
