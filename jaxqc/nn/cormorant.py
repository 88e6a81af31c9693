"""Cormorant (Anderson, Hy & Kondor 2019): covariant Clebsch–Gordan networks, with e3nn-jax irreps.

Every atom carries spherical-tensor features F_i (an e3nn.IrrepsArray: `channels` copies of each
irrep l <= l_max), like the multipoles of a charge distribution. A CG level s maps F^{s-1} to F^s:

  edge scalars   G^s_ij[l1, c] = fcut(r_ij) * Linear(G^{s-1}_ij, <F^{s-1}_i, F^{s-1}_j>, rad^s(r_ij))
  aggregate      A_i   = sum_j (G^s_ij * Y(r_ij / |r_ij|)) (x)_cg F^{s-1}_j
  square         S_i   = F^{s-1}_i (x)_cg F^{s-1}_i
  mix            F^s_i = W^s (F^{s-1}_i + S_i + A_i)     (per irrep: channel mixing only)

(x)_cg is the Clebsch–Gordan product (all channel pairs, outputs kept up to l_max); Y are the real
spherical harmonics; <.,.> are the per-channel dot products of the features of atoms i and j; rad^s are
learned functions of the distance. The CG product is the only non-linearity on covariant features, so
every F^s rotates with the Wigner-D matrices of a rotation. The readout takes the scalars (0e) of every
level per atom, an MLP gives y_i, and the energy is sum_i (scale y_i + shift + E_ref[Z_i])
(layers.atomwise_sum). Forces are -jax.grad of the energy.

Two exact implementations of the aggregation (config.cg_product; the faster is the default, see
experiments/cormorant_profile.py): "e3nn" forms e3nn.tensor_product for every pair (i, j) and sums over j;
"fused" uses bilinearity: the Clebsch–Gordan coefficients go onto the atoms first and one batched GEMM
per path sums over neighbours and edge components together,
    F'_j[x, d, z] = sum_y CG[x, y, z] F_j[d, y],   A_i[c, d, z] = sum_{j, x} E_ij[c, x] F'_j[x, d, z],
so no [B, A, A, channels^2, ...] tensor exists, and, laid out so, XLA:CPU transposes no per-atom
channels^2 tensor either (the form before this one summed E_ij F_j first: this aggregation is 2-4x
faster alone on 32 x 18 atoms, the QM9 train step 1.33x and 1.36x in two runs; experiments/graph_batches.py).
config.pair_list = "edges" runs on the batch's edge list instead (graph.EdgeList; per-edge messages
E_e[c, x] F'_j[x, d, z], a batched GEMM per edge, summed onto the receivers); the same parameters and
function (tests).
Where the QM9 train step's time goes (channels 8, 3 levels, l_max 2, 32 x 29 atoms; XLA per-op trace): the
aggregation GEMMs are ~10%; the rest is memory-bound copies: the concatenation for the mix (~15%), the E
layouts and their gradients (~20%), the per-atom square via e3nn.tensor_product (~10%), the radial MLP and
edge scalars on all A^2 pairs (~15-20%). Folding the mix weights into the CG products (one GEMM per level,
no concatenation) was exact but no faster: building the per-atom [dim E, dim out] matrices costs what it saves.

Deviations from the published model (and why):
- O(3) irreps: e3nn-jax labels irreps with a parity. parity="natural" (default) keeps l with parity (-1)^l,
  so every l has tau channels as in the published SO(3) network, and CG outputs of the other parity (the
  cross product 1o x 1o -> 1e, pseudoscalars) are dropped; parity="both" keeps an even and an odd copy of
  every l (the SO(3) network's full content, at 2x the channels and 1.8-2.2x the training-step time:
  experiments/cormorant_profile.py). Either way the readout uses the true scalars 0e, so energies are
  invariant under inversion as well as rotation (physics requires it; an SO(3) Cormorant could tell
  mirror images apart).
- Cutoff and radial functions: a smooth cosine cutoff at 5 Å (as SchNet here) instead of Cormorant's
  learnable sigmoid mask at 1.73 Å, and a small MLP on Gaussian distances instead of the r^-n sin/cos
  basis: smooth forces, and the comparison with SchNet differs only in the architecture.
- Stability: the aggregate is divided by a fixed `neighbour_norm` and every level's output by the
  root-mean-square of its features (an invariant, so covariance is kept), where Cormorant tuned a
  per-level gain; without it the repeated squares overflow float32 after 4 levels on 29-atom molecules.
- Readout: a per-atom MLP on the scalars, summed over atoms (extensive), where the reference code sums the
  scalars over atoms and applies a linear layer.
"""
from __future__ import annotations

