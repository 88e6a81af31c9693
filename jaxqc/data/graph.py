"""Neighbour lists for molecules: dense all-pairs with masks, and sparse padded edge lists.

Molecules are small (QM9: <= 29 atoms, MD17: <= 21), so the dense form is often fastest. The sparse
form has a fixed edge capacity (a padding budget): it is built under jit with `jnp.nonzero(size=...)`
and returns an overflow flag, to be checked outside the compiled code (jax-md's pattern).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def safe_sqrt(q):
    """sqrt(q) for q >= 0 with a zero (not NaN) gradient at q = 0 (double-where)."""
    ok = q > 0
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, q, 1.0)), 0.0)


def safe_norm(x, axis=-1, keepdims=False):
    """|x| with a finite gradient at x = 0: zero vectors give 0 and a zero gradient."""
    return safe_sqrt(jnp.sum(x * x, axis=axis, keepdims=keepdims))


class DensePairs(NamedTuple):
    """All atom pairs of a padded batch."""

    vec: jnp.ndarray  # [..., A, A, 3]  r_j - r_i in Å
    dist: jnp.ndarray  # [..., A, A]    |r_j - r_i| in Å (0 on the diagonal and for padding)
    mask: jnp.ndarray  # [..., A, A]    True for real pairs i != j within the cutoff


def dense_pairs(R, mask, cutoff_ang: float | None = None) -> DensePairs:
    """Dense neighbour 'list': R [..., A, 3] Å, mask [..., A] bool -> DensePairs."""
    vec = R[..., None, :, :] - R[..., :, None, :]  # [..., A, A, 3]
    dist = safe_norm(vec)
    n = R.shape[-2]
    pair = mask[..., :, None] & mask[..., None, :] & ~jnp.eye(n, dtype=bool)
    if cutoff_ang is not None:
        pair = pair & (dist < cutoff_ang)
    return DensePairs(vec, jnp.where(pair, dist, 0.0), pair)


class Edges(NamedTuple):
    """A padded edge list over a batch flattened to [B * A] atoms (edge e: senders[e] -> receivers[e])."""

    senders: jnp.ndarray  # [n_edges] int32 flat atom index (b * A + j), padding -> 0
    receivers: jnp.ndarray  # [n_edges] int32 flat atom index (b * A + i), padding -> 0
    mask: jnp.ndarray  # [n_edges] bool   True for real edges
    n_real: jnp.ndarray  # [] int32  number of edges found (may exceed the capacity)

    @property
    def overflow(self):
        return self.n_real > self.senders.shape[0]


def sparse_edges(R, mask, cutoff_ang: float, max_edges: int) -> Edges:
    """Directed edges between atoms of the same molecule closer than `cutoff_ang`, padded to
    `max_edges`. Jit-able with static `max_edges`; check `edges.overflow` outside jit."""
    pairs = dense_pairs(R, mask, cutoff_ang)
    B, A = mask.shape
    b, i, j = jnp.nonzero(pairs.mask, size=max_edges, fill_value=0)
    real = jnp.arange(max_edges) < pairs.mask.sum()
    return Edges(senders=(b * A + j).astype(jnp.int32), receivers=(b * A + i).astype(jnp.int32),
                 mask=real, n_real=pairs.mask.sum().astype(jnp.int32))


def edge_budget(n_edges_max: int, multiple: int = 64) -> int:
    """Round an edge count up to a padding budget (a multiple of 64)."""
    return max(multiple, int(math.ceil(n_edges_max / multiple) * multiple))


def count_edges(R: np.ndarray, mask: np.ndarray, cutoff_ang: float) -> np.ndarray:
    """Host-side number of directed edges per molecule within the cutoff (for choosing budgets)."""
    d = np.linalg.norm(R[:, :, None] - R[:, None], axis=-1)
    ok = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool) & (d < cutoff_ang)
    return ok.sum((1, 2))


def edge_vectors(R_flat, edges: Edges):
    """r_sender - r_receiver for each edge ([n_edges, 3], Å) with padding edges set to 0."""
    v = R_flat[edges.senders] - R_flat[edges.receivers]
    return jnp.where(edges.mask[:, None], v, 0.0)


sparse_edges_jit = jax.jit(sparse_edges, static_argnames=("max_edges",))
