"""MACE: every layer's features rotate with the Wigner-D matrices of a rotation with inversion (float32 and
float64), energies are invariant and forces rotate, forces equal finite differences, the edge-list path is
the all-pairs one, the product basis is what it should be and not trivial, unknown elements give NaN, fit
takes elements and avg_num_neighbors from the data, and `jaxqc train mace` (the shared loop) overfits a small
set and `jaxqc evaluate` reports on it.

Unit tests draw the parameters with numpy from the module's shapes (jax.eval_shape): compiling flax's
random initialisers costs ~10 s on one CPU core per config, and the tests need the function, not the
init distribution (the fit tests use the real init)."""
import json
import re

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation

from jaxqc import testing
from jaxqc.data import io
from jaxqc.models.mace import MACE, MACEConfig, SymmetricContraction, resolve, symmetric_basis
from jaxqc.models.network import module_energy

SMALL = dict(channels=4, max_L=2, l_max=2, correlation=3, n_bessel=4, radial_mlp=(8, 8), readout_mlp=4,
             elements=(1, 6, 8), avg_num_neighbors=8.0)
STATS = {"scale": 1.0, "shift": 0.0, "atom_ref": np.zeros(9)}


def numpy_params(net, *args, seed=0, **kw):
    """Parameters of net.init(key, *args, **kw) with the init's distributions (N(0, 1); the product basis
    weights w<nu>_<irrep> N(0, 1) / K), drawn with numpy."""
    shapes = jax.eval_shape(lambda a, k: net.init(jax.random.PRNGKey(0), *a, **k), args, kw)  # arguments,
    # not closures: an IrrepsArray caches its chunks, which must not be tracers of this trace
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        x = rng.normal(size=leaf.shape)
        if re.match(r"w\d_", path[-1].key):
            x = x / leaf.shape[1]
        return jnp.asarray(x, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.fixture(scope="module")
def ethanol():
    return io.read("ethanol-xtb")


def covariance(config, mol, dtype):
    """(relative errors |F(Q R) - D(Q) F(R)| / |F(R)| of every layer's features A_t, B_t, h_t, then of y) for a
    proper rotation Q and for -Q (with inversion), and the features F(R)."""
    net = MACE(config)
    params = numpy_params(net, mol.Z, mol.R, mol.mask)
    apply = jax.jit(lambda R: net.apply(params, mol.Z, R, mol.mask, return_features=True))
    transform = jax.jit(lambda feats, Q: [F.transform_by_matrix(Q) for F in feats])  # Wigner-D (with parity)
    y, feats = apply(mol.R)
    assert feats[0].dtype == dtype and y.dtype == dtype
    out = []
    for k, inversion in enumerate((False, True)):
        Q = jnp.asarray(random_rotation(np.random.default_rng(k), inversion=inversion), dtype)
        y_rot, feats_rot = apply(mol.R @ Q.T)
        errors = [float(jnp.linalg.norm(Fr.array - F.array) / jnp.linalg.norm(F.array))
                  for F, Fr in zip(transform(feats, Q), feats_rot)]
        out.append(np.array(errors + [float(jnp.max(jnp.abs(y_rot - y)) / jnp.max(jnp.abs(y)))]))
    return out, feats


def check_covariance(mol, l_max, dtype, tol):
    results, feats = covariance(MACEConfig(**{**SMALL, "l_max": l_max}), mol, dtype)
    for errors in results:
        assert errors.max() < tol, errors
    # the check can fail: the layers carry l > 0 features that are not small (the last keeps scalars only)
    sh = "+".join(f"4x{l}{'eo'[l % 2]}" for l in range(l_max + 1))
    assert [str(f.irreps) for f in feats] == [sh, "4x0e+4x1o+4x2e", "4x0e+4x1o+4x2e", sh, "4x0e", "4x0e"]
    for F in feats[:4]:
        assert float(jnp.linalg.norm(F.filter(drop="0e").array)) > 1e-3 * float(jnp.linalg.norm(F.array))


def test_every_layer_rotates_with_wigner_d_float32(ethanol):
    """Rotations with and without inversion: every layer's features to < 1e-5 relative (l_max 1)."""
    check_covariance(ethanol.molecules(np.arange(2), dtype=jnp.float32), 1, jnp.float32, 1e-5)


def test_every_layer_rotates_with_wigner_d_float64(ethanol, x64):
    """The same to < 1e-10 in float64 (l_max 3, the paper's)."""
    check_covariance(ethanol.molecules(np.arange(2), dtype=jnp.float64), 3, jnp.float64, 1e-10)


def test_energy_invariant_forces_rotate_and_match_finite_differences(ethanol, x64):
    """jaxqc.testing's checks (float64): invariance under rotation with inversion, translation and permutation
    of like atoms; forces equal central differences; and forces rotate, F(Q R) = F(R) Q^T (one layer: the
    covariance tests above check both layers' features and outputs)."""
    config = MACEConfig(**{**SMALL, "l_max": 1, "layers": 1})
    mol = ethanol.molecules(np.arange(3), dtype=jnp.float64)
    params = {"net": numpy_params(MACE(config), mol.Z, mol.R, mol.mask)["params"], "stats": STATS}
    energy = module_energy(MACE, config)
    testing.assert_invariant(energy, params, mol)
    one = ethanol.molecules(np.arange(1), dtype=jnp.float64)
    testing.assert_forces_match_fd(energy, params, one, eps=1e-4, rtol=1e-5, atol=1e-6)
    forces = jax.jit(testing._forces_of(energy))  # the function the check compiled: no second compilation
    Q = random_rotation(np.random.default_rng(3), inversion=True)
    F = forces(params, one)
    F_rot = forces(params, one.replace(R=one.R @ jnp.asarray(Q.T)))
    assert float(jnp.max(jnp.abs(F))) > 1e-3
    np.testing.assert_allclose(F_rot, F @ Q.T, atol=1e-10 * float(jnp.max(jnp.abs(F))))


def test_edge_path_equals_dense_path(x64):
    """The same parameters and function (energies, forces) on a host-built edge list within the cutoff and on
    every pair (edges=None), on a padded batch of molecules of different sizes; padding atoms output 0; a list
    built within a shorter cutoff is refused."""
    from helpers import mixed_molecules

    from jaxqc.data.graph import all_pair_edges
    from jaxqc.data.molecules import with_edges

    mol = mixed_molecules(6, seed=1).molecules(n_atoms_pad=14, batch_pad=7, dtype=jnp.float64)
    config = MACEConfig(**{**SMALL, "elements": (1, 6, 7, 8), "cutoff_ang": 3.0, "max_L": 1, "l_max": 1})
    net = MACE(config)
    listed = with_edges(mol, 3.0, 14 * 13).edges  # the pairs within 3 Å, padded to the all-pairs budget
    params = numpy_params(net, mol.Z, mol.R, mol.mask, edges=listed)
    shapes = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), mol.Z, mol.R, mol.mask))
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(shapes)

    @jax.jit
    def e_and_f(R, edges):
        return jax.value_and_grad(lambda R: net.apply(params, mol.Z, R, mol.mask, edges=edges).sum())(R)

    E, F = e_and_f(mol.R, all_pair_edges(mol.mask, 3.0))  # what edges=None runs: every pair of the atom slots
    E2, F2 = e_and_f(mol.R, listed)  # one compilation: the same shapes
    assert float(jnp.max(jnp.abs(F))) > 1e-3 and int(listed.mask.sum()) < int(mol.mask.sum(1) @ (mol.mask.sum(1) - 1))
    np.testing.assert_allclose(E2, E, rtol=1e-12)
    np.testing.assert_allclose(F2, F, atol=1e-12)
    y = jax.jit(lambda R: net.apply(params, mol.Z, R, mol.mask))(mol.R)  # edges=None
    np.testing.assert_allclose(y.sum(), E, rtol=1e-12)
    assert np.all(np.asarray(y)[~np.asarray(mol.mask)] == 0)
    with pytest.raises(ValueError, match="less than the cutoff"):
        net.apply(params, mol.Z, mol.R, mol.mask, edges=with_edges(mol, 2.0, 64).edges)


