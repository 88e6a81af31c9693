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


def _rbf_centres(start_ang: float, stop_ang: float, n: int):
    """(centres [n] Å, width Å) of n Gaussians evenly spaced from start to stop, width = the spacing."""
    return jnp.linspace(start_ang, stop_ang, n), (stop_ang - start_ang) / max(n - 1, 1)


def gaussian_rbf(d_ang, start_ang: float, stop_ang: float, n: int):
    """[..., n] Gaussians exp(-(d - mu_k)^2 / (2 w^2)) on n centres evenly spaced from start to stop,
    width w = the spacing (schnetpack's GaussianRBF; SchNet: 0.1 Å spacing)."""
    mu, width = _rbf_centres(start_ang, stop_ang, n)
    return jnp.exp(-0.5 * ((d_ang[..., None] - mu) / width) ** 2)


def gaussian_rbf_and_slope(d_ang, start_ang: float, stop_ang: float, n: int):
    """(gaussian_rbf [..., n], its derivative in d [..., n] per Å)."""
    mu, width = _rbf_centres(start_ang, stop_ang, n)
    g = gaussian_rbf(d_ang, start_ang, stop_ang, n)
    return g, -(d_ang[..., None] - mu) / width ** 2 * g


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


KERNEL_INITS = {  # how Dense kernels are drawn (biases start at zero either way)
    "lecun_normal": nn.initializers.lecun_normal(),      # flax's default: N(0, 1/fan_in), truncated
    "xavier_uniform": nn.initializers.xavier_uniform(),  # torch / schnetpack: U(+-sqrt(6/(fan_in + fan_out)))
}


def _dense_params(module: nn.Module, fan_in: int, features: int, use_bias: bool, kernel_init: str = "lecun_normal"):
    """(kernel [fan_in, features], bias [features] or None) of `module`: nn.Dense's names and initialisation
    (kernel_init: a KERNEL_INITS key)."""
    W = module.param("kernel", KERNEL_INITS[kernel_init], (fan_in, features), jnp.float32)
    b = module.param("bias", nn.initializers.zeros, (features,), jnp.float32) if use_bias else None
    return W, b


class DenseParams(nn.Module):
    """The parameters of a Dense layer, (kernel, bias), for functions that use them directly."""

    features: int
    use_bias: bool = True
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, fan_in: int):
        return _dense_params(self, fan_in, self.features, self.use_bias, self.kernel_init)


class Dense(nn.Module):
    """nn.Dense (same parameters, same initialisation) through `linear`."""

    features: int
    use_bias: bool = True
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x):
        W, b = _dense_params(self, x.shape[-1], self.features, self.use_bias, self.kernel_init)
        return linear(x, W) if b is None else linear(x, W) + b


# ---- a radial function tabulated on a grid, evaluated by cubic Hermite interpolation ---------------------
# A SchNet filter W(d) [F] depends on one scalar, the pair distance. Evaluated on a fine grid of G
# distances (values and exact slopes, G independent of the batch) and interpolated, it costs four row
# gathers per pair instead of two dense layers and a softplus per pair (the idea of DeePMD-kit's model
# compression). The interpolant is C1, so energies stay smooth and forces, their exact gradient,
# continuous; its error is O(h^4 max|d^4W/dd^4|): 3e-8 relative in energies at h = 0.005 Å (tests).
def _at(table, k):
    return table.at[k].get(mode="promise_in_bounds")  # k is clipped to the table by the caller


def _interval_rows(values, slopes, k):
    """The four [N, F] rows of each interval: v_k, m_k, v_k+1, m_k+1."""
    return _at(values, k), _at(slopes, k), _at(values, k + 1), _at(slopes, k + 1)


@jax.custom_vjp
def interval_combine(values, slopes, k, coef):
    """[N, F] coef_0 v_k + coef_1 m_k + coef_2 v_k+1 + coef_3 m_k+1 for tables values, slopes [G, F],
    interval index k [N] uint32 (< G - 1; unsigned: no wrap-around of negative indices), coef [N, 4]."""
    return sum(coef[:, q:q + 1] * r for q, r in enumerate(_interval_rows(values, slopes, k)))


def _interval_combine_bwd(res, g):
    # written out: autodiff of gathers and slices made XLA:CPU copy and recompute per block. The tables get
    # the scatter-adds of coef_q g, the coefficients the per-row dot of g with each gathered row.
    values, slopes, k, coef = res
    G = values.shape[0]
    rows = _interval_rows(values, slopes, k)
    grad_coef = jnp.stack([jnp.sum(g * r, -1) for r in rows], -1)  # [N, 4]
    add = lambda q, at: jax.ops.segment_sum(coef[:, q:q + 1] * g, at, G)
    return add(0, k) + add(2, k + 1), add(1, k) + add(3, k + 1), None, grad_coef


interval_combine.defvjp(lambda v, m, k, c: (interval_combine(v, m, k, c), (v, m, k, c)), _interval_combine_bwd)


