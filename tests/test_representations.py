"""Coulomb matrix and bag of bonds: direct formula, invariances, padding."""
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_rotation
from helpers import ETHANOL_R, ETHANOL_Z

from jaxqc.errors import DataError
from jaxqc.representations import bag_of_bonds, bag_sizes, coulomb_eigenvalues, coulomb_matrix, sorted_coulomb_matrix
from jaxqc.representations.bob import check_fits


def test_coulomb_matrix_by_hand(x64):
    # water: O at origin, H at 0.96 Å along x and along a 104.5° direction
    t = np.deg2rad(104.5)
    R = np.array([[0, 0, 0], [0.96, 0, 0], [0.96 * np.cos(t), 0.96 * np.sin(t), 0]])
    Z = np.array([8, 1, 1])
    M = np.asarray(coulomb_matrix(jnp.asarray(Z), jnp.asarray(R)))
    d_hh = 2 * 0.96 * np.sin(t / 2)
    expect = np.array([[0.5 * 8 ** 2.4, 8 / 0.96, 8 / 0.96], [8 / 0.96, 0.5, 1 / d_hh], [8 / 0.96, 1 / d_hh, 0.5]])
    np.testing.assert_allclose(M, expect, rtol=1e-12)
    # sorted: O row first (largest norm); packed upper triangle of length 6
    cm = np.asarray(sorted_coulomb_matrix(jnp.asarray(Z), jnp.asarray(R)))
    np.testing.assert_allclose(cm, expect[np.triu_indices(3)], rtol=1e-12)
    np.testing.assert_allclose(np.sort(np.asarray(coulomb_eigenvalues(jnp.asarray(Z), jnp.asarray(R)))),
                               np.linalg.eigvalsh(expect), rtol=1e-10)


def test_bag_of_bonds_by_hand(x64):
    t = np.deg2rad(104.5)
    R = np.array([[0, 0, 0], [0.96, 0, 0], [0.96 * np.cos(t), 0.96 * np.sin(t), 0]])
    Z = np.array([[8, 1, 1]])
    bags = bag_sizes(Z)
    assert bags == ((-1, -1, 2), (-8, -8, 1), (1, 1, 1), (1, 8, 2))
    v = np.asarray(bag_of_bonds(jnp.asarray(Z), jnp.asarray(R[None]), bags))[0]
    d_hh = 2 * 0.96 * np.sin(t / 2)
    np.testing.assert_allclose(v, [0.5, 0.5, 0.5 * 8 ** 2.4, 1 / d_hh, 8 / 0.96, 8 / 0.96], rtol=1e-12)


def _moved(R, Z, rng):
    rot = random_rotation(rng, inversion=True)
    perm = np.arange(len(Z))
    perm[[0, 1]] = perm[[1, 0]]  # swap the two carbons
    perm[[3, 5]] = perm[[5, 3]]  # and two hydrogens
    return (R @ rot.T + rng.normal(size=3))[perm], Z[perm]


@pytest.mark.parametrize("rep", ["cm", "eigen", "bob"])
def test_invariance_rotation_translation_permutation(rep, x64):
    rng = np.random.default_rng(0)
    R = ETHANOL_R + 0.05 * rng.normal(size=ETHANOL_R.shape)
    R2, Z2 = _moved(R, ETHANOL_Z, rng)
    bags = bag_sizes(ETHANOL_Z[None])
    f = {"cm": sorted_coulomb_matrix, "eigen": coulomb_eigenvalues,
         "bob": lambda Z, R: bag_of_bonds(Z, R, bags)}[rep]
    a = np.asarray(f(jnp.asarray(ETHANOL_Z), jnp.asarray(R)))
    b = np.asarray(f(jnp.asarray(Z2), jnp.asarray(R2)))
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-10)
    # and it is not trivially constant: a different geometry gives a different vector
    c = np.asarray(f(jnp.asarray(ETHANOL_Z), jnp.asarray(R * 1.1)))
    assert np.abs(a - c).max() > 1e-3


def test_padding_does_not_change_values(x64):
    Zp = np.concatenate([ETHANOL_Z, [0, 0, 0]])
    Rp = np.concatenate([ETHANOL_R, np.zeros((3, 3))])
    bags = bag_sizes(ETHANOL_Z[None])
    a = bag_of_bonds(jnp.asarray(ETHANOL_Z[None]), jnp.asarray(ETHANOL_R[None]), bags)
    b = bag_of_bonds(jnp.asarray(Zp[None]), jnp.asarray(Rp[None]), bags)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    cm = np.asarray(sorted_coulomb_matrix(jnp.asarray(Zp), jnp.asarray(Rp)))
    M = np.zeros((12, 12))
    M[:9, :9] = np.asarray(coulomb_matrix(jnp.asarray(ETHANOL_Z), jnp.asarray(ETHANOL_R)))
    assert cm.shape == (78,) and np.isclose(np.sort(cm)[::-1][: 45].sum(), np.sort(M[np.triu_indices(12)])[::-1][:45].sum())


def test_bob_layout_rejects_molecules_that_do_not_fit():
    bags = bag_sizes(ETHANOL_Z[None])
    with pytest.raises(DataError, match="element N is not in the bag-of-bonds layout"):
        check_fits(np.array([[7, 1, 1, 1]]), bags)
    with pytest.raises(DataError, match="3 O atoms"):
        check_fits(np.array([[8, 8, 8, 1]]), bags)