@pytest.mark.parametrize("l_max", [1, 3])
def test_product_basis_is_the_full_symmetric_contraction(l_max, x64):
    """The distinct-monomial form equals U contracted with A (x) ... (x) A over all index tuples, and its
    outputs are equivariant polynomials of degree nu."""
    d = (l_max + 1) ** 2
    basis = lambda nu: e3nn.reduced_symmetric_tensor_product_basis(e3nn.Irreps.spherical_harmonics(l_max), nu,
                                                                   keep_ir=["0e", "1o"])
    x = np.random.default_rng(0).normal(size=d)
    for nu in (1, 2, 3):
        U = np.asarray(basis(nu).array)
        full = U
        for _ in range(nu):
            full = np.tensordot(x, full, axes=(0, 0))
        tuples, per_irrep = symmetric_basis(l_max, nu, ("0e", "1o"))
        mono = np.prod(x[tuples], axis=1)
        mine = np.concatenate([np.einsum("t,tkm->km", mono, per_irrep[ir]).reshape(-1)
                               for ir in ("0e", "1o") if ir in per_irrep])
        np.testing.assert_allclose(mine, full, atol=1e-12)
    assert len(symmetric_basis(3, 3, ("0e", "1o"))[0]) <= 816  # at most C(16 + 2, 3) distinct monomials


