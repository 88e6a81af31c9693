"""Pure building blocks shared by the networks: activations, radial bases, cutoffs, pairs, readouts.

Everything here is a plain jnp function except the small flax modules at the end (layers with
parameters). Distances in Å; padded atoms are masked in every sum, and distances go through the
double-where `safe_norm`, so padding gives neither NaN values nor NaN gradients.
"""
from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..data.graph import dense_pairs, safe_norm

LOG2 = float(np.log(2.0))


def shifted_softplus(x):
    """ssp(x) = ln(1 + e^x) - ln 2 = ln(0.5 + 0.5 e^x): smooth, ssp(0) = 0 (SchNet's activation).
    One exp and one log (log1p is ~3x slower than log on XLA:CPU); above x = 15, where e^-x is below
    float32 resolution, ssp(x) = x - ln 2 (the double where keeps the gradient finite). Equal to the
    float64 reference to ~1e-6 absolute (tested); 1.8x faster than max(x, 0) + log1p(e^-|x|) - ln 2."""
    big = x > 15.0
    return jnp.where(big, x - LOG2, jnp.log(0.5 + 0.5 * jnp.exp(jnp.where(big, 0.0, x))))


def cosine_cutoff(d_ang, cutoff_ang: float):
    """0.5 (cos(pi d / rc) + 1) for d < rc, else 0: goes smoothly to zero at the cutoff."""
    return jnp.where(d_ang < cutoff_ang, 0.5 * (jnp.cos(jnp.pi * d_ang / cutoff_ang) + 1.0), 0.0)


def gaussian_rbf(d_ang, start_ang: float, stop_ang: float, n: int):
    """[..., n] Gaussians exp(-(d - mu_k)^2 / (2 w^2)) on n centres evenly spaced from start to stop,
    width w = the spacing (schnetpack's GaussianRBF; SchNet: 0.1 Å spacing)."""
    mu = jnp.linspace(start_ang, stop_ang, n)
    width = (stop_ang - start_ang) / max(n - 1, 1)
    return jnp.exp(-0.5 * ((d_ang[..., None] - mu) / width) ** 2)


def pair_geometry(R, mask, cutoff_ang: float | None):
    """(dist [B, A, A] Å, pair_mask [B, A, A]) of a padded batch: real pairs i != j within the cutoff."""
    pairs = dense_pairs(R, mask, cutoff_ang)
    return pairs.dist, pairs.mask


