"""Nothing silently wrong (issue 20): bad input data get a one-line error and exit 2 at read time, before
anything is trained or written; large structures are checked in O(atoms) memory; downloads are https only.

Every test here reproduces an item of the issue that failed at commit 5019556 (the item is in its name).
"""
import io as pyio
import json
import tracemalloc

import numpy as np
import pytest
from conftest import shared
from helpers import ETHANOL_R, ETHANOL_Z, ethanol_frames

from jaxqc import units as U
from jaxqc.cli import main
from jaxqc.data import download, io
from jaxqc.data.molecules import DENSE_MAX_ATOMS, closest_pair, validate_arrays
from jaxqc.data.splits import for_network
from jaxqc.errors import DataError


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *expect, progress=False):
    """Exit 2, one line on stderr that starts with 'jaxqc: error:' and contains every `expect` (after the
    progress lines of a download when `progress`)."""
    assert code == 2, err
    assert "Traceback" not in err
    if progress:
        err = err.splitlines(keepends=True)[-1]
    assert err.count("\n") == 1 and err.startswith("jaxqc: error: "), err
    for e in expect:
        assert e in err, err


def sgdml_npz(path, **override):
    """An sGDML npz of 4 ethanol frames (R Å, z, E (n, 1) kcal/mol, F kcal/mol/Å), some arrays replaced."""
    d = ethanol_frames(4)
    arrays = {"R": d.R, "z": d.Z[0], "E": d.E[:, None], "F": d.F, **override}
    np.savez(path, **arrays)
    return path


# ---- item 1: Z = 0 is padding, never an atom of a file -------------------------------------------------
@pytest.mark.parametrize("atom,value", [(0, 0), (3, 0), (8, 0), (2, -1)])
def test_item1_zero_or_negative_atomic_number_refused(tmp_path, capsys, atom, value):
    z = ETHANOL_Z.copy()
    z[atom] = value
    path = sgdml_npz(tmp_path / "z.npz", z=z)
    code, out, err = run(capsys, "data", "info", path)
    assert_one_line_error(code, err, str(path), f"atom {atom} ", f"atomic number {value}")
    assert out == ""  # not "8 atoms" for a 9-atom molecule
    code, _, err = run(capsys, "data", "convert", path, tmp_path / "out.extxyz")
    assert_one_line_error(code, err, str(path), f"atom {atom} ")
    assert not (tmp_path / "out.extxyz").exists()


@pytest.mark.parametrize("atom", [1, 2])
def test_item1_zero_atomic_number_in_extxyz(tmp_path, capsys, atom):
    """An extended XYZ `Z` column (ASE takes the atomic numbers from it) with a 0, and a plain XYZ 'X'."""
    z = [6, 8, 1]
    z[atom] = 0
    rows = [f"{s} {x} 0 0 {n}" for s, x, n in zip(("C", "O", "H"), (0.0, 1.2, -1.0), z)]
    path = tmp_path / "z.extxyz"
    path.write_text("3\nProperties=species:S:1:pos:R:3:Z:I:1 energy=-1.0\n" + "\n".join(rows) + "\n")
    code, out, err = run(capsys, "data", "info", path)
    assert_one_line_error(code, err, str(path), f"atom {atom} ", "atomic number 0")
    path = tmp_path / "x.xyz"
    path.write_text("2\n\nC 0 0 0\nX 1.2 0 0\n")
    code, out, err = run(capsys, "data", "info", path)
    assert_one_line_error(code, err, f"{path}:4:", "'X'")


def test_item1_zero_before_a_real_atom_in_per_frame_z(tmp_path, capsys):
    """jaxqc's own mixed-molecule npz has z [frames, atoms] padded with trailing zeros (still read); a 0 with
    real atoms after it is a dropped atom and refused, naming the molecule and the atom."""
    d = ethanol_frames(3)
    Z = np.tile(ETHANOL_Z, (3, 1))
    Z[2, 8] = 0  # trailing: molecule 2 has 8 atoms (padding)
    np.savez(tmp_path / "ok.npz", R=d.R, z=Z, E=d.E, F=d.F)
    assert io.read(tmp_path / "ok.npz").n_atoms.tolist() == [9, 9, 8]
    Z[1, 4] = 0
    np.savez(tmp_path / "hole.npz", R=d.R, z=Z, E=d.E, F=d.F)
    code, _, err = run(capsys, "data", "info", tmp_path / "hole.npz")
    assert_one_line_error(code, err, "hole.npz", "atom 4 of molecule 1", "atomic number 0")