def test_symmetric_contraction_is_not_trivial(ethanol, x64):
    """Correlation 3 differs from correlation 1 (the same model with the weights of orders 2 and 3 zeroed),
    the product's l > 0 outputs change with it, and B(A) has a cubic part."""
    mol = ethanol.molecules(np.arange(1), dtype=jnp.float64)
    net = MACE(MACEConfig(**SMALL))
    params = numpy_params(net, mol.Z, mol.R, mol.mask)
    apply = jax.jit(lambda p: net.apply(p, mol.Z, mol.R, mol.mask, return_features=True))
    order_1 = jax.tree_util.tree_map_with_path(
        lambda path, w: w * 0 if path[-1].key[:2] in ("w2", "w3") and path[-2].key.startswith("product_") else w,
        params)
    (y3, f3), (y1, f1) = apply(params), apply(order_1)
    np.testing.assert_allclose(f1[0].array, f3[0].array, rtol=1e-12)  # the same messages A of layer 0
    for k in (1, 4):  # B of both layers
        assert float(jnp.linalg.norm(f3[k].array - f1[k].array)) > 1e-3 * float(jnp.linalg.norm(f1[k].array))
    assert float(jnp.linalg.norm(f3[1].filter(keep="1o").array - f1[1].filter(keep="1o").array)) > 0
    assert float(jnp.max(jnp.abs(y3 - y1))) > 1e-6
    # the module alone on random inputs: B(A) is a polynomial of degree 3 in A (no constant term)
    A = e3nn.normal(e3nn.Irreps("3x0e + 3x1o + 3x2e"), jax.random.PRNGKey(1), (5,))
    onehot = jnp.eye(2)[jnp.array([0, 1, 1, 0, 1])]
    sc = SymmetricContraction(("0e", "1o"), 3, 2)
    w = numpy_params(sc, A, onehot)
    apply_sc = jax.jit(lambda A, s: sc.apply(w, A * s, onehot).array)
    B = {s: apply_sc(A, s) for s in (-1.0, 0.0, 1.0, 2.0)}
    cubic = (B[2.0] - 3 * B[1.0] + 3 * B[0.0] - B[-1.0]) / 6  # third difference: the cubic coefficient
    assert float(jnp.linalg.norm(cubic)) > 1e-3 * float(jnp.linalg.norm(B[1.0]))
    assert float(jnp.max(jnp.abs(B[0.0]))) == 0


