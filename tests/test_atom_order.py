"""The same molecule with its atoms listed in another order is mapped onto a model of one molecule by
its element-labelled bond graph (and said so), instead of being evaluated or simulated in the wrong
order; a different molecule with the same formula is refused."""
import json

import numpy as np
import pytest

from jaxqc.cli import main
from jaxqc.data import io
from jaxqc.data import registry as data_registry
from jaxqc.data.molecules import Dataset
from jaxqc.errors import DataError
from jaxqc.kernels.symmetries import map_atoms

ORDER = np.array([2, 7, 0, 4, 1, 8, 3, 6, 5])  # ethanol-xtb: C C O H H H H H H -> another order


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("order")
    data = data_registry.load("ethanol-xtb")
    frames = data.subset(np.arange(200, 260))
    io.write_npz(frames, tmp / "same.npz")
    io.write_npz(Dataset(Z=frames.Z[:, ORDER], R=frames.R[:, ORDER], E=frames.E, F=frames.F[:, ORDER]),
                 tmp / "reordered.npz")
    model = tmp / "sgdml.npz"
    assert main(["train", "sgdml", "--data", "ethanol-xtb", "--n-train", "40", "--n-valid", "20",
                 "--sigma-grid", "20", "--out", str(model)]) == 0
    return tmp, model, data


def test_map_atoms_recovers_the_order_and_refuses_another_molecule():
    data = data_registry.load("ethanol-xtb")
    z, R = data.Z[0], data.R[0]
    perm = map_atoms(z, R, z[ORDER], R[ORDER])
    np.testing.assert_array_equal(z[ORDER][perm], z)
    np.testing.assert_allclose(R[ORDER][perm], R)  # the hydrogens of each group go where they were
    # dimethyl-ether-like relabelling (an O where a C is): same formula, another bond graph
    with pytest.raises(DataError, match="bond graphs differ|no atom mapping"):
        map_atoms(z, R, z[ORDER], R)


def test_evaluate_maps_a_reordered_test_file(files, capsys):
    tmp, model, _ = files
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", str(tmp / "same.npz"), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert main(["evaluate", str(model), "--data", str(tmp / "reordered.npz"), "--json"]) == 0
    out = capsys.readouterr()
    mapped = json.loads(out.out)
    assert "lists the atoms in another order than the model; mapped by the bond graph" in out.err
    for q in ("energy", "forces"):
        assert mapped[q]["mae"] == pytest.approx(same[q]["mae"], rel=1e-9)
    assert mapped["forces"]["mae"] < 5.0  # not the ~10x larger error of the unmapped order


def test_md_starts_from_a_reordered_geometry(files, tmp_path, capsys):
    tmp, model, data = files
    start = tmp_path / "start.xyz"
    io.write_extxyz(Dataset(Z=data.Z[:1, ORDER], R=data.R[:1, ORDER]), start)
    out = tmp_path / "t.extxyz"
    capsys.readouterr()
    assert main(["md", str(model), "--start", str(start), "--steps", "50", "--dt-fs", "0.5", "--temperature-k", "300",
                 "--quiet", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "mapped by the bond graph" in err
    log = np.genfromtxt(out.with_suffix(".csv"), delimiter=",", names=True)
    assert 50 < log["temperature_K"][1:].mean() < 1000  # not the 1.7 million K of the unmapped order