# ---- symmetric pair filters on the pairs i < j -------------------------------------------------------
# A filter that depends only on |r_ij| is symmetric, W_ij = W_ji: computing it on the P = A(A-1)/2 pairs
# i < j instead of all A^2 halves the filter network's work (SchNet's dominant cost). symmetric_sum is
# the convolution on that pair list; symmetric_to_dense / dense_to_symmetric move a pair quantity to and
# from the dense [B, A, A, F] form (zero diagonal). All have custom VJPs built from one another, so forces
# and force training (second derivatives) stay gathers: no scatter-adds, which are slow on XLA:CPU.
def upper_pairs(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) index arrays [P] of the pairs i < j of n_atoms atoms, row-major."""
    return np.triu_indices(n_atoms, k=1)


def _n_atoms_of(n_pairs: int) -> int:
    n = int(round((1 + np.sqrt(1 + 8 * n_pairs)) / 2))
    if n * (n - 1) // 2 != n_pairs:
        raise ValueError(f"{n_pairs} is not a number of pairs A(A-1)/2")
    return n


def _pair_slot(n_atoms: int) -> np.ndarray:
    """[A * A] position of the pair {i, j} in the upper list for every (i, j); P (a zero row) on the diagonal."""
    i, j = upper_pairs(n_atoms)
    slot = np.full((n_atoms, n_atoms), len(i), np.int32)
    slot[i, j] = slot[j, i] = np.arange(len(i))
    return slot.reshape(-1)


# The gathers index rows of the batch flattened with its pair (or atom-pair) axis, [B * P, F]: a gather
# along a middle axis makes XLA:CPU gather pair-major and then transpose the whole [B, A, A, F] array
# (measured: a third of SchNet's energy time).
def _pair_rows(Wp):
    """[B * P + 1, F]: the pair values of every molecule, then a zero row (the diagonal's)."""
    return jnp.concatenate([Wp.reshape(-1, Wp.shape[-1]), jnp.zeros((1, Wp.shape[-1]), Wp.dtype)])


def _to_dense(Wp):
    B, P, F = Wp.shape
    A = _n_atoms_of(P)
    return jnp.take(_pair_rows(Wp), _row_index(B, A).reshape(-1), axis=0).reshape(B, A, A, F)


def _to_pairs(G):
    B, A, _, F = G.shape
    i, j = upper_pairs(A)
    rows = G.reshape(B * A * A, F)
    base = np.arange(B)[:, None] * (A * A)
    upper, lower = (base + i * A + j).reshape(-1), (base + j * A + i).reshape(-1)
    return (jnp.take(rows, upper, axis=0) + jnp.take(rows, lower, axis=0)).reshape(B, len(i), F)


@jax.custom_vjp
def symmetric_to_dense(Wp):
    """[B, P, F] values on the pairs i < j -> [B, A, A, F] with W_ij = W_ji = Wp[pair {i, j}], W_ii = 0."""
    return _to_dense(Wp)


@jax.custom_vjp
def dense_to_symmetric(G):
    """[B, A, A, F] -> [B, P, F]: G_ij + G_ji on the pairs i < j (the transpose of symmetric_to_dense)."""
    return _to_pairs(G)


symmetric_to_dense.defvjp(lambda Wp: (_to_dense(Wp), None), lambda _, g: (dense_to_symmetric(g),))
dense_to_symmetric.defvjp(lambda G: (_to_pairs(G), None), lambda _, g: (symmetric_to_dense(g),))


def _row_index(B: int, A: int) -> np.ndarray:
    """[B, A, A] row of pair {i, j} of molecule b in a [B * P + 1, F] pair array (B * P: the zero row)."""
    P = A * (A - 1) // 2
    slot = _pair_slot(A).reshape(A, A)
    return np.where(slot == P, B * P, np.arange(B)[:, None, None] * P + slot[None])


def _sym_sum(Wp, h):
    B, A, F = h.shape
    rows, idx = _pair_rows(Wp), _row_index(B, A)
    acc = jnp.zeros_like(h)
    for j in range(A):  # unrolled (A static; an einsum here was 20x slower on XLA:CPU), columns gathered in
        acc = acc + jnp.take(rows, idx[:, :, j].reshape(-1), axis=0).reshape(B, A, F) * h[:, None, j, :]
    return acc


@jax.custom_vjp
def symmetric_sum(Wp, h):
    """[B, A, F] sum_j W_ij h_j for the symmetric W given on the pairs i < j (Wp [B, P, F], h [B, A, F]);
    the columns of W are gathered straight into the sum (no [B, A, A, F] array in the forward pass)."""
    return _sym_sum(Wp, h)


# derivatives: in h, symmetric_sum(Wp, g) (W is symmetric); in Wp, the outer product g_i h_j folded onto
# the pairs by dense_to_symmetric (measured faster here than gathering g_i h_j + g_j h_i pair by pair)
symmetric_sum.defvjp(lambda Wp, h: (_sym_sum(Wp, h), (Wp, h)),
                     lambda res, g: (dense_to_symmetric(g[:, :, None, :] * res[1][:, None, :, :]),
                                     symmetric_sum(res[0], g)))


def upper_pair_geometry(R, mask, cutoff_ang: float | None):
    """(dist [B, P] Å, pair_mask [B, P]) of the pairs i < j of a padded batch (upper_pairs order): real
    pairs within the cutoff; padding pairs get distance 0 and a zero gradient (safe_norm)."""
    i, j = upper_pairs(R.shape[1])
    dist = safe_norm(R[:, j] - R[:, i])
    pair = mask[:, i] & mask[:, j]
    if cutoff_ang is not None:
        pair = pair & (dist < cutoff_ang)
    return jnp.where(pair, dist, 0.0), pair


@jax.custom_vjp
def linear(x, W):
    """x [..., K] @ W [K, N]. Same values and derivatives as the plain product; the weight gradient is
    written as x^T g over the flattened rows, which keeps XLA:CPU from transposing g with its producers
    fused in (measured: a 350 ms SchNet energy training step became 230 ms)."""
    return x @ W


def _linear_bwd(res, g):
    x, W = res
    K, N = W.shape
    return g @ W.T, x.reshape(-1, K).T @ g.reshape(-1, N)


linear.defvjp(lambda x, W: (x @ W, (x, W)), _linear_bwd)


class Dense(nn.Module):
    """nn.Dense (same parameters, same initialisation) through `linear`."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        W = self.param("kernel", nn.initializers.lecun_normal(), (x.shape[-1], self.features), jnp.float32)
        if not self.use_bias:
            return linear(x, W)
        return linear(x, W) + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last)."""

    features: Sequence[int]
    activation: str = "ssp"  # ssp | tanh | silu

    @nn.compact
    def __call__(self, x):
        act = {"ssp": shifted_softplus, "tanh": jnp.tanh, "silu": jax.nn.silu}[self.activation]
        for k, f in enumerate(self.features):
            x = Dense(f, name=f"dense_{k}")(x)
            if k < len(self.features) - 1:
                x = act(x)
        return x


def atomwise_sum(y_atom, mask, Z, scale, shift, atom_ref):
    """E [B] = sum_i (scale * y_i + shift + ref[Z_i]) over real atoms: y_atom [B, A] network outputs,
    scale/shift from the training data (per-atom), atom_ref [max_Z + 1] per-element reference energies."""
    e = scale * y_atom + shift + atom_ref[Z]
    return jnp.sum(jnp.where(mask, e, 0.0), -1)


def atomwise_mean(y_atom, mask, scale, shift):
    """Intensive readout [B]: the mean of scale * y_i + shift over real atoms (HOMO, LUMO, gap, ...)."""
    n = jnp.maximum(jnp.sum(mask, -1), 1)
    return jnp.sum(jnp.where(mask, scale * y_atom + shift, 0.0), -1) / n