def test_unknown_element_gives_nan(ethanol):
    """An atom of an element outside config.elements gets NaN, never a guess (here O for a model of H, C)."""
    mol = ethanol.molecules(np.arange(1))
    net = MACE(MACEConfig(channels=2, l_max=1, correlation=1, layers=1, n_bessel=2, radial_mlp=(2,), readout_mlp=2,
                          elements=(1, 6), avg_num_neighbors=8.0))
    params = numpy_params(net, mol.Z, mol.R, mol.mask)
    with jax.debug_nans(False):
        y = np.asarray(jax.jit(net.apply)(params, mol.Z, mol.R, mol.mask))
    assert np.array_equal(np.isnan(y), np.asarray(mol.Z) == 8)


def test_fit_takes_elements_and_neighbours_from_the_training_data(ethanol):
    c = resolve(MACEConfig(), ethanol, np.arange(10))
    assert c.elements == (1, 6, 8) and c.max_z == 8 and c.avg_num_neighbors == 8.0  # ethanol: all pairs < 5 Å
    assert resolve(MACEConfig(cutoff_ang=1.2), ethanol, np.arange(10)).avg_num_neighbors < 2.0
    assert resolve(c, ethanol, np.arange(10)) is c
    from helpers import mixed_molecules

    mixed = mixed_molecules(20, seed=0)
    elements = lambda idx: {int(z) for z in np.unique(mixed.Z[idx]) if z}  # noqa: E731
    assert set(resolve(MACEConfig(), mixed, [0, 1], [2, 3]).elements) == elements([0, 1, 2, 3])


def test_cli_trains_overfits_and_evaluates(tmp_path, capsys):
    """`jaxqc train mace` (the shared optax loop, energies and forces) overfits 16 ethanol-xtb frames (the
    loss falls > 5x), records the elements and avg_num_neighbors it took from the data, and `jaxqc evaluate
    RUN --json` reports force errors. (One fit for both checks: each fit compiles for ~20 s on one core.)"""
    from jaxqc.cli import main
    from jaxqc.train import loop

    run = tmp_path / "mace"
    assert main(["train", "mace", "--data", "ethanol-xtb", "--forces", "--n-train", "16", "--n-valid", "8",
                 "--epochs", "30", "--batch-size", "4", "--lr", "0.01", "--features", "8", "--interactions", "1",
                 "--l-max", "1", "--out", str(run)]) == 0
    assert "trained mace on 16 frames (30 epochs" in capsys.readouterr().out
    rows = loop.read_log(run / "metrics.jsonl")
    assert len(rows) == 30 and np.isfinite(rows[-1]["train_loss"])
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 5, (rows[0]["train_loss"], rows[-1]["train_loss"])
    header = json.loads((run / "config.json").read_text())
    model = header["model"]
    assert header["kind"] == "mace" and model["channels"] == 8 and model["layers"] == 1 and model["l_max"] == 1
    assert model["elements"] == [1, 6, 8] and model["avg_num_neighbors"] == 8.0
    assert main(["evaluate", str(run), "--data", "ethanol-xtb", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] > 0 and res["forces"]["mae"] > 0 and res["forces"]["unit"] == "kcal/mol/Å"


def test_qm9_references_of_elements_the_model_does_not_embed_are_left_out():
    """MACE embeds only the training molecules' elements: QM9 U0 training data without fluorine gives
    max_z 8, and the free-atom references stop there (they used to index past the end)."""
    from jaxqc.elements import QM9_ATOM_REF_HA
    from jaxqc.nn.model import atom_reference
    from jaxqc.units import HARTREE_KCAL_MOL

    ref = atom_reference(None, "U0", max_z=8)
    assert ref.shape == (9,) and ref[1] == QM9_ATOM_REF_HA["U0"][1] * HARTREE_KCAL_MOL
    assert ref[8] == QM9_ATOM_REF_HA["U0"][8] * HARTREE_KCAL_MOL and 9 in QM9_ATOM_REF_HA["U0"]
