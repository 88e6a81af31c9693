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


def _bag_index(Z, bags: Bags):
    """[..., A, A] bag number of every Coulomb-matrix entry (upper triangle incl. diagonal; len(bags)
    for entries that belong to no bag: padding and the lower triangle)."""
    A = Z.shape[-1]
    n_bags = len(bags)
    idx = jnp.full(Z.shape + (A,), n_bags, jnp.int32)
    upper = jnp.triu(jnp.ones((A, A), bool), k=1)
    zi, zj = Z[..., :, None], Z[..., None, :]
    lo, hi = jnp.minimum(zi, zj), jnp.maximum(zi, zj)
    for k, (a, b, _) in enumerate(bags):
        if a < 0:
            sel = jnp.eye(A, dtype=bool) & (zi == -a) & (zj == -a)
        else:
            sel = upper & (lo == a) & (hi == b)
        idx = jnp.where(sel, k, idx)
    return idx


def bag_of_bonds(Z, R, bags: Bags):
    """[..., D] bag-of-bonds vectors of padded molecules (`bags` static, from `bag_sizes`).

    One sort per molecule: every upper-triangle entry gets the key (bag number, -value), so after
    sorting each bag's entries are contiguous and descending; each is scattered to
    offset[bag] + (its rank within the bag)."""
    M = coulomb_matrix(Z, R)  # [..., A, A]
    A = Z.shape[-1]
    batch = M.shape[:-2]
    n_bags = len(bags)
    sizes = np.array([s for _, _, s in bags] + [0])
    offsets = np.concatenate([[0], np.cumsum(sizes)])  # [n_bags + 2]
    bag = _bag_index(Z, bags).reshape(*batch, A * A)  # [..., A*A]
    val = M.reshape(*batch, A * A)
    order = jnp.lexsort((-val, bag), axis=-1)  # by bag, then descending value
    bag_s = jnp.take_along_axis(bag, order, -1)
    val_s = jnp.take_along_axis(val, order, -1)
    first = jax.vmap(lambda b: jnp.searchsorted(b, jnp.arange(n_bags + 1)), in_axes=0)(
        bag_s.reshape(-1, A * A)).reshape(*batch, n_bags + 1)  # [..., n_bags + 1] start of each bag
    rank = jnp.arange(A * A) - jnp.take_along_axis(first, bag_s, -1)
    slot = jnp.asarray(offsets)[bag_s] + rank
    D = int(offsets[n_bags])
    keep = (bag_s < n_bags) & (rank < jnp.asarray(sizes)[bag_s])
    slot = jnp.where(keep, slot, D)  # out-of-bag entries go to a dropped extra slot
    out = jnp.zeros((*batch, D + 1), M.dtype)
    flat_out = out.reshape(-1, D + 1)
    rows = jnp.arange(flat_out.shape[0])[:, None]
    flat_out = flat_out.at[rows, slot.reshape(-1, A * A)].set(jnp.where(keep, val_s, 0.0).reshape(-1, A * A))
    return flat_out.reshape(*batch, D + 1)[..., :D]


bag_of_bonds_jit = jax.jit(bag_of_bonds, static_argnames=("bags",))
