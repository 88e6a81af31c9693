"""Neighbour lists: dense and sparse agree, cutoffs, overflow flag, NaN-free gradients at padding."""
import jax
import jax.numpy as jnp
import numpy as np
from helpers import mixed_molecules

from jaxqc.data.graph import count_edges, dense_pairs, edge_budget, edge_vectors, safe_norm, sparse_edges_jit


def test_dense_pairs_match_numpy():
    data = mixed_molecules(5)
    mol = data.molecules()
    pairs = dense_pairs(mol.R, mol.mask, cutoff_ang=2.0)
    R, m = np.asarray(mol.R), np.asarray(mol.mask)
    d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
    expect = m[:, :, None] & m[:, None, :] & ~np.eye(R.shape[1], dtype=bool) & (d < 2.0)
    np.testing.assert_array_equal(np.asarray(pairs.mask), expect)
    np.testing.assert_allclose(np.asarray(pairs.dist)[expect], d[expect], rtol=1e-6)
    assert np.all(np.asarray(pairs.dist)[~expect] == 0)


def test_sparse_edges_equal_dense_pairs():
    data = mixed_molecules(8, seed=4)
    mol = data.molecules()
    n = int(count_edges(np.asarray(mol.R), np.asarray(mol.mask), 2.0).sum())
    budget = edge_budget(n)
    edges = sparse_edges_jit(mol.R, mol.mask, 2.0, max_edges=budget)
    assert not bool(edges.overflow) and int(edges.n_real) == n
    assert int(edges.mask.sum()) == n
    A = mol.R.shape[1]
    got = {(int(r) // A, int(r) % A, int(s) % A) for s, r, ok in zip(edges.senders, edges.receivers, edges.mask) if ok}
    dense = dense_pairs(mol.R, mol.mask, 2.0)
    want = {tuple(int(v) for v in x) for x in np.argwhere(np.asarray(dense.mask))}
    assert got == want
    # every edge joins atoms of the same molecule
    assert all(int(s) // A == int(r) // A for s, r in zip(edges.senders[:n], edges.receivers[:n]))
    vec = edge_vectors(mol.R.reshape(-1, 3), edges)
    assert np.all(np.linalg.norm(np.asarray(vec)[:n], axis=-1) < 2.0)


def test_sparse_edges_overflow_flag():
    mol = mixed_molecules(8, seed=4).molecules()
    edges = sparse_edges_jit(mol.R, mol.mask, 5.0, max_edges=64)
    assert bool(edges.overflow) and int(edges.n_real) > 64


def test_safe_norm_gradient_is_finite_at_zero():
    g = jax.grad(lambda x: safe_norm(x))(jnp.zeros(3))
    np.testing.assert_array_equal(np.asarray(g), 0.0)
    x = jnp.array([3.0, 4.0, 0.0])
    np.testing.assert_allclose(jax.grad(lambda v: safe_norm(v))(x), x / 5.0, rtol=1e-6)


def test_dense_pairs_gradient_with_padding_is_finite():
    mol = mixed_molecules(4).molecules(n_atoms_pad=16)

    def energy(R):
        p = dense_pairs(R, mol.mask, 3.0)
        return jnp.sum(jnp.where(p.mask, 1.0 / jnp.where(p.mask, p.dist, 1.0), 0.0))

    g = jax.grad(energy)(mol.R)  # jax_debug_nans is on in conftest: a NaN would raise
    assert np.all(np.isfinite(np.asarray(g)))
    assert np.all(np.asarray(g)[~np.asarray(mol.mask)] == 0)