# ---- item 5: unit plausibility -------------------------------------------------------------------------
def write_extxyz_mev(path, n=6):
    """Ethanol frames as extended XYZ with energies in meV and forces in meV/Å (not ASE's eV); read in
    meV, the forces have an RMS of ~20 kcal/mol/Å."""
    from jaxqc.data.molecules import Dataset

    d = ethanol_frames(n)
    io.write_extxyz(Dataset(Z=d.Z, R=d.R, E=d.E * 1e3, F=d.F * 20e3), path)  # it writes value / EV_KCAL_MOL
    return path


def test_item5_mev_file_read_as_ev_is_refused_with_the_fix(tmp_path, capsys):
    path = tmp_path / "mev.extxyz"
    write_extxyz_mev(path)
    code, out, err = run(capsys, "data", "info", path)
    assert_one_line_error(code, err, str(path), "kcal/mol/Å", "--energy-unit meV", "--no-unit-check")
    assert out == ""
    code, out, _ = run(capsys, "data", "info", path, "--energy-unit", "meV", "--json")
    assert code == 0 and 5 < json.loads(out)["statistics"]["F"]["rms"] < 50
    code, out, _ = run(capsys, "data", "info", path, "--no-unit-check", "--json")  # the explicit opt-out
    assert code == 0 and json.loads(out)["statistics"]["F"]["rms"] > 1000
    code, _, err = run(capsys, "data", "convert", path, tmp_path / "out.npz")
    assert_one_line_error(code, err, "--energy-unit meV")
    assert not (tmp_path / "out.npz").exists()


def test_item5_energy_spread_without_forces(tmp_path, capsys):
    """Energies only (no forces): one molecule's frames spreading by ~1000x what geometries can -> refused."""
    d = ethanol_frames(8)
    path = tmp_path / "e.npz"
    np.savez(path, R=d.R, z=ETHANOL_Z, E=d.E / U.EV_KCAL_MOL * 1e3, e_unit=np.array("eV"))  # meV
    code, _, err = run(capsys, "data", "info", path)
    assert_one_line_error(code, err, "energies", "per atom", "--energy-unit meV")
    code, _, _ = run(capsys, "data", "info", path, "--energy-unit", "meV")
    assert code == 0


def test_item5_train_and_evaluate_take_the_unit_flags(tmp_path, capsys):
    path = tmp_path / "mev.extxyz"
    write_extxyz_mev(path, n=8)
    code, _, err = run(capsys, "train", "krr", "--data", path, "--n-train", 4, "--n-valid", 2, "--out", tmp_path / "m.npz")
    assert_one_line_error(code, err, "--energy-unit meV")
    assert not (tmp_path / "m.npz").exists()
    code, _, err = run(capsys, "train", "krr", "--data", path, "--energy-unit", "meV", "--n-train", 4, "--n-valid", 2,
                       "--out", tmp_path / "m.npz")
    assert code == 0, err
    code, out, err = run(capsys, "evaluate", tmp_path / "m.npz", "--data", path, "--split", "all")
    assert_one_line_error(code, err, "--energy-unit meV")
    code, out, err = run(capsys, "evaluate", tmp_path / "m.npz", "--data", path, "--energy-unit", "meV",
                         "--split", "all", "--json")
    assert code == 0 and json.loads(out)["n"] == 8, err


def test_item5_real_data_passes_the_unit_check():
    """Every real file in ../shared/data (in the units its README gives) and the built-in ethanol-xtb."""
    root = shared()
    cases = [(p, {}) for p in sorted((root / "rmd17").glob("*.npz")) + sorted((root / "md17").glob("*.npz"))]
    cases += [(root / "extxyz" / "rmd17_ethanol_train_01_eV.extxyz", {}),
              (root / "extxyz" / "rmd17_aspirin_train_04_meV.extxyz", {"energy_unit": "meV"}),
              (root / "qm9_xyz", {}), ("ethanol-xtb", {})]
    for source, units in cases:
        data = io.read(source, **units)
        if data.F is not None:
            assert 5 < data.statistics()["F"]["rms"] < 100, source
    with pytest.raises(DataError, match="--energy-unit meV"):  # the case: 29,333 kcal/mol/Å
        io.read(root / "extxyz" / "rmd17_aspirin_train_04_meV.extxyz")