import dataclasses
import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..data.graph import EdgeList, dense_pairs, edge_geometry, edges_within, flat_edges, safe_norm
from .layers import MLP, cosine_cutoff, gaussian_rbf


@dataclasses.dataclass(frozen=True)
class CormorantConfig:
    """Cormorant hyperparameters: 4 CG levels and 10 channels per irrep as in the reference code's QM9 and
    MD17 runs, l_max = 2 as published; deviations in the module docstring."""

    cg_levels: int = 4           # CG levels s = 1..S
    channels: int = 10           # tau: copies of each irrep after mixing
    l_max: int = 2               # largest l of features and spherical harmonics
    parity: str = "natural"      # natural ((-1)^l only: tau per l, as published) | both (every l even and odd)
    cutoff_ang: float = 5.0      # smooth cosine cutoff, Å
    n_rbf: int = 20              # Gaussians on [0, cutoff] for the radial functions
    radial_hidden: int = 32      # hidden width of the radial MLP of each level
    neighbour_norm: float = 8.0  # the aggregate is divided by this (about the neighbours within 5 Å in QM9 / 2)
    readout_hidden: int = 64
    cg_product: str = "fused"    # fused | e3nn: two exact forms of the aggregation (module docstring)
    pair_list: str = "dense"     # dense (all pairs [B, A, A]) | edges (the batch's edge list, segment sums)
    max_z: int = 100
    readout: str = "sum"         # sum (extensive) | mean (intensive)


def feature_irreps(config: CormorantConfig) -> e3nn.Irreps:
    """tau x (0e + 0o + 1o + 1e + ...) up to l_max (parity 'both'), or tau x (0e + 1o + 2e ...)."""
    if config.parity not in ("both", "natural"):
        raise ValueError(f"parity must be 'both' or 'natural', not {config.parity!r}")
    irs = []
    for l in range(config.l_max + 1):
        natural = (-1) ** l
        irs.append(e3nn.Irrep(l, natural))
        if config.parity == "both":
            irs.append(e3nn.Irrep(l, -natural))
    return e3nn.Irreps([(config.channels, ir) for ir in irs])


def sh_irreps(l_max: int) -> e3nn.Irreps:
    return e3nn.Irreps([(1, (l, (-1) ** l)) for l in range(l_max + 1)])


def bond_harmonics(vec, pair, l_max: int) -> e3nn.IrrepsArray:
    """[B, A, A, (l_max + 1)^2] real spherical harmonics (component normalisation) of the unit bond vectors
    r_ij / |r_ij| (vec [B, A, A, 3] = r_j - r_i); non-pairs (i = j, padding) use a fixed dummy direction, so
    gradients stay finite."""
    safe = jnp.where(pair[..., None], vec, jnp.array([1.0, 0.0, 0.0], vec.dtype))
    unit = safe / safe_norm(safe, keepdims=True)
    return e3nn.spherical_harmonics(sh_irreps(l_max), unit, normalize=False, normalization="component")


def _allowed(ir: e3nn.Irrep, allowed: e3nn.Irreps) -> bool:
    return any(ir == mul_ir.ir for mul_ir in allowed)


def aggregate_e3nn(E: e3nn.IrrepsArray, F: e3nn.IrrepsArray, allowed: e3nn.Irreps) -> e3nn.IrrepsArray:
    """sum_j E_ij (x)_cg F_j with e3nn.tensor_product on every pair: E [B, A, A, .], F [B, A, .]."""
    tp = e3nn.tensor_product(E, F[:, None, :, :], filter_ir_out=[m.ir for m in allowed], regroup_output=False)
    return e3nn.sum(tp, axis=2)


