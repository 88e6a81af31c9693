"""`jaxqc data generate` (Langevin MD with tblite GFN2-xTB), DFT relabelling, and the shipped ethanol-xtb set."""
from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from jaxqc import cli
from jaxqc.data import io, registry
from jaxqc.errors import DataError, FormatError

ETHANOL_XYZ = registry.EMBEDDED_DIR / "ethanol.xyz"
ETHANOL_NPZ = registry.EMBEDDED_DIR / "ethanol_xtb.npz"

WATER_XYZ = """3
water, Angstrom
O   0.000  0.000  0.119
H   0.000  0.763 -0.477
H   0.000 -0.763 -0.477
"""


def _tblite():
    return pytest.importorskip("tblite.interface", reason="tblite not installed (pip install 'jaxqc[xtb]')")


@pytest.fixture(scope="module")
def ethanol():
    return io.read("ethanol-xtb")


@pytest.fixture
def water_xyz(tmp_path):
    path = tmp_path / "water.xyz"
    path.write_text(WATER_XYZ)
    return path


def _central_difference(energy, R, atom, axis, h):
    """-(E(R + h e) - E(R - h e)) / 2h: the force component from energies alone."""
    Rp, Rm = R.copy(), R.copy()
    Rp[atom, axis] += h
    Rm[atom, axis] -= h
    return -(energy(Rp) - energy(Rm)) / (2 * h)


