"""Permutational symmetries found from geometries (sGDML): group closure, distance-matrix preservation,
only the symmetries the data visit, and the ethanol count."""
import numpy as np
import pytest
from conftest import random_rotation
from helpers import ETHANOL_R, ETHANOL_Z

from jaxqc.data import io
from jaxqc.kernels import symmetries as sym

# methane: C at the origin, H on alternate cube corners (ideal tetrahedron, C-H 1.09 Å)
CH4_Z = np.array([6, 1, 1, 1, 1])
CH4_R = np.vstack([[0.0, 0.0, 0.0], 1.09 / np.sqrt(3) * np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])])


def benzene():
    ang = np.arange(6) * np.pi / 3
    ring = np.stack([np.cos(ang), np.sin(ang), 0 * ang], 1)
    return np.array([6] * 6 + [1] * 6), np.vstack([1.39 * ring, 2.48 * ring])


def frames(R0, n, seed, relabel=None, noise=0.02):
    """n copies of R0, randomly rotated (with and without inversion), shifted, jittered; atoms relabelled
    by relabel(rng) -> perm when given (the same molecule with its identical atoms in another order)."""
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        Q = random_rotation(rng, inversion=bool(k % 2))
        R = R0 @ Q.T + rng.normal(size=3) + noise * rng.normal(size=R0.shape)
        out.append(R[relabel(rng)] if relabel else R)
    return np.stack(out)


def check_group_preserves(perms, Z, R0, atol=1e-9):
    D = sym.distance_matrix(R0)
    assert sym.is_group(perms) and np.array_equal(perms[0], np.arange(len(Z)))
    assert len({tuple(p) for p in perms}) == len(perms)
    for p in perms:
        assert np.array_equal(Z[p], Z)
        np.testing.assert_allclose(D[np.ix_(p, p)], D, atol=atol)


def test_methane_with_relabelled_hydrogens_gives_the_full_group():
    def shuffle_h(rng):
        return np.concatenate([[0], 1 + rng.permutation(4)])

    perms, info = sym.find_permutations(CH4_Z, frames(CH4_R, 60, 0, shuffle_h), return_info=True)
    assert len(perms) == 24  # T_d with inversion acts on the four H as all of S_4
    check_group_preserves(perms, CH4_Z, CH4_R)
    assert info["n_frames"] == 60


def test_benzene_ring_symmetries():
    Z, R0 = benzene()

    def d6h(rng):  # a random rotation/reflection of the hexagon, applied to C and H alike
        k, flip = rng.integers(6), rng.integers(2)
        ring = (np.arange(6) * (-1 if flip else 1) + k) % 6
        return np.concatenate([ring, 6 + ring])

    perms = sym.find_permutations(Z, frames(R0, 60, 1, d6h))
    assert len(perms) == 12  # D_6h acting on the atoms of a planar ring
    check_group_preserves(perms, Z, R0)


def test_only_the_symmetries_the_data_visit():
    """A rigid, jittered ethanol whose methyl never turns: no rotor permutation is found, although the
    bond graph has 12 automorphisms. Only its mirror plane (H3<->H4 with H6<->H7, the same geometry up to
    inversion, which the descriptor cannot see) may appear."""
    perms = sym.find_permutations(ETHANOL_Z, frames(ETHANOL_R, 40, 2))
    mirror = np.array([0, 1, 2, 4, 3, 5, 7, 6, 8])
    assert {tuple(p) for p in perms} <= {tuple(range(9)), tuple(mirror)}
    A = sym.bond_graph(ETHANOL_Z, ETHANOL_R)
    all_automorphisms = [p for p in _ethanol_h_permutations() if sym.is_automorphism(p, A)]
    assert len(all_automorphisms) == 12


def _ethanol_h_permutations():
    import itertools

    for methyl in itertools.permutations([3, 4, 5]):
        for methylene in itertools.permutations([6, 7]):
            yield np.array([0, 1, 2, *methyl, *methylene, 8])
    yield np.array([0, 1, 2, 8, 4, 5, 6, 7, 3])  # a hydroxyl H swapped with a methyl H: not an automorphism


def test_close_group_from_generators():
    cycle, swap = np.array([1, 2, 0, 3]), np.array([1, 0, 2, 3])
    assert len(sym.close_group([cycle])) == 3
    g = sym.close_group([cycle, swap])
    assert len(g) == 6 and sym.is_group(g)
    assert not sym.is_group(np.array([[0, 1, 2, 3], [1, 2, 0, 3]]))  # not closed: misses the inverse


def test_atom_classes_split_hydrogens_by_their_neighbours():
    data = io.read("ethanol-xtb")
    A = sym.bond_graph(data.Z[0], data.R[0])
    classes = sym.atom_classes(data.Z[0], A)
    # C(methyl) C(methylene) O | 3 methyl H | 2 methylene H | 1 hydroxyl H: six classes
    assert len(np.unique(classes)) == 6
    assert A.sum() // 2 == 8  # C-C, C-O, O-H and five C-H bonds


def test_ethanol_permutations():
    data = io.read("ethanol-xtb")
    z = data.Z[0]
    perms, info = sym.find_permutations(z, data.R[:1000], return_info=True)
    # methyl rotor (3) x methylene H swap (2): 6, the count sgdml reports for ethanol
    assert len(perms) == 6, info
    assert sym.is_group(perms)
    A = sym.bond_graph(z, data.R[0])
    D_mean = sym.distance_matrix(data.R[:1000]).mean(0)
    bonds = np.argwhere(np.triu(A))
    for p in perms:
        assert sym.is_automorphism(p, A)
        np.testing.assert_array_equal(p[:3], [0, 1, 2])  # heavy atoms stay
        moved = D_mean[p[bonds[:, 0]], p[bonds[:, 1]]]
        np.testing.assert_allclose(moved, D_mean[bonds[:, 0], bonds[:, 1]], atol=sym.BOND_TOL_ANG)


def test_too_large_group_is_refused():
    gens = [np.roll(np.arange(9), 1), np.array([1, 0, 2, 3, 4, 5, 6, 7, 8])]  # generate S_9 (362,880)
    with pytest.raises(Exception, match="beyond"):
        sym.close_group(gens, max_size=1000)
