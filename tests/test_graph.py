"""Neighbour lists: dense and sparse agree, cutoffs, overflow flag, NaN-free gradients at padding; the host-side
edge lists batches carry equal the dense pairs within the cutoff, overflow raises, one compilation per bucket."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import mixed_molecules

from jaxqc.data.graph import (EdgeOverflow, count_edges, dense_pairs, edge_budget, edge_geometry, edge_vectors,
                              safe_norm, sparse_edges_jit)
from jaxqc.data.molecules import atom_buckets, batches, bucket_of, edge_budgets, edge_counts, with_edges


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


def edge_set(edges, mol_mask=None):
    """{(molecule, receiver i, sender j)} of the real edges of an EdgeList."""
    s, r, m = (np.asarray(x) for x in (edges.senders, edges.receivers, edges.mask))
    return {(b, int(r[b, e]), int(s[b, e])) for b, e in zip(*np.nonzero(m))}


def dense_set(R, mask, cutoff_ang):
    R, m = np.asarray(R, np.float64), np.asarray(mask)
    d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
    ok = m[:, :, None] & m[:, None, :] & ~np.eye(R.shape[1], dtype=bool)
    if cutoff_ang is not None:
        ok &= d < cutoff_ang
    return {tuple(int(v) for v in x) for x in np.argwhere(ok)}


@pytest.mark.parametrize("cutoff", [2.0, 3.5, None])
def test_batch_edges_equal_dense_pairs_within_cutoff(cutoff):
    data = mixed_molecules(30, seed=2)
    idx = np.arange(30)
    buckets = atom_buckets(data.n_atoms, n_buckets=3)
    budgets = edge_budgets(data, idx, buckets, cutoff)
    assert all(b % 8 == 0 or b == a * (a - 1) for a, b in zip(buckets, budgets))
    n_batches = 0
    for mol in batches(data, idx, 8, buckets, shuffle=True, seed=1, edge_cutoff_ang=cutoff, budgets=budgets):
        k = buckets.index(mol.R.shape[1])
        e = mol.edges
        assert e.senders.shape == e.receivers.shape == e.mask.shape == (8, budgets[k]) and e.cutoff_ang == cutoff
        assert edge_set(e) == dense_set(mol.R, mol.mask, cutoff)
        r = np.asarray(e.receivers)
        assert np.all(np.diff(r, axis=1) >= 0)  # receivers sorted inside each molecule, padding too
        assert not np.any(np.asarray(e.mask)[~np.asarray(mol.mol_mask)])  # padding molecules: no edges
        vec, dist = edge_geometry(mol.R, e)
        real = np.asarray(e.mask).reshape(-1)
        assert np.all(np.asarray(dist)[~real] == 0)
        if cutoff is not None:
            assert np.all(np.asarray(dist)[real] < cutoff)
        n_batches += 1
    assert n_batches >= len(buckets)
    # the budget is the most edges of a molecule of the bucket: some molecule uses it up to the rounding
    counts, which = edge_counts(data, idx, cutoff), bucket_of(data.n_atoms, buckets)
    for k, a in enumerate(buckets):
        assert counts[which == k].max() <= budgets[k] < counts[which == k].max() + 8 or budgets[k] == a * (a - 1)


def test_edge_overflow_raises_and_never_drops_edges():
    data = mixed_molecules(12, seed=4)
    mol = data.molecules()
    n = count_edges(np.asarray(mol.R), np.asarray(mol.mask), 3.0)
    with pytest.raises(EdgeOverflow, match=f"molecule {int(np.argmax(n))} of the batch has {int(n.max())} edges"):
        with_edges(mol, 3.0, int(n.max()) - 1)
    assert edge_set(with_edges(mol, 3.0, int(n.max())).edges) == dense_set(mol.R, mol.mask, 3.0)
    # budgets taken from the small molecules only: batching a larger one of the same bucket raises
    idx = np.arange(12)
    buckets = (data.max_atoms,)
    small = idx[np.argsort(data.n_atoms)[:4]]
    budgets = edge_budgets(data, small, buckets, 3.0)
    with pytest.raises(EdgeOverflow, match="edge budget"):
        list(batches(data, idx, 4, buckets, edge_cutoff_ang=3.0, budgets=budgets))


def test_edge_shifts_enter_the_edge_vectors():
    """Periodic images: a shift per edge is added to r_j - r_i (nothing else changes)."""
    mol = with_edges(mixed_molecules(3, seed=1).molecules(), 3.0, 132)
    shifts = jnp.zeros(mol.edges.senders.shape + (3,)).at[..., 0].set(10.0)
    vec0, _ = edge_geometry(mol.R, mol.edges)
    vec1, _ = edge_geometry(mol.R, mol.edges.replace(shifts=shifts))
    real = np.asarray(mol.edges.mask).reshape(-1)
    np.testing.assert_allclose(np.asarray(vec1 - vec0)[real], np.tile([10.0, 0, 0], (real.sum(), 1)), atol=1e-5)


def test_jitted_function_compiles_once_per_bucket_with_edges():
    data = mixed_molecules(40, seed=3)
    idx = np.arange(40)
    buckets = atom_buckets(data.n_atoms, n_buckets=2)
    budgets = edge_budgets(data, idx, buckets, 2.5)
    traces = []

    @jax.jit
    def f(mol):
        traces.append(mol.R.shape)  # runs once per compilation (trace)
        vec, dist = edge_geometry(mol.R, mol.edges)
        return jnp.sum(jnp.where(mol.edges.mask.reshape(-1), dist, 0.0))

    shapes = []
    for epoch in range(2):
        for mol in batches(data, idx, 4, buckets, shuffle=True, seed=epoch, edge_cutoff_ang=2.5, budgets=budgets):
            f(mol)
            shapes.append(mol.R.shape)
    assert len(shapes) > 2 * len(buckets)  # several batches per bucket
    assert sorted(traces) == sorted(set(shapes)) and len(traces) == len(buckets)


def test_edges_within_refuses_edges_of_a_smaller_cutoff_and_fills_in_every_pair():
    """The one check every network runs (SchNet, Cormorant, MACE): a batch's edges built within less than
    the network's cutoff would silently miss pairs."""
    import jax.numpy as jnp
    import pytest

    from jaxqc.data.graph import EdgeList, edges_within

    mask = jnp.array([[True, True, True, False]])
    every = edges_within(mask, None, 5.0)
    assert every.senders.shape == (1, 12) and int(every.mask.sum()) == 6 and every.cutoff_ang == 5.0
    small = EdgeList(senders=every.senders, receivers=every.receivers, mask=every.mask, cutoff_ang=3.0)
    with pytest.raises(ValueError, match="less than the cutoff"):
        edges_within(mask, small, 5.0)
    assert edges_within(mask, small, 3.0) is small
