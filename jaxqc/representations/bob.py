"""Bag of bonds (Hansen et al. 2015): Coulomb-matrix entries grouped into bags per element pair.

Each bag holds the entries Z_a Z_b / |r_i - r_j| of one element pair (a <= b), and the diagonal bag of
element a holds 0.5 Z_a^2.4 once per atom of a; entries are sorted in descending order and padded with
zeros to the bag's size, which is the largest count in the data set (saved with any model). The result
is invariant to atom order, rotation and translation.
"""
from __future__ import annotations

from itertools import combinations_with_replacement

import jax
import jax.numpy as jnp
import numpy as np

from ..elements import symbol
from ..errors import DataError
from .coulomb import coulomb_matrix

Bags = tuple  # ((z_a, z_b, size), ...) with z_a == z_b == -z for the diagonal bag of element z


def bag_sizes(Z) -> Bags:
    """Bag layout from padded atomic numbers Z [M, A]: every element's diagonal bag and every pair bag,
    sized to the largest count in the data (a fixed, saved layout)."""
    Z = np.asarray(Z)
    elements = [int(z) for z in np.unique(Z) if z > 0]
    counts = {z: (Z == z).sum(-1) for z in elements}  # [M] per element
    bags = []
    for z in elements:
        bags.append((-z, -z, int(counts[z].max())))
    for a, b in combinations_with_replacement(elements, 2):
        n = counts[a] * (counts[a] - 1) // 2 if a == b else counts[a] * counts[b]
        if n.max() > 0:
            bags.append((a, b, int(n.max())))
    return tuple(bags)


def check_fits(Z, bags: Bags, source: str = "") -> None:
    """DataError if a molecule has an element or more atoms of a pair than the layout holds."""
    Z = np.asarray(Z)
    size = {(a, b): s for a, b, s in bags}
    known = {-a for a, _, _ in bags if a < 0}
    extra = set(np.unique(Z[Z > 0]).tolist()) - known
    if extra:
        raise DataError(f"{source}element {symbol(min(extra))} is not in the bag-of-bonds layout "
                        f"(trained on {' '.join(symbol(z) for z in sorted(known))})")
    for z in known:
        n = (Z == z).sum(-1)
        if n.max() > size[(-z, -z)]:
            raise DataError(f"{source}a molecule has {n.max()} {symbol(z)} atoms; the bag-of-bonds layout holds "
                            f"{size[(-z, -z)]}")


def bag_of_bonds(Z, R, bags: Bags):
    """[..., D] bag-of-bonds vectors of padded molecules (`bags` static, from `bag_sizes`)."""
    M = coulomb_matrix(Z, R)  # [..., A, A]
    A = Z.shape[-1]
    upper = jnp.triu(jnp.ones((A, A), bool), k=1)
    diag = jnp.diagonal(M, axis1=-2, axis2=-1)  # [..., A]
    out = []
    for a, b, size in bags:
        if a < 0:
            vals = jnp.where(Z == -a, diag, 0.0)
        else:
            sel = (Z[..., :, None] == a) & (Z[..., None, :] == b)
            if a == b:
                sel = sel & upper
            vals = jnp.where(sel, M, 0.0).reshape(*M.shape[:-2], A * A)
        k = min(size, vals.shape[-1])
        top = jax.lax.top_k(vals, k)[0]  # descending; entries are > 0, non-members are 0
        if k < size:
            top = jnp.concatenate([top, jnp.zeros((*top.shape[:-1], size - k), top.dtype)], axis=-1)
        out.append(top)
    return jnp.concatenate(out, axis=-1)


bag_of_bonds_jit = jax.jit(bag_of_bonds, static_argnames=("bags",))