def _paths(E: e3nn.IrrepsArray, F: e3nn.IrrepsArray, allowed: e3nn.Irreps):
    """(l1 chunk, l2 chunk, output irrep) in e3nn.tensor_product's order (E's irreps major), allowed outputs only."""
    for k1, (_, ir1) in enumerate(E.irreps):
        for k2, (_, ir2) in enumerate(F.irreps):
            for ir in ir1 * ir2:
                if _allowed(ir, allowed):
                    yield k1, k2, ir


def _cg(l1: int, l2: int, l: int, dtype) -> jnp.ndarray:
    """[2l1+1, 2l2+1, 2l+1] Clebsch–Gordan coefficients with e3nn's component normalisation."""
    return jnp.asarray(math.sqrt(2 * l + 1) * np.asarray(e3nn.clebsch_gordan(l1, l2, l)), dtype)


def aggregate_fused(E: e3nn.IrrepsArray, F: e3nn.IrrepsArray, allowed: e3nn.Irreps) -> e3nn.IrrepsArray:
    """The same as aggregate_e3nn (same irreps, same channel order) as GEMMs: the CG coefficients are applied
    to the atoms first, F'[b, j, x, d, z] = sum_y CG[x, y, z] F[b, j, d, y] (per atom, cheap), then one batched
    GEMM per path sums over neighbours and the edge's components together,
        A[b, i, c, d, z] = sum_{j, x} E[b, i, j, c, x] F'[b, j, x, d, z],
    with E laid out [b, i, c, j, x], so XLA:CPU transposes no [B, A, channels^2, ...] tensor (2-4x faster than
    summing the neighbours before the CG contraction, experiments/graph_batches.py)."""
    B, A = F.shape[:2]
    irreps, chunks = [], []
    for k1, k2, ir in _paths(E, F, allowed):
        (mul1, ir1), e = E.irreps[k1], E.chunks[k1]
        (mul2, ir2), f = F.irreps[k2], F.chunks[k2]
        irreps.append((mul1 * mul2, ir))
        if e is None or f is None:  # a zero input (e3nn's None chunk): a zero output, same irreps as e3nn
            chunks.append(None)
            continue
        fp = jnp.einsum("bjdy,xyz->bjxdz", f, _cg(ir1.l, ir2.l, ir.l, f.dtype))  # [B, A, 2l1+1, mul2, 2l+1]
        out = jnp.einsum("bicjx,bjxdz->bicdz", jnp.transpose(e, (0, 1, 3, 2, 4)), fp)  # [B, A, mul1, mul2, 2l+1]
        chunks.append(out.reshape(B, A, mul1 * mul2, ir.dim))
    return e3nn.from_chunks(irreps, chunks, (B, A), F.dtype)


def aggregate_edges(E: e3nn.IrrepsArray, F: e3nn.IrrepsArray, allowed: e3nn.Irreps, senders, receivers,
                    n_atoms: int) -> e3nn.IrrepsArray:
    """The aggregation on an edge list: A_i = sum_{e: j -> i} E_e (x)_cg F_j, E [n_edges, .] (zero on padding
    edges), F [n_atoms, .], senders / receivers [n_edges] (receivers sorted) -> [n_atoms, .], same irreps and
    channel order as aggregate_e3nn. Per path: F' = CG . F on the atoms, gathered to the edges, contracted
    with E_e, and summed onto the receivers (segment_sum)."""
    n_edges = E.shape[0]
    irreps, chunks = [], []
    for k1, k2, ir in _paths(E, F, allowed):
        (mul1, ir1), e = E.irreps[k1], E.chunks[k1]
        (mul2, ir2), f = F.irreps[k2], F.chunks[k2]
        irreps.append((mul1 * mul2, ir))
        if e is None or f is None:
            chunks.append(None)
            continue
        fp = jnp.einsum("jdy,xyz->jxdz", f, _cg(ir1.l, ir2.l, ir.l, f.dtype))[senders]  # [n_edges, 2l1+1, mul2, 2l+1]
        # a batched GEMM per edge, [mul1, 2l1+1] x [2l1+1, mul2 (2l+1)]: no [n_edges, mul1, 2l1+1, mul2, 2l+1] product
        msg = jnp.einsum("ecx,exq->ecq", e, fp.reshape(n_edges, ir1.dim, -1))  # [n_edges, mul1, mul2 (2l+1)]
        out = jax.ops.segment_sum(msg.reshape(n_edges, -1), receivers, n_atoms, indices_are_sorted=True)
        chunks.append(out.reshape(n_atoms, mul1 * mul2, ir.dim))
    return e3nn.from_chunks(irreps, chunks, (n_atoms,), F.dtype)


