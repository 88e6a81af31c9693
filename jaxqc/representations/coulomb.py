"""Coulomb matrix representations (Rupp et al. 2012), pure and jit-able over padded batches.

M_ij = Z_i Z_j / |r_i - r_j| (i != j), M_ii = 0.5 Z_i^2.4, in units of e^2/Å (positions in Å).
Padding atoms (Z = 0) give zero rows and columns. Variants:
  - row-norm sorted: rows and columns permuted by descending row norm, upper triangle packed
    into a vector of length A (A + 1) / 2 (invariant to atom order, rotation, translation);
  - eigenvalue spectrum: eigenvalues sorted by descending absolute value, length A.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..data.graph import safe_norm


def coulomb_matrix(Z, R):
    """[..., A, A] Coulomb matrix of padded molecules: Z [..., A] (0 = padding), R [..., A, 3] Å."""
    Zf = Z.astype(R.dtype)
    real = Z > 0
    dist = safe_norm(R[..., :, None, :] - R[..., None, :, :])  # [..., A, A]
    A = Z.shape[-1]
    eye = jnp.eye(A, dtype=bool)
    pair = real[..., :, None] & real[..., None, :] & ~eye
    off = jnp.where(pair, Zf[..., :, None] * Zf[..., None, :] / jnp.where(pair, dist, 1.0), 0.0)
    diag = jnp.where(real, 0.5 * Zf ** 2.4, 0.0)
    return off + diag[..., None] * eye


def _upper_triangle(M):
    A = M.shape[-1]
    iu, ju = np.triu_indices(A)
    return M[..., iu, ju]


def sorted_coulomb_matrix(Z, R):
    """Row-norm sorted Coulomb matrix, packed upper triangle: [..., A (A + 1) / 2]."""
    M = coulomb_matrix(Z, R)
    order = jnp.argsort(-jnp.linalg.norm(M, axis=-1), axis=-1, stable=True)  # [..., A]
    M = jnp.take_along_axis(M, order[..., :, None], axis=-2)
    M = jnp.take_along_axis(M, order[..., None, :], axis=-1)
    return _upper_triangle(M)


def coulomb_eigenvalues(Z, R):
    """Eigenvalue spectrum of the Coulomb matrix, sorted by descending |lambda|: [..., A]."""
    ev = jnp.linalg.eigvalsh(coulomb_matrix(Z, R))
    order = jnp.argsort(-jnp.abs(ev), axis=-1, stable=True)
    return jnp.take_along_axis(ev, order, axis=-1)


sorted_coulomb_matrix_jit = jax.jit(sorted_coulomb_matrix)
coulomb_eigenvalues_jit = jax.jit(coulomb_eigenvalues)
