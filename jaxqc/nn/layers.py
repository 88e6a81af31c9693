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

from ..data.graph import dense_pairs

LOG2 = float(np.log(2.0))


def shifted_softplus(x):
    """ssp(x) = ln(1 + e^x) - ln 2: smooth, ssp(0) = 0 (SchNet's activation). Written as
    max(x, 0) + ln(1 + e^-|x|): stable for any x, and on CPU 1.7x (value) and 3.5x (gradient) faster than
    jax.nn.softplus, whose logaddexp form adds checks (measured here on SchNet's [100, 18, 18, 128] filters)."""
    return jnp.maximum(x, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(x))) - LOG2


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


# ---- neighbour sums over dense pairs ------------------------------------------------------------------
# out[b, i, f] = sum_j W[b, i, j, f] h[b, j, f]. XLA on CPU lowers the einsum to a batched dot over (b, f)
# with transposes: 20x slower forward than an unrolled sum over j (A <= 29 here, static). The unrolled
# sums are wrapped in custom VJPs whose backward passes are the same two fast forms (and an outer
# product), so forces (first derivatives) and force training (second derivatives) stay fast too.
def _sum_j(W, h):  # [B, A, A, F], [B, A, F] -> [B, A, F]: sum over the neighbour axis 2
    acc = W[:, :, 0, :] * h[:, None, 0, :]
    for j in range(1, W.shape[2]):
        acc = acc + W[:, :, j, :] * h[:, None, j, :]
    return acc


def _sum_i(W, g):  # [B, A, A, F], [B, A, F] -> [B, A, F]: sum over the centre axis 1
    acc = W[:, 0, :, :] * g[:, 0, None, :]
    for i in range(1, W.shape[1]):
        acc = acc + W[:, i, :, :] * g[:, i, None, :]
    return acc


@jax.custom_vjp
def neighbour_sum(W, h):
    """[B, A, F] sum_j W[b, i, j, f] h[b, j, f] (the continuous-filter convolution over dense pairs)."""
    return _sum_j(W, h)


@jax.custom_vjp
def centre_sum(W, g):
    """[B, A, F] sum_i W[b, i, j, f] g[b, i, f] (the transpose of neighbour_sum in h)."""
    return _sum_i(W, g)


neighbour_sum.defvjp(lambda W, h: (_sum_j(W, h), (W, h)),
                     lambda res, g: (g[:, :, None, :] * res[1][:, None, :, :], centre_sum(res[0], g)))
centre_sum.defvjp(lambda W, g: (_sum_i(W, g), (W, g)),
                  lambda res, k: (res[1][:, :, None, :] * k[:, None, :, :], neighbour_sum(res[0], k)))


class MLP(nn.Module):
    """Dense layers with an activation between them (none after the last)."""

    features: Sequence[int]
    activation: str = "ssp"  # ssp | tanh | silu

    @nn.compact
    def __call__(self, x):
        act = {"ssp": shifted_softplus, "tanh": jnp.tanh, "silu": jax.nn.silu}[self.activation]
        for k, f in enumerate(self.features):
            x = nn.Dense(f, name=f"dense_{k}")(x)
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
