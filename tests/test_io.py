"""Readers and writers: round trips, real files (shared data), unit conversion and every bad input."""
import numpy as np
import pytest
from conftest import shared
from helpers import ETHANOL_R, ETHANOL_Z, ethanol_frames, mixed_molecules, write_xyz

from jaxqc import units as U
from jaxqc.data import io
from jaxqc.errors import DataError, ElementError, FormatError, UnitError


def test_npz_round_trip(tmp_path):
    data = ethanol_frames(7)
    path = tmp_path / "d.npz"
    io.write_npz(data, path)
    back = io.read_npz(path)
    np.testing.assert_array_equal(back.R, data.R)
    np.testing.assert_array_equal(back.E, data.E)
    np.testing.assert_array_equal(back.F, data.F)
    np.testing.assert_array_equal(back.Z, data.Z)
    assert back.md5 == data.md5
    assert back.meta["theory"] == "none"
    with np.load(path) as raw:  # sGDML layout
        assert raw["E"].shape == (7, 1) and raw["z"].shape == (9,) and str(raw["e_unit"]) == "kcal/mol"


def test_npz_round_trip_mixed_composition_and_props(tmp_path):
    data = mixed_molecules(10)
    io.write_npz(data, tmp_path / "m.npz")
    back = io.read_npz(tmp_path / "m.npz")
    np.testing.assert_array_equal(back.Z, data.Z)
    np.testing.assert_allclose(back.props["mu"], data.props["mu"])
    assert back.units["mu"] == "D" and set(back.props) == {"mu"}
    assert len(back.subset([0, 2])) == 2


def test_npz_units_are_converted(tmp_path):
    data = ethanol_frames(3)
    np.savez(tmp_path / "ev.npz", R=data.R / U.BOHR_ANG, z=ETHANOL_Z, E=data.E[:, None] / U.EV_KCAL_MOL,
             F=data.F / U.EV_KCAL_MOL * U.BOHR_ANG, r_unit="bohr", e_unit="eV")
    back = io.read_npz(tmp_path / "ev.npz")
    np.testing.assert_allclose(back.R, data.R, rtol=1e-12)
    np.testing.assert_allclose(back.E, data.E, rtol=1e-12)
    np.testing.assert_allclose(back.F, data.F, rtol=1e-12)


def test_rmd17_file():
    data = io.read(shared("rmd17", "rmd17_ethanol_train_01.npz"))
    assert len(data) == 1000 and data.max_atoms == 9
    assert data.units["E"] == "kcal/mol" and data.units["F"] == "kcal/mol/Å"
    assert data.elements == ["H", "C", "O"]
    # energies of ethanol at PBE are around -97,000 kcal/mol: a unit slip would be off by orders
    assert -98_000 < data.E.mean() < -96_000


def test_sgdml_file():
    data = io.read(shared("md17", "ethanol_ccsd_t-train.npz"))
    assert len(data) == 1000 and data.meta["theory"].startswith("Psi4: CCSD(T)")
    assert data.E.shape == (1000,) and data.F.shape == (1000, 9, 3)


@pytest.mark.parametrize("xyz,npz,unit", [
    ("rmd17_ethanol_train_01_eV.extxyz", "rmd17_ethanol_train_01.npz", "eV"),
    ("rmd17_aspirin_train_04_meV.extxyz", "rmd17_aspirin_train_04.npz", "meV"),
])
def test_extxyz_matches_npz(xyz, npz, unit):
    ref = io.read(shared("rmd17", npz))
    got = io.read(shared("extxyz", xyz), energy_unit=unit, force_unit=f"{unit}/Å")
    np.testing.assert_allclose(got.R, ref.R, rtol=1e-6)
    np.testing.assert_allclose(got.E, ref.E, rtol=1e-6)
    scale = np.abs(ref.F).max()
    np.testing.assert_allclose(got.F / scale, ref.F / scale, atol=1e-6)
    np.testing.assert_array_equal(got.Z, ref.Z)


def test_extxyz_round_trip(tmp_path):
    data = ethanol_frames(4)
    io.write(data, tmp_path / "d.extxyz")
    back = io.read(tmp_path / "d.extxyz", energy_unit="eV")
    np.testing.assert_allclose(back.R, data.R, atol=1e-7)
    np.testing.assert_allclose(back.E, data.E, rtol=1e-9)
    np.testing.assert_allclose(back.F, data.F, atol=1e-6)