def channel_dots(F: e3nn.IrrepsArray) -> jnp.ndarray:
    """[B, A, A, n_irreps * tau] invariant dot products <F_i, F_j> per irrep and channel (mean over m)."""
    return jnp.concatenate([jnp.einsum("bicm,bjcm->bijc", f, f) / ir.dim
                            for (_, ir), f in zip(F.irreps, F.chunks) if f is not None], axis=-1)


def edge_channel_dots(F: e3nn.IrrepsArray, senders, receivers) -> jnp.ndarray:
    """[n_edges, n_irreps * tau] channel_dots <F_i, F_j> on the edges j -> i of atoms F [n_atoms, .]."""
    return jnp.concatenate([jnp.sum(f[receivers] * f[senders], -1) / ir.dim
                            for (_, ir), f in zip(F.irreps, F.chunks) if f is not None], axis=-1)


def rms_normalize(F: e3nn.IrrepsArray, mask, eps: float = 1e-3) -> e3nn.IrrepsArray:
    """F / sqrt(mean |F|^2 + eps) per atom, the mean over channels and components: an invariant scale, so
    covariance is kept; every level starts at unit size, where repeated CG squares would otherwise make the
    features vanish or overflow. Padded atoms are set to zero."""
    ms = jnp.mean(F.array ** 2, axis=-1, keepdims=True)
    return F * (mask[..., None] / jnp.sqrt(ms + eps))


class CormorantLevel(nn.Module):
    """One CG level: edge scalars, aggregate, square, concatenate, mix per irrep. Pair inputs (rbf, fcut, Y)
    are dense [B, A, A, .] or, with `edges` = (senders, receivers) into the flattened [B * A] atoms, per edge
    [n_edges, .]; the parameters are the same either way."""

    config: CormorantConfig

    @nn.compact
    def __call__(self, F, G_prev, rbf, fcut, Y, mask, edges=None):
        c = self.config
        irreps = feature_irreps(c)
        rad = MLP((c.radial_hidden, c.radial_hidden), name="radial")(rbf)  # [..., H] learned rad^s(r)
        B, A = mask.shape
        flat = None if edges is None else F.reshape((B * A, -1))  # [B * A, .]
        dots = channel_dots(F) if edges is None else edge_channel_dots(flat, *edges)
        parts = [rad, dots] + ([] if G_prev is None else [G_prev])
        G = nn.Dense((c.l_max + 1) * c.channels, name="edge_mix")(jnp.concatenate(parts, -1)) * fcut  # [..., (L+1) tau]
        pair_shape = G.shape[:-1]  # [B, A, A] or [n_edges]
        Gl = G.reshape(pair_shape + (c.l_max + 1, c.channels))
        E = e3nn.from_chunks(  # edge representations G^l_ij[c] Y^l_ij: tau x (0e + 1o + 2e ...)
            [(c.channels, ir) for _, ir in Y.irreps],
            [Gl[..., l, :, None] * y[..., 0, None, :] for l, y in enumerate(Y.chunks)], pair_shape, G.dtype)
        if edges is None:
            aggregate = {"fused": aggregate_fused, "e3nn": aggregate_e3nn}[c.cg_product]
            A_agg = aggregate(E, F, irreps)
        else:
            A_agg = aggregate_edges(E, flat, irreps, *edges, B * A).reshape((B, A, -1))
        S = e3nn.tensor_product(F, F, filter_ir_out=[m.ir for m in irreps])
        cat = e3nn.concatenate([F, S, A_agg / c.neighbour_norm], axis=-1).regroup()
        out = e3nn.flax.Linear(irreps, force_irreps_out=True, name="mix")(cat)
        return rms_normalize(out, mask), G