# ---- item 12: a QM9 KRR model on QM9 xyz files, --split all ------------------------------------------------
QM9_PROPS = ("A", "B", "C", "mu", "alpha", "homo", "lumo", "gap", "r2", "zpve", "U0", "U", "H", "G", "Cv")
FREE_ATOM_HA = {"H": -0.5, "C": -37.8, "N": -54.6, "O": -75.1}


def qm9_molecule(k: int, n_heavy: int, n_h: int):
    """(symbols, positions Å) of a made-up molecule: a heavy-atom chain (1.5 Å) with hydrogens at 1.1 Å."""
    heavy = [("C", "N", "O")[(k + i) % 3] for i in range(n_heavy)]
    R = [[1.5 * i, 0.0, 0.0] for i in range(n_heavy)]
    for j in range(n_h):
        angle = 2 * np.pi * (j // n_heavy) / max(1, -(-n_h // n_heavy)) + 0.3 * k
        R.append([1.5 * (j % n_heavy), 1.1 * np.cos(angle), 1.1 * np.sin(angle)])
    return heavy + ["H"] * n_h, np.asarray(R)


def write_qm9_xyz(folder, gdb: int, symbols, R):
    """One file in QM9's published format (dsgdb9nsd_NNNNNN.xyz), U0 etc. in Hartree."""
    u0 = sum(FREE_ATOM_HA[s] for s in symbols) - 0.1 * len(symbols) - 0.001 * gdb
    values = {p: 1.0 + 0.1 * gdb for p in QM9_PROPS}
    values.update(U0=u0, U=u0 + 0.001, H=u0 + 0.002, G=u0 - 0.02, homo=-0.25, lumo=0.01, gap=0.26)
    lines = [str(len(symbols)), f"gdb {gdb}\t" + "\t".join(repr(values[p]) for p in QM9_PROPS) + "\t"]
    lines += [f"{s}\t{x:.6f}\t{y:.6f}\t{z:.6f}\t0.0" for s, (x, y, z) in zip(symbols, R)]
    lines += ["1000.0\t2000.0", "C\tC", "InChI=1S/x\tInChI=1S/x"]
    folder.mkdir(exist_ok=True)
    (folder / f"dsgdb9nsd_{gdb:06d}.xyz").write_text("\n".join(lines) + "\n")


def test_item12_qm9_krr_model_on_new_qm9_xyz_files_split_all(tmp_path, capsys):
    """Trained on molecules of up to 9 atoms, evaluated on an xyz folder of smaller molecules with --split all:
    at 5019556 'scan got values with different leading axis sizes' (a traceback); now it predicts."""
    for k in range(12):
        write_qm9_xyz(tmp_path / "train", k + 1, *qm9_molecule(k, 1 + k % 3, 1 + k % 7))
    for k in range(4):
        write_qm9_xyz(tmp_path / "new", 100 + k, *qm9_molecule(k, 1 + k % 2, 1 + k))
    for rep in ("cm", "bob"):
        model = tmp_path / f"krr_{rep}.npz"
        code, _, err = run(capsys, "train", "krr", "--data", tmp_path / "train", "--representation", rep,
                           "--n-train", 6, "--n-valid", 2, "--out", model)
        assert code == 0, err
        code, out, err = run(capsys, "evaluate", model, "--data", tmp_path / "new", "--split", "all", "--json")
        assert code == 0, err
        result = json.loads(out)
        assert result["n"] == 4 and np.isfinite(result["U0"]["mae"])
    # a molecule larger than any the sorted-CM model was trained on: a one-line error, not a traceback
    write_qm9_xyz(tmp_path / "big", 500, *qm9_molecule(0, 3, 9))
    code, _, err = run(capsys, "evaluate", tmp_path / "krr_cm.npz", "--data", tmp_path / "big", "--split", "all")
    assert_one_line_error(code, err, "12 atoms")


# ---- item 13: empty and non-numeric npz arrays ----------------------------------------------------------
def bad_npz(tmp_path, case):
    d = ethanol_frames(4)
    path = tmp_path / f"{case}.npz"
    if case == "no_frames":
        return sgdml_npz(path, R=d.R[:0], E=d.E[:0, None], F=d.F[:0]), "no frames"
    if case == "no_atoms":
        return sgdml_npz(path, R=d.R[:, :0], z=ETHANOL_Z[:0], F=d.F[:, :0]), "no atoms"
    if case == "string_R":
        return sgdml_npz(path, R=d.R.astype(str)), "'R' holds text"
    if case == "string_z":
        return sgdml_npz(path, z=np.array(["C", "C", "O"] + ["H"] * 6)), "'z' are text"
    if case == "string_E":
        return sgdml_npz(path, E=np.array(["x"] * 4)), "'E' holds text"
    if case == "object_R":
        ragged = np.empty(4, dtype=object)
        ragged[:] = [d.R[k, : 9 - k] for k in range(4)]
        return sgdml_npz(path, R=ragged), "'R' holds Python objects"
    raise ValueError(case)


BAD_NPZ = ["no_frames", "no_atoms", "string_R", "string_z", "string_E", "object_R"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny KRR energy model of ethanol frames (for `evaluate` on bad data)."""
    folder = tmp_path_factory.mktemp("model")
    io.write_npz(ethanol_frames(8), folder / "eth.npz")
    assert main(["train", "krr", "--data", str(folder / "eth.npz"), "--n-train", "4", "--n-valid", "2",
                 "--out", str(folder / "m.npz")]) == 0
    return folder / "m.npz"


@pytest.mark.parametrize("case", BAD_NPZ)
def test_item13_empty_and_non_numeric_npz_info_and_train(tmp_path, capsys, case):
    path, expect = bad_npz(tmp_path, case)
    code, out, err = run(capsys, "data", "info", path)
    assert_one_line_error(code, err, str(path), expect)
    code, _, err = run(capsys, "train", "gdml", "--data", path, "--n-train", 2, "--out", tmp_path / "m.npz")
    assert_one_line_error(code, err, str(path), expect)
    assert not (tmp_path / "m.npz").exists()


@pytest.mark.parametrize("case", BAD_NPZ)
def test_item13_empty_and_non_numeric_npz_evaluate(tmp_path, capsys, tiny_model, case):
    path, expect = bad_npz(tmp_path, case)
    code, _, err = run(capsys, "evaluate", tiny_model, "--data", path, "--split", "all")
    assert_one_line_error(code, err, str(path), expect)


# ---- item 14: elements beyond a network's embedding table -----------------------------------------------
@pytest.mark.parametrize("where", ["train", "valid"])
def test_item14_element_beyond_the_embedding_table(tmp_path, capsys, where):
    d = ethanol_frames(8)
    split = for_network(d, 4, 2, 0)
    Z = np.tile(ETHANOL_Z, (8, 1))
    Z[split[where][0], 0] = 105  # dubnium, in one training or one validation frame
    np.savez(tmp_path / "db.npz", R=d.R, z=Z, E=d.E, F=d.F)
    out = tmp_path / "run"
    code, _, err = run(capsys, "train", "schnet", "--data", tmp_path / "db.npz", "--n-train", 4, "--n-valid", 2,
                       "--epochs", 1, "--features", 8, "--interactions", 1, "--out", out)
    assert_one_line_error(code, err, "Db (Z=105)", "embedding")
    assert not (out / "model.npz").exists() and not (out / "checkpoint.npz").exists()


# ---- item 17: the overlapping-atoms check in O(atoms) memory per frame -------------------------------------
def jittered_grid(n_frames, n_atoms, seed=0, spacing=1.5):
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms] * spacing
    R = grid[None] + rng.uniform(-0.1, 0.1, size=(n_frames, n_atoms, 3))
    return np.tile(rng.choice([1, 6, 8], size=n_atoms), (n_frames, 1)), R


@pytest.mark.parametrize("n_frames,n_atoms", [(300, 200), (2, 3000)])
def test_item17_overlap_check_memory(n_frames, n_atoms):
    """At 5019556 these took ~0.6 and ~0.9 GB of pair distances (frames x atoms^2); now a few MB."""
    Z, R = jittered_grid(n_frames, n_atoms)
    tracemalloc.start()
    try:
        validate_arrays(Z, R, source="grid")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MB"


@pytest.mark.parametrize("n_atoms", [20, DENSE_MAX_ATOMS + 50])
def test_item17_overlap_check_same_answer_and_message(n_atoms):
    """Both paths (all pairs for small molecules, a k-d tree for large ones) find the closest pair, also an
    exact duplicate, with the message of before."""
    Z, R = jittered_grid(5, n_atoms, seed=1)
    Z[3, n_atoms - 3:] = 0  # padding in one molecule (its positions are ignored)
    R[3, n_atoms - 3:] = R[3, 0]
    R[2, 7] = R[2, 4] + [0.05, 0, 0]
    m, i, j, d = closest_pair(Z, R)
    assert (m, sorted((i, j))) == (2, [4, 7]) and d == pytest.approx(0.05, abs=1e-9)
    R[2, 7] = R[2, 4]
    m, i, j, d = closest_pair(Z, R)
    assert (m, sorted((i, j)), d) == (2, [4, 7], 0.0)
    with pytest.raises(DataError, match=r"grid: atoms [47] and [47] of molecule 2 are 0 Å apart \(closer than 0.1 Å"):
        validate_arrays(Z, R, source="grid")


# ---- item 22: downloads over https only, checksum mismatch leaves nothing ----------------------------------
class FakeResponse(pyio.BytesIO):
    def __init__(self, payload: bytes, url: str):
        super().__init__(payload)
        self.url = url

    def geturl(self):
        return self.url


def fake_urlopen(payload: bytes, final_url=None):
    def urlopen(url, timeout=None):
        return FakeResponse(payload, final_url or url)

    return urlopen


def test_item22_no_plain_http_url():
    assert all(e["url"].startswith("https://") for e in download.SOURCES.values())


def test_item22_http_source_or_redirect_refused(tmp_path, capsys, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("an http URL was fetched")

    monkeypatch.setattr(download.urllib.request, "urlopen", never)
    monkeypatch.setitem(download.SOURCES, "plain", {"url": "http://example.org/x.npz", "filename": "x.npz",
                                                    "sha256": None, "description": "x"})
    code, _, err = run(capsys, "data", "download", "plain", "--dest", tmp_path / "dl")
    assert_one_line_error(code, err, "http://example.org/x.npz", "https")
    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen(b"data", "http://example.org/x.npz"))
    monkeypatch.setitem(download.SOURCES, "redirected", {"url": "https://example.org/x.npz", "filename": "x.npz",
                                                         "sha256": None, "description": "x"})
    code, _, err = run(capsys, "data", "download", "redirected", "--dest", tmp_path / "dl")
    assert_one_line_error(code, err, "refusing plain http", progress=True)
    assert not (tmp_path / "dl").exists() or list((tmp_path / "dl").iterdir()) == []


@pytest.mark.parametrize("pinned", [True, False])
def test_item22_checksum_mismatch_leaves_no_file(tmp_path, capsys, monkeypatch, pinned):
    payload = b"not what was published"
    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen(payload))
    monkeypatch.setitem(download.SOURCES, "pinned", {"url": "https://example.org/md17_x.npz", "filename": "md17_x.npz",
                                                     "sha256": "0" * 64 if pinned else None, "description": "x"})
    extra = [] if pinned else ["--sha256", "1" * 64]
    code, _, err = run(capsys, "data", "download", "pinned", "--dest", tmp_path / "dl", *extra)
    assert_one_line_error(code, err, "does not match", "discarded", progress=True)
    assert list((tmp_path / "dl").iterdir()) == []  # no file, no temporary, no recorded checksum


def test_item22_unpinned_download_warns_and_records(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download.urllib.request, "urlopen", fake_urlopen(b"payload"))
    monkeypatch.setitem(download.SOURCES, "free", {"url": "https://example.org/f.npz", "filename": "f.npz",
                                                   "sha256": None, "description": "x"})
    code, _, err = run(capsys, "data", "download", "free", "--dest", tmp_path / "dl")
    got = json.loads((tmp_path / "dl" / "f.npz.sha256.json").read_text())["sha256"]
    assert code == 0 and "warning" in err and "not verified" in err and got in err