# ---- the shipped data set --------------------------------------------------------------------------
def test_shipped_forces_are_negative_gradient_of_energies(ethanol):
    """Stored F equals -dE/dR by central finite differences (h = 1e-3 Å, float64) of fresh tblite energies,
    on 3 frames x all 27 components, to 1e-4 of the frame's largest force (truncation error is ~2e-5 of it).
    The stored energies are also reproduced by a fresh calculation to 1e-6 kcal/mol."""
    _tblite()
    from jaxqc.data.generate import XtbPotential

    h = 1e-3
    for k in (0, len(ethanol) // 2, len(ethanol) - 1):
        Z, R = ethanol.Z[k], ethanol.R[k]
        potential = XtbPotential(Z, R, method=ethanol.meta["method"], charge=ethanol.meta["charge"])
        assert potential(R)[0] == pytest.approx(ethanol.E[k], abs=1e-6)
        fd = np.array([[_central_difference(lambda x: potential(x)[0], R, a, c, h) for c in range(3)]
                       for a in range(len(Z))])
        scale = np.abs(ethanol.F[k]).max()
        np.testing.assert_allclose(fd, ethanol.F[k], rtol=0, atol=1e-4 * scale)


def test_shipped_metadata_and_size(ethanol):
    meta = ethanol.meta
    assert os.path.getsize(ETHANOL_NPZ) < 2 * 1024 ** 2
    assert len(ethanol) >= 1000 and ethanol.R.shape[1:] == (9, 3)
    assert meta["theory"].startswith("GFN2-xTB (tblite ")
    assert meta["temperature_k"] == 500.0 and meta["dt_fs"] == 0.5 and meta["seed"] == 0
    assert meta["units"] == {"R": "Å", "E": "kcal/mol", "F": "kcal/mol/Å"}
    assert meta["command"].startswith("jaxqc data generate --start ")
    assert "--seed 0" in meta["command"] and "ethanol_xtb.npz" in meta["command"]
    assert meta["start"] == "ethanol.xyz"
    # the thermostat held the target: mean kinetic temperature over the run within 5 %
    assert abs(meta["kinetic_temperature_k"]["mean"] - 500.0) < 25.0
    summary = ethanol.summary()
    assert summary["name"] == "ethanol-xtb" and summary["temperature_k"] == 500.0
    json.dumps(summary)


def test_shipped_molecule_stays_intact(ethanol):
    """No bond breaks and no hydrogen wanders off in any frame (atom order C C O H(O) H H H H H)."""
    R = ethanol.R

    def bond(i, j):
        return np.linalg.norm(R[:, i] - R[:, j], axis=-1)

    assert bond(0, 1).max() < 1.9 and bond(1, 2).max() < 1.9 and bond(2, 3).max() < 1.3
    for h, c in ((4, 1), (5, 1), (6, 0), (7, 0), (8, 0)):
        assert bond(c, h).max() < 1.5
    # sensible 500 K energy fluctuations: classical harmonic std is sqrt(21/2) kT = 3.2 kcal/mol
    assert 2.0 < ethanol.E.std() < 5.0
    assert np.abs(ethanol.F).max() < 300.0


# ---- generate_md_dataset ------------------------------------------------------------------------------
def _tiny_run(seed, start=ETHANOL_XYZ):
    from jaxqc.data.generate import generate_md_dataset

    return generate_md_dataset(start, n_frames=5, interval=2, equilibration_steps=10, seed=seed)


def test_generate_shapes_finite_and_reproducible():
    _tblite()
    a, b, c = _tiny_run(0), _tiny_run(0), _tiny_run(1)
    assert a.R.shape == (5, 9, 3) and a.E.shape == (5,) and a.F.shape == (5, 9, 3) and a.Z.shape == (5, 9)
    assert np.all(np.isfinite(a.E)) and np.all(np.isfinite(a.F)) and np.all(np.isfinite(a.R))
    # same seed, same trajectory: to rounding (tblite's threaded linear algebra may reorder sums)
    for x, y in ((a.R, b.R), (a.E, b.E), (a.F, b.F)):
        np.testing.assert_allclose(x, y, rtol=1e-9, atol=1e-12)
    assert not np.allclose(a.R, c.R)
    assert a.meta["seed"] == 0 and c.meta["seed"] == 1 and a.meta["interval"] == 2
    assert a.meta["equilibration_steps"] == 10 and a.meta["units"]["F"] == "kcal/mol/Å"


def test_generate_rejects_bad_arguments():
    from jaxqc.data.generate import generate_md_dataset

    with pytest.raises(DataError, match="dt_fs"):
        generate_md_dataset(ETHANOL_XYZ, dt_fs=0.0)
    with pytest.raises(DataError, match="interval"):
        generate_md_dataset(ETHANOL_XYZ, interval=0)


def test_start_geometry_errors_name_file_and_line(tmp_path):
    from jaxqc.data.generate import read_xyz_geometry

    bad = tmp_path / "bad.xyz"
    bad.write_text("2\ncomment\nH 0 0 0\nH 0 0 x\n")
    with pytest.raises(FormatError, match=r"bad\.xyz:4: "):
        read_xyz_geometry(bad)
    bad.write_text("2\ncomment\nH 0 0 0\n")
    with pytest.raises(FormatError, match=r"bad\.xyz:4: "):
        read_xyz_geometry(bad)
    Z, R = read_xyz_geometry(ETHANOL_XYZ)
    assert list(Z) == [6, 6, 8, 1, 1, 1, 1, 1, 1] and R.shape == (9, 3)


# ---- the CLI ----------------------------------------------------------------------------------------
def test_cli_generate_writes_readable_npz(tmp_path, water_xyz, capsys):
    _tblite()
    out = tmp_path / "water_md.npz"
    rc = cli.main(["data", "generate", "--start", str(water_xyz), "--out", str(out), "--n-frames", "4",
                   "--interval", "3", "--equilibration-steps", "5", "--seed", "3"])
    assert rc == 0
    data = io.read(out)
    assert len(data) == 4 and data.R.shape == (4, 3, 3) and data.elements == ["H", "O"]
    assert data.meta["seed"] == 3 and data.meta["theory"].startswith("GFN2-xTB")
    assert np.all(np.isfinite(data.F))
    assert "wrote 4 frames" in capsys.readouterr().out


@pytest.mark.parametrize("atoms, expected", [
    ("O 0 0 0\nXx 0 0 1\nH 0 1 0\n", r"bad\.xyz:4: unknown element 'Xx'"),
    ("O 0 0 0\nH 0 0 1\nH 0 0 1.01\n", r"bad\.xyz:5: atom 2 is 0\.01 Å from atom 1 \(line 4\)"),
])
def test_cli_generate_bad_start_file_is_one_line_error(tmp_path, capsys, atoms, expected):
    bad = tmp_path / "bad.xyz"
    bad.write_text("3\ncomment\n" + atoms)
    out = tmp_path / "never.npz"
    rc = cli.main(["data", "generate", "--start", str(bad), "--out", str(out), "--n-frames", "2"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("jaxqc: error: ") and err.count("\n") == 1
    assert re.search(expected, err), err
    assert not out.exists()


# ---- DFT relabelling ------------------------------------------------------------------------------
def test_relabel_pyscf_forces_are_negative_gradient(tmp_path):
    """PBE/sto-3g on one water geometry: forces (with grid response) equal central finite differences
    (h = 1e-3 Å) of PySCF energies to 1e-4 of the largest force; sampling theory is kept."""
    pytest.importorskip("pyscf", reason="pyscf not installed (pip install 'jaxqc[dft]')")
    from jaxqc.data.generate import pyscf_energy_forces, relabel_pyscf
    from jaxqc.data.molecules import Dataset

    R = np.array([[0.0, 0.05, 0.119], [0.0, 0.763, -0.477], [0.02, -0.72, -0.49]])
    data = Dataset(Z=[[8, 1, 1]], R=R[None], E=[0.0], F=np.zeros((1, 3, 3)),
                   meta={"theory": "GFN2-xTB (tblite 0.8.0)", "charge": 0})
    out = relabel_pyscf(data, "PBE/sto-3g")
    assert out.meta["theory"].startswith("PBE/sto-3g (PySCF ")
    assert out.meta["sampling_theory"] == "GFN2-xTB (tblite 0.8.0)"
    assert data.meta["theory"] == "GFN2-xTB (tblite 0.8.0)"  # the input is not modified
    assert np.isfinite(out.E[0]) and out.E[0] < -40000  # about -75 Ha in kcal/mol

    def energy(x):
        return pyscf_energy_forces(data.Z[0], x, "PBE/sto-3g")[0]

    scale = np.abs(out.F[0]).max()
    for atom, axis in ((0, 2), (1, 1), (2, 0), (2, 2)):
        fd = _central_difference(energy, R, atom, axis, 1e-3)
        assert abs(fd - out.F[0, atom, axis]) < 1e-4 * scale, (atom, axis, fd, out.F[0, atom, axis])


@pytest.mark.parametrize("spec, match", [
    ("PBE", "expected 'XC/BASIS'"),
    ("NOTAFUNCTIONAL/sto-3g", "unknown exchange-correlation functional"),
    ("PBE/not-a-basis", "unknown basis"),
])
def test_relabel_pyscf_bad_spec(spec, match):
    pytest.importorskip("pyscf", reason="pyscf not installed")
    from jaxqc.data.generate import relabel_pyscf
    from jaxqc.data.molecules import Dataset

    data = Dataset(Z=[[1, 1]], R=[[[0, 0, 0], [0, 0, 0.74]]])
    with pytest.raises(DataError, match=match):
        relabel_pyscf(data, spec)