def test_plain_xyz_without_labels(tmp_path):
    path = write_xyz(tmp_path / "e.xyz", ["C", "C", "O", "H", "H", "H", "H", "H", "H"], ETHANOL_R)
    data = io.read(path)
    assert data.E is None and data.F is None and len(data) == 1


# ---- bad input: one clear error each -----------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        io.read(tmp_path / "nope.npz")


def test_unsupported_format(tmp_path):
    (tmp_path / "m.pdb").write_text("ATOM\n")
    with pytest.raises(FormatError, match="unsupported format"):
        io.read(tmp_path / "m.pdb")


def test_corrupt_npz(tmp_path):
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(FormatError, match="not a readable npz"):
        io.read(tmp_path / "c.npz")


def test_npz_with_unknown_keys(tmp_path):
    np.savez(tmp_path / "k.npz", positions=np.zeros((1, 2, 3)))
    with pytest.raises(FormatError, match="neither sGDML"):
        io.read(tmp_path / "k.npz")


def test_malformed_xyz_line_reports_line_number(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text("2\ncomment\nC 0 0 0\nH 0.0 zero 1.0\n")
    with pytest.raises(FormatError, match=r"bad.xyz:4: expected three coordinates"):
        io.read(path)


def test_xyz_bad_atom_count(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text("two\ncomment\nC 0 0 0\n")
    with pytest.raises(FormatError, match=r"bad.xyz:1: expected an atom count"):
        io.read(path)


def test_xyz_unknown_element(tmp_path):
    path = write_xyz(tmp_path / "u.xyz", ["C", "Qq"], [[0, 0, 0], [1.2, 0, 0]])
    with pytest.raises(DataError, match=r"u.xyz:4: unknown element 'Qq'"):
        io.read(path)


def test_npz_unknown_atomic_number(tmp_path):
    np.savez(tmp_path / "z.npz", R=ETHANOL_R[None], z=np.array([6, 6, 8, 1, 1, 1, 1, 1, 150]))
    with pytest.raises(ElementError, match="unknown atomic number 150"):
        io.read(tmp_path / "z.npz")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_coordinates(tmp_path, bad):
    R = ETHANOL_R.copy()
    R[3, 1] = bad
    np.savez(tmp_path / "n.npz", R=R[None], z=ETHANOL_Z)
    with pytest.raises(DataError, match="non-finite"):
        io.read(tmp_path / "n.npz")
    write_xyz(tmp_path / "n.xyz", ["C", "C", "O", "H", "H", "H", "H", "H", "H"], R)
    with pytest.raises(DataError, match=r"n.xyz:6: non-finite"):
        io.read(tmp_path / "n.xyz")


def test_overlapping_atoms(tmp_path):
    R = ETHANOL_R.copy()
    R[4] = R[3] + [0.05, 0, 0]
    np.savez(tmp_path / "o.npz", R=R[None], z=ETHANOL_Z)
    with pytest.raises(DataError, match=r"atoms 3 and 4 of molecule 0 are 0.05 Å apart"):
        io.read(tmp_path / "o.npz")


def test_wrong_length_unit_is_caught_as_overlap(tmp_path):
    # positions written in nm but read as Å: bonds of ~0.01 "Å" are unphysical
    np.savez(tmp_path / "nm.npz", R=ETHANOL_R[None] / 10, z=ETHANOL_Z)
    with pytest.raises(DataError, match="wrong length unit"):
        io.read(tmp_path / "nm.npz")
    assert len(io.read(tmp_path / "nm.npz", length_unit="nm")) == 1


@pytest.mark.parametrize("what", ["E", "F", "z"])
def test_mismatched_shapes(tmp_path, what):
    data = ethanol_frames(4)
    arrays = dict(R=data.R, z=ETHANOL_Z, E=data.E, F=data.F)
    arrays[what] = {"E": data.E[:3], "F": data.F[:, :8], "z": ETHANOL_Z[:8]}[what]
    np.savez(tmp_path / "s.npz", **arrays)
    with pytest.raises(DataError, match="shape mismatch"):
        io.read(tmp_path / "s.npz")


def test_unknown_unit(tmp_path):
    data = ethanol_frames(2)
    io.write_npz(data, tmp_path / "d.npz")
    with pytest.raises(UnitError, match="unknown energy unit 'calories'"):
        io.read(tmp_path / "d.npz", energy_unit="calories")


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "keep.npz"
    io.write_npz(ethanol_frames(2), path)
    before = path.read_bytes()

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with io.atomic_path(path) as tmp:
            tmp.write_bytes(b"partial")
            raise Boom
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.npz"]