# [1, s, s^2, s^3, k] -> [h00(s), h10(s), h01(s), h11(s), k]: the cubic Hermite basis in power form, and
# the interval index carried along
_HERMITE = np.zeros((5, 5), np.float32)
_HERMITE[:4, :4] = [[1, 0, 0, 0], [0, 1, 0, 0], [-3, -2, 3, -1], [2, 1, -2, 1]]
_HERMITE[4, 4] = 1.0


def hermite_lookup(values, slopes, d_ang, spacing_ang: float, mask=None):
    """[..., F] the cubic Hermite interpolant at distances d_ang [...] of a function tabulated at
    d_k = k * spacing (values [G, F], slopes [G, F] times the spacing), zero where mask [...] is False;
    distances past the last grid point extrapolate the last interval (callers make the function zero there)."""
    n_int = values.shape[0] - 1
    x = d_ang.reshape(-1, 1) / spacing_ang  # [N, 1]
    k = jnp.clip(jnp.floor(jax.lax.stop_gradient(x)), 0, n_int - 1)
    s = x - k
    powers = jnp.concatenate([jnp.ones_like(s), s, s * s, s * s * s, k], -1)  # [N, 5]
    if mask is not None:
        powers = jnp.where(mask.reshape(-1, 1), powers, jnp.asarray([0.0, 0.0, 0.0, 0.0, 1.0], s.dtype))
    # a reduction, not a product: XLA:CPU stores its result once per pair, where an elementwise basis was
    # fused into (recomputed for) every feature of every pair, 3x slower (optimization_barrier is dropped)
    coef = jnp.sum(powers[:, :, None] * jnp.asarray(_HERMITE, s.dtype), axis=1)  # [N, 5]
    k = jnp.clip(coef[:, 4].astype(jnp.int32), 0, n_int - 1).astype(jnp.uint32)  # exact: k < 2^24
    k = jnp.sum(jnp.stack([k, jnp.zeros_like(k)], -1), -1)  # stored, so the lookups are plain row gathers
    out = interval_combine(values, slopes, k, coef[:, :4])
    return out.reshape(*d_ang.shape, values.shape[-1])


class FilterNetwork(nn.Module):
    """SchNet's cut-off filters W(d) = Dense(F)(ssp(Dense(F)(rbf(d)))) * fcut(d) [..., F] of pair distances
    d [...] Å, zero where `pair` [...] is False (parameters as MLP((F, F)); fcut the cosine cutoff at
    cutoff_ang, which also ends the Gaussians). grid_spacing_ang > 0: W and its exact slope are computed
    on the grid 0, h, 2h, ... past the cutoff and interpolated (hermite_lookup), when the batch has at
    least two pairs per grid point (else the grid would cost more than it saves, e.g. MD of one small
    molecule); 0: W on every distance."""

    features: int
    n_rbf: int
    cutoff_ang: float
    grid_spacing_ang: float = 0.0
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, d_ang, pair):
        W1, b1 = DenseParams(self.features, kernel_init=self.kernel_init, name="dense_0")(self.n_rbf)
        W2, b2 = DenseParams(self.features, kernel_init=self.kernel_init, name="dense_1")(self.features)
        rc, h = self.cutoff_ang, self.grid_spacing_ang
        n_grid = int(np.ceil(rc / h)) + 2 if h else 0  # grid points, to one past the cutoff
        if not h or d_ang.size < 2 * n_grid:
            rbf = gaussian_rbf(d_ang, 0.0, rc, self.n_rbf)
            fcut = jnp.where(pair, cosine_cutoff(d_ang, rc), 0.0)[..., None]
            return (linear(shifted_softplus(linear(rbf, W1) + b1), W2) + b2) * fcut
        grid = jnp.asarray(h * np.arange(n_grid), W1.dtype)  # [G] Å
        rbf, drbf = gaussian_rbf_and_slope(grid, 0.0, rc, self.n_rbf)
        z = rbf @ W1 + b1  # [G, F]
        a, da = shifted_softplus(z), jax.nn.sigmoid(z) * (drbf @ W1)  # hidden layer and its slope
        fc = cosine_cutoff(grid, rc)[:, None]  # [G, 1]
        dfc = jnp.where(grid < rc, -0.5 * jnp.pi / rc * jnp.sin(jnp.pi * grid / rc), 0.0)[:, None]  # its slope
        # W = (a W2 + b2) fc and h dW/dd = h ((da fc + a dfc) W2 + b2 dfc), each one product with [W2; b2]
        # (XLA:CPU then reads stored tables in the lookups instead of recomputing them per pair)
        W2b = jnp.concatenate([W2, b2[None]], 0)
        values = jnp.concatenate([a * fc, fc], -1) @ W2b
        slopes = jnp.concatenate([h * (da * fc + a * dfc), h * dfc], -1) @ W2b
        return hermite_lookup(values, slopes, d_ang, h, pair)


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last)."""

    features: Sequence[int]
    activation: str = "ssp"  # ssp | tanh | silu
    kernel_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x):
        act = {"ssp": shifted_softplus, "tanh": jnp.tanh, "silu": jax.nn.silu}[self.activation]
        for k, f in enumerate(self.features):
            x = Dense(f, kernel_init=self.kernel_init, name=f"dense_{k}")(x)
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