def dense_pair_inputs(R, mask, config: CormorantConfig):
    """(rbf [B, A, A, n_rbf], fcut [B, A, A, 1], Y [B, A, A, (l_max+1)^2]) of all pairs within the cutoff."""
    pairs = dense_pairs(R, mask, config.cutoff_ang)
    fcut = jnp.where(pairs.mask, cosine_cutoff(pairs.dist, config.cutoff_ang), 0.0)[..., None]
    return (gaussian_rbf(pairs.dist, 0.0, config.cutoff_ang, config.n_rbf), fcut,
            bond_harmonics(pairs.vec, pairs.mask, config.l_max))


def edge_pair_inputs(R, edges: EdgeList, config: CormorantConfig):
    """The same per edge of the flattened batch: rbf [n_edges, n_rbf], fcut [n_edges, 1] (zero on padding
    edges and past the cutoff), Y [n_edges, (l_max+1)^2]."""
    vec, dist = edge_geometry(R, edges)
    ok = edges.mask.reshape(-1) & (dist < config.cutoff_ang)
    fcut = jnp.where(ok, cosine_cutoff(dist, config.cutoff_ang), 0.0)[:, None]
    return gaussian_rbf(dist, 0.0, config.cutoff_ang, config.n_rbf), fcut, bond_harmonics(vec, ok, config.l_max)


class Cormorant(nn.Module):
    """y [B, A] per-atom outputs of a padded batch (Z [B, A] int, R [B, A, 3] Å, mask [B, A]); with
    return_features=True also the list of every level's IrrepsArray (for the covariance tests).
    config.pair_list = "edges" runs on `edges` (graph.EdgeList [B, budget] within at least the cutoff; None:
    every pair of the A atom slots); "dense" ignores `edges`. Same parameters both ways. Dense is the default:
    on QM9 batches (~90% of pairs within 5 Å) its GEMMs beat the per-edge messages and segment sums on
    XLA:CPU by 3.1x in the train step (11x before the per-edge GEMM; experiments/graph_batches.py); edges
    are for sparse graphs (large molecules, short cutoffs) and accelerators, not measured here."""

    config: CormorantConfig

    @nn.compact
    def __call__(self, Z, R, mask, return_features: bool = False, edges: EdgeList | None = None):
        c = self.config
        if c.pair_list not in ("dense", "edges"):
            raise ValueError(f"pair_list must be 'dense' or 'edges', not {c.pair_list!r}")
        flat = None
        if c.pair_list == "edges":
            edges = edges_within(mask, edges, c.cutoff_ang)
            rbf, fcut, Y = edge_pair_inputs(R, edges, c)
            flat = flat_edges(edges, mask.shape[1])[:2]
        else:
            rbf, fcut, Y = dense_pair_inputs(R, mask, c)
        x0 = nn.Embed(c.max_z + 1, c.channels, name="embedding")(Z) * mask[..., None]  # [B, A, tau] scalars
        F = e3nn.IrrepsArray(f"{c.channels}x0e", x0)
        G, scalars, levels = None, [x0], []
        for s in range(c.cg_levels):
            F, G = CormorantLevel(c, name=f"level_{s}")(F, G, rbf, fcut, Y, mask, flat)
            scalars.append(F.filter(keep="0e").array)
            levels.append(F)
        y = MLP((c.readout_hidden, 1), name="readout")(jnp.concatenate(scalars, -1))[..., 0]
        return (y, levels) if return_features else y
