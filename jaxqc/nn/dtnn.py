"""DTNN, the deep tensor neural network (Schütt et al. 2017).

Atom coefficients c_i start as element embeddings and are refined T times by pairwise interactions
    v_ij = tanh(W_fc [(W_cf c_j + b_cf) * (W_df g(d_ij) + b_df)]),   c_i <- c_i + sum_{j != i} v_ij,
a factorised interaction tensor with g a Gaussian expansion of the distance (0..20 Å, 0.2 Å spacing, all
pairs, as published). Readout o_i = W_2 tanh(W_1 c_i + b_1) + b_2; the energy is
sum_i (scale o_i + shift + E_ref[Z_i]) (layers.atomwise_sum). Forces are -jax.grad of the energy.
config.pair_list = "edges" runs the same network (same parameters) on the batch's edge list (segment sums
over receivers); dense stays the default (all pairs, as published, so an edge list saves nothing).
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from ..data.graph import EdgeList, all_pair_edges, edge_geometry, flat_edges
from .layers import MLP, gaussian_rbf, pair_geometry


@dataclasses.dataclass(frozen=True)
class DTNNConfig:
    """DTNN hyperparameters (Schütt 2017; sizes as in schnetpack's DTNN: 30 basis, 60 factors, T = 3)."""

    features: int = 30          # atom coefficient size
    factors: int = 60           # width of the factorised interaction tensor
    interactions: int = 3       # refinements T
    rbf_stop_ang: float = 20.0  # Gaussian expansion of distances on [0, 20] Å
    n_rbf: int = 101            # 0.2 Å spacing
    cutoff_ang: float | None = None  # None: every pair of the molecule, as published
    readout_hidden: int = 15
    max_z: int = 100
    readout: str = "sum"
    pair_list: str = "dense"    # dense (all pairs [B, A, A]) | edges (the batch's edge list, segment sums)


class DTNN(nn.Module):
    """y [B, A] per-atom outputs of a padded batch (Z [B, A] int, R [B, A, 3] Å, mask [B, A]); `edges`
    (graph.EdgeList, None: every pair) is used when config.pair_list == "edges"."""

    config: DTNNConfig

    @nn.compact
    def __call__(self, Z, R, mask, edges: EdgeList | None = None):
        c = self.config
        B, A = mask.shape
        if c.pair_list == "edges":
            edges = all_pair_edges(mask) if edges is None else edges
            _, d = edge_geometry(R, edges)  # [n_edges] Å
            senders, receivers, pair = flat_edges(edges, A)
            if c.cutoff_ang is not None:
                pair = pair & (d < c.cutoff_ang)
        else:
            d, pair = pair_geometry(R, mask, c.cutoff_ang)  # [B, A, A]
        g = gaussian_rbf(d, 0.0, c.rbf_stop_ang, c.n_rbf)  # [B, A, A, n_rbf] or [n_edges, n_rbf]
        x = nn.Embed(c.max_z + 1, c.features, name="embedding")(Z)  # [B, A, F]
        for t in range(c.interactions):
            cf = nn.Dense(c.factors, name=f"cf_{t}")(x)  # [B, A, H]: neighbour j
            df = nn.Dense(c.factors, name=f"df_{t}")(g)  # [B, A, A, H] or [n_edges, H]
            fc = nn.Dense(c.features, use_bias=False, name=f"fc_{t}")
            if c.pair_list == "edges":
                v = jnp.where(pair[:, None], jnp.tanh(fc(cf.reshape(B * A, -1)[senders] * df)), 0.0)  # [n_edges, F]
                x = x + jax.ops.segment_sum(v, receivers, B * A, indices_are_sorted=True).reshape(x.shape)
            else:
                v = jnp.tanh(fc(cf[:, None, :, :] * df))  # [B, A, A, F]
                x = x + jnp.sum(jnp.where(pair[..., None], v, 0.0), axis=2)
        return MLP((c.readout_hidden, 1), activation="tanh", name="readout")(x)[..., 0]
