"""Neighbour lists for molecules: dense all-pairs with masks, and padded edge lists.

Molecules are small (QM9: <= 29 atoms, MD17: <= 21), so the dense form is often fastest. Two padded
edge lists with fixed budgets (so nothing recompiles within a batch shape):
- `EdgeList`, built on the host in numpy by `edge_list` (what batches carry, `Molecules.edges`): edges
  per molecule [B, budget] with indices inside the molecule; an overflow raises EdgeOverflow at once;
- `Edges`, built under jit with `jnp.nonzero(size=...)` over the flattened batch, with an overflow flag
  to be checked outside the compiled code (jax-md's pattern).
"""
from __future__ import annotations

import math
from typing import NamedTuple

from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..errors import DataError


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


# ---- host-side edge lists that batches carry -------------------------------------------------------
class EdgeOverflow(DataError):
    """A molecule has more edges within the cutoff than the edge budget of its batch shape."""


@flax.struct.dataclass
class EdgeList:
    """Directed edges j -> i (sender j, receiver i) of every molecule of a padded batch, i != j and
    |r_j - r_i| < cutoff_ang, padded to a fixed budget per molecule. Indices are atom positions inside
    their molecule, so every array keeps the batch axis first: data-parallel sharding of a batch along
    its molecules splits the edges with them, and the budget of a bucket is one number that the data
    bounds (the most edges any of its molecules has). Real edges come first, sorted by receiver.

    senders   [B, E] int32  j (padding: 0)
    receivers [B, E] int32  i, non-decreasing within a molecule (padding: A - 1, keeping the order)
    mask      [B, E] bool   True for real edges
    shifts    [B, E, 3] Å or None  added to r_j - r_i (periodic images; None for molecules)
    cutoff_ang              the cutoff the list was built with (static: part of the jit cache key)
    """

    senders: jnp.ndarray
    receivers: jnp.ndarray
    mask: jnp.ndarray
    shifts: Optional[jnp.ndarray] = None
    cutoff_ang: Optional[float] = flax.struct.field(pytree_node=False, default=None)

    @property
    def budget(self) -> int:
        return self.senders.shape[-1]


def pairs_within_cutoff(R: np.ndarray, mask: np.ndarray, cutoff_ang: Optional[float]) -> np.ndarray:
    """[B, A, A] bool: real pairs i != j closer than cutoff_ang (all real pairs for None); float64."""
    R = np.asarray(R, np.float64)
    ok = mask[:, :, None] & mask[:, None, :] & ~np.eye(mask.shape[1], dtype=bool)
    if cutoff_ang is not None:
        ok &= np.sum((R[:, :, None] - R[:, None]) ** 2, -1) < cutoff_ang ** 2
    return ok


def molecule_edge_budget(n_edges_max: int, n_atoms: int, multiple: int = 8) -> int:
    """Per-molecule edge budget: the largest edge count rounded up to `multiple`, at most A(A - 1)."""
    return max(1, min(n_atoms * (n_atoms - 1), int(math.ceil(n_edges_max / multiple) * multiple)))


def edge_list(R, mask, cutoff_ang: Optional[float], budget: int) -> EdgeList:
    """Host-side (numpy) padded EdgeList of a batch R [B, A, 3] Å, mask [B, A]; raises EdgeOverflow,
    naming the molecule, when one has more than `budget` edges (never drops edges)."""
    mask = np.asarray(mask, bool)
    ok = pairs_within_cutoff(R, mask, cutoff_ang)  # [B, A, A]
    B, A = mask.shape
    n = ok.sum((1, 2))  # [B] edges per molecule
    if n.size and n.max() > budget:
        m = int(np.argmax(n))
        raise EdgeOverflow(f"molecule {m} of the batch has {int(n[m])} edges within {cutoff_ang} Å, more than "
                           f"the edge budget of {budget} per molecule ({A}-atom bucket); build the budgets "
                           "from data that include it (molecules.edge_budgets)")
    b, i, j = np.nonzero(ok)  # row-major: by molecule, then receiver i
    slot = np.arange(len(b)) - np.concatenate([[0], np.cumsum(n)[:-1]])[b]  # position inside the molecule
    senders = np.zeros((B, budget), np.int32)
    receivers = np.full((B, budget), max(A - 1, 0), np.int32)
    emask = np.zeros((B, budget), bool)
    senders[b, slot], receivers[b, slot], emask[b, slot] = j, i, True
    return EdgeList(senders=jnp.asarray(senders), receivers=jnp.asarray(receivers), mask=jnp.asarray(emask),
                    cutoff_ang=cutoff_ang)


def all_pair_edges(mask, cutoff_ang: Optional[float] = None) -> EdgeList:
    """Every ordered pair i != j of the A atom slots as an EdgeList [B, A(A - 1)] (jit-able: the indices are
    static, the mask follows `mask` [B, A]); for callers without edges. cutoff_ang is only recorded: the
    network's own cutoff function zeroes pairs beyond it."""
    B, A = mask.shape
    i, j = np.nonzero(~np.eye(A, dtype=bool))
    emask = mask[:, i] & mask[:, j]
    rep = lambda x: jnp.broadcast_to(jnp.asarray(x, jnp.int32), (B, len(i)))  # noqa: E731
    return EdgeList(senders=rep(j), receivers=rep(i), mask=emask, cutoff_ang=cutoff_ang)


def edges_within(mask, edges: Optional[EdgeList], cutoff_ang: float) -> EdgeList:
    """The edges a network with this cutoff runs on: the batch's own (refused when built within a smaller
    cutoff: pairs the network needs would be missing), or every pair of the atom slots when it has none."""
    if edges is None:
        return all_pair_edges(mask, cutoff_ang)
    if edges.cutoff_ang is not None and edges.cutoff_ang < cutoff_ang:
        raise ValueError(f"edges built within {edges.cutoff_ang} Å, less than the cutoff {cutoff_ang} Å")
    return edges


def flat_edges(edges: EdgeList, n_atoms: int):
    """(senders [B E], receivers [B E], mask [B E]) as indices into the batch flattened to [B * A] atoms
    (b * A + index); receivers stay sorted, so segment sums can say indices_are_sorted."""
    offset = (jnp.arange(edges.senders.shape[0], dtype=jnp.int32) * n_atoms)[:, None]
    return ((edges.senders + offset).reshape(-1), (edges.receivers + offset).reshape(-1), edges.mask.reshape(-1))


def edge_geometry(R, edges: EdgeList):
    """(vec [B E, 3] = r_j - r_i (+ shift) Å, dist [B E] Å) of the flattened edges of R [B, A, 3]; padding
    edges get vec 0 and dist 0 with a zero gradient (safe_norm)."""
    B, A = R.shape[:2]
    s, r, m = flat_edges(edges, A)
    flat = R.reshape(B * A, 3)
    vec = flat[s] - flat[r]
    if edges.shifts is not None:
        vec = vec + edges.shifts.reshape(-1, 3)
    vec = jnp.where(m[:, None], vec, 0.0)
    return vec, safe_norm(vec)
