"""MACE (Batatia et al. 2022, "MACE: Higher Order Equivariant Message Passing Neural Networks", NeurIPS):
equivariant message passing with higher-body-order messages, in e3nn-jax, registered as model family `mace`.

Per layer t (atoms i, edges j -> i within r_max, one-hot element z_i):
  radial      R_ij = MLP(Bessel_n(r_ij) u_p(r_ij / r_max))        n = 1..n_bessel, u_p MACE's polynomial envelope
  directions  Y_ij = Y^l(r_i - r_j / |.|), l <= l_max              (real spherical harmonics, component norm.)
  messages    A_i  = W_A [ sum_j R_ij * (W_up h_j (x) Y_ij) ] / avg_num_neighbors
              ((x): the channel-wise CG product, one learned radial weight per path and channel)
  product     B_i  = sum_{nu <= correlation} sum_k w^nu_{z_i, k, c} U^nu_k (A_i,c)^(x)nu
              (U^nu: the generalized CG coefficients of the symmetric nu-th power of one channel's
              0e + 1o + ... + l_max irreps, onto each output irrep: e3nn.reduced_symmetric_tensor_product_basis)
  update      h_i  = W_B B_i + W_{z_i} h_i (element-dependent skip connection)
  readout     y_i += Linear(h_i scalars)  (MLP (16 silu) on the last layer)
The hidden features are `channels` copies of 0e + 1o (+ 2e ... up to max_L); the last layer keeps only
scalars. y_i is summed over layers; the energy is sum_i (scale y_i + shift + E_ref[Z_i])
(layers.atomwise_sum, the per-element references from the training data), forces are -jax.grad of it.
Every operation is equivariant under O(3): the features of every layer rotate with the Wigner-D matrices
of a rotation with inversion (tests/test_mace.py). dtype follows R (float64 under jax x64).

The `paper` config is MACE's rMD17 setting: 256 channels (hidden irreps 256x0e + 256x1o, max_L = 1),
spherical harmonics to l_max = 3, r_max = 5.0 Å, 8 Bessel functions, polynomial envelope p = 5, 2 interaction
layers, correlation order 3, radial MLP [64, 64, 64] (SiLU), last readout MLP 16x0e, avg_num_neighbors from
the training data; trained with batch size 5, lr 0.01, EMA 0.99. Sources: Batatia et al. 2022 (arXiv
2206.07697, rMD17 experiments: 256 channels, 2 layers, correlation 3) and mace-torch's defaults
(mace/tools/arg_parser.py: max_ell 3, r_max 5.0, num_radial_basis 8, num_cutoff_basis 5, num_interactions 2,
correlation 3, radial_MLP [64, 64, 64], MLP_irreps 16x0e, gate silu). The paper also reports models with
max_L = 2 messages (256x0e + 256x1o + 256x2e): set max_L=2 for those.
The default config (`jaxqc train mace` without flags) is a smaller one for CPU: 32 channels, l_max 2.

Implementation choices (same function class as mace-torch, not its code):
- edges: the module runs on the batch's edge list (graph.EdgeList, segment sums over receivers); without
  one (edges=None, or pair_list="dense") on every pair of the atom slots, the envelope zeroing pairs past
  r_max: the same parameters and function either way.
- the product basis is evaluated on the distinct monomials A_i1 ... A_inu (i1 <= ... <= inu) of each
  channel, with U summed over the permutations of each monomial (U is symmetric): one GEMM per order; the
  monomials' factors are picked by one-hot products, not gathers (whose gradients, scatter-adds, made the
  train step 1.6x (quick config) to 1.8x (paper config) slower on XLA:CPU).
- elements: one-hot over config.elements (None: the elements of the training and validation data, set by
  fit, as MACE's z_table); an atom of another element gets a NaN energy, never a silent guess. avg_num_neighbors (None:
  the training data's mean number of neighbours within r_max, set by fit).
- edge vectors r_i - r_j (receiver minus sender) as mace-torch, so odd-l harmonics have its sign.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import e3nn_jax as e3nn
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from ..data.graph import EdgeList, edge_geometry, edges_within, flat_edges
from ..nn.cormorant import bond_harmonics, sh_irreps
from .network import network_spec
from .registry import Budget, register


@dataclasses.dataclass(frozen=True)
class MACEConfig:
    """MACE hyperparameters (defaults: a CPU-sized model; `PAPER` below: the published rMD17 ones)."""

    channels: int = 32                       # C: copies of every irrep of the hidden features
    max_L: int = 1                           # hidden features C x (0e + 1o + ... up to max_L)
    l_max: int = 2                           # spherical harmonics of the edges, and the messages' irreps
    correlation: int = 3                     # order of the product basis (body order correlation + 1)
    layers: int = 2                          # interaction + product blocks
    cutoff_ang: float = 5.0                  # r_max, Å
    n_bessel: int = 8                        # radial Bessel functions
    envelope_p: int = 5                      # polynomial envelope u_p
    radial_mlp: tuple = (64, 64, 64)         # hidden widths of the radial MLP (SiLU)
    readout_mlp: int = 16                    # hidden scalars of the last layer's readout (SiLU)
    avg_num_neighbors: float | None = None   # messages are divided by it; None: fit takes the training data's
    elements: tuple | None = None            # atomic numbers of the one-hot; None: fit takes the train + valid data's
    pair_list: str = "edges"                 # edges (the batch's edge list within r_max) | dense (every pair)
    readout: str = "sum"                     # sum (extensive) | mean (intensive)

    @property
    def max_z(self) -> int:
        """The largest atomic number the model embeds (jaxqc's checks of the data read it)."""
        return max(self.elements) if self.elements else 118


PAPER = {"channels": 256, "max_L": 1, "l_max": 3, "correlation": 3, "layers": 2, "cutoff_ang": 5.0,
         "n_bessel": 8, "envelope_p": 5, "radial_mlp": (64, 64, 64), "readout_mlp": 16}


# ---- radial embedding -----------------------------------------------------------------------------
def bessel_basis(r_ang, r_max: float, n: int):
    """[..., n] sqrt(2 / r_max) sin(k pi r / r_max) / r for k = 1..n (MACE's BesselBasis), per Å^1/2;
    r = 0 (padding edges) gives the finite limit k pi / r_max sqrt(2 / r_max)."""
    k = jnp.arange(1, n + 1, dtype=r_ang.dtype) * (jnp.pi / r_max)
    r = r_ang[..., None]
    safe = jnp.where(r > 0, r, 1.0)
    return math.sqrt(2.0 / r_max) * jnp.where(r > 0, jnp.sin(k * safe) / safe, k)


def polynomial_envelope(r_ang, r_max: float, p: int):
    """MACE's polynomial cutoff u_p(x), x = r / r_max: 1 - (p+1)(p+2)/2 x^p + p(p+2) x^(p+1) - p(p+1)/2 x^(p+2)
    for x < 1, else 0; smooth (p - 1 derivatives vanish at 0, two at r_max)."""
    x = r_ang / r_max
    u = 1 - (p + 1) * (p + 2) / 2 * x ** p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)
    return jnp.where(x < 1.0, u, 0.0)


def hidden_irreps(config: MACEConfig, last: bool) -> e3nn.Irreps:
    """C x (0e + 1o + ... + max_L) between layers; C x 0e after the last layer (only scalars are read)."""
    top = 0 if last else config.max_L
    return e3nn.Irreps([(config.channels, (l, (-1) ** l)) for l in range(top + 1)])


# ---- the product basis: symmetric powers of one channel's irreps through generalized CG coefficients ---
@functools.lru_cache(maxsize=None)
def symmetric_basis(l_max: int, nu: int, out: tuple) -> tuple:
    """(monomials [T, nu] int, {irrep: U [T, K, 2l + 1]}) of the degree-nu symmetric power of one channel
    x = 0e + 1o + ... + l_max (dimension d = (l_max + 1)^2): sum_t prod_s x[monomials[t, s]] U[t, k, m] is the
    k-th equivariant polynomial of degree nu with output irrep `ir` (component m). U is e3nn's reduced
    symmetric tensor product basis summed over the permutations of each sorted index tuple; tuples whose
    coefficients all vanish are dropped. Numpy, float64, cached."""
    irreps = sh_irreps(l_max)
    basis = e3nn.reduced_symmetric_tensor_product_basis(irreps, nu, keep_ir=[e3nn.Irrep(ir) for ir in out])
    full = np.asarray(basis.array, np.float64)  # [d] * nu + [dim out]
    tuples = np.array(list(itertools.combinations_with_replacement(range(irreps.dim), nu)), np.int64)
    mult = np.array([math.factorial(nu) / np.prod([math.factorial(c) for c in np.unique(t, return_counts=True)[1]])
                     for t in tuples])
    U = full[tuple(tuples.T)] * mult[:, None]  # [T, dim out]
    keep = np.abs(U).max(-1) > 1e-10
    tuples, U = tuples[keep], U[keep]
    per_irrep = {}
    for (mul, ir), sl in zip(basis.irreps, basis.irreps.slices()):
        per_irrep[str(ir)] = U[:, sl].reshape(len(U), mul, ir.dim)  # [T, K, m]
    return tuples, per_irrep


class SymmetricContraction(nn.Module):
    """B_c = sum_{nu <= correlation} sum_k w^nu[z, k, c] U^nu_k (A_c)^nu for every output irrep (C x out),
    from A [n, C x (0e + 1o + ... + l_max)] and the element one-hot [n, E]. Weights [E, K, C] per order and
    output irrep, initialised N(0, 1) / K as mace-torch's."""

    out: tuple            # per-channel output irreps, e.g. ("0e", "1o")
    correlation: int
    l_max: int

    @nn.compact
    def __call__(self, A: e3nn.IrrepsArray, onehot):
        n, E = onehot.shape
        x = A.mul_to_axis()  # [n, C, d]
        if x.irreps != sh_irreps(self.l_max):
            raise ValueError(f"product basis input {A.irreps}: expected C x {sh_irreps(self.l_max)}")
        x = x.array
        C = x.shape[1]
        acc = {ir: 0.0 for ir in self.out}
        for nu in range(1, self.correlation + 1):
            tuples, per_irrep = symmetric_basis(self.l_max, nu, tuple(self.out))
            mono = 1.0
            for s in range(nu):  # the s-th factor of every monomial, by a one-hot product (its gradient is a
                # product too, where a gather's would be a scatter-add, slow on XLA:CPU)
                mono = mono * (x @ jnp.asarray(np.eye(x.shape[-1])[:, tuples[:, s]], x.dtype))  # [n, C, T]
            for ir in self.out:
                if ir not in per_irrep:
                    continue
                U = per_irrep[ir]  # [T, K, m]
                T, K, m = U.shape
                W = self.param(f"w{nu}_{ir}", lambda key, shape: jax.random.normal(key, shape) / shape[1], (E, K, C))
                w = (onehot @ W.reshape(E, K * C).astype(x.dtype)).reshape(n, K, C)  # the atoms' element weights
                P = (mono @ jnp.asarray(U.reshape(T, K * m), x.dtype)).reshape(n, C, K, m)
                acc[ir] = acc[ir] + jnp.einsum("nckm,nkc->ncm", P, w)
        irs = [ir for ir in self.out if not isinstance(acc[ir], float)]
        return e3nn.from_chunks([(C, ir) for ir in irs], [acc[ir] for ir in irs], (n,), x.dtype)


class ElementLinear(nn.Module):
    """An element-dependent equivariant linear map (MACE's skip connection, a tensor product with the
    one-hot): out[ir] = sum_e onehot[n, e] x[ir] @ W_e[ir] / sqrt(C_in), for the irreps of x also in irreps_out
    (the others are zero). x [n, .], onehot [n, E]."""

    irreps_out: str

    @nn.compact
    def __call__(self, x: e3nn.IrrepsArray, onehot):
        n, E = onehot.shape
        x = x.regroup()
        chunks = []
        for mul_out, ir in e3nn.Irreps(self.irreps_out):
            i = [k for k, (_, ir_in) in enumerate(x.irreps) if ir_in == ir]
            if not i or x.chunks[i[0]] is None:
                chunks.append(None)
                continue
            f = x.chunks[i[0]]  # [n, C_in, 2l + 1]
            W = self.param(f"w_{ir}", nn.initializers.normal(1.0), (E, f.shape[1], mul_out))
            y = jnp.einsum("nid,eio->nedo", f, W.astype(f.dtype)) / math.sqrt(f.shape[1])  # every element's map
            chunks.append(jnp.einsum("ne,nedo->nod", onehot, y))
        return e3nn.from_chunks(e3nn.Irreps(self.irreps_out), chunks, (n,), onehot.dtype)


class Interaction(nn.Module):
    """Messages A_i (C x Y irreps) and the skip connection W_z h_i (`irreps_out`) of node features h [n, .].
    Edge inputs: Y [n_edges, .], radial [n_edges, n_bessel] (zero off the real edges within the cutoff);
    gather(x [n, k]) -> [n_edges, k] the senders' rows, aggregate(m [n_edges, k]) -> [n, k] the sums onto
    the receivers (pair_ops)."""

    config: MACEConfig
    irreps_out: str

    @nn.compact
    def __call__(self, h: e3nn.IrrepsArray, onehot, Y: e3nn.IrrepsArray, radial, gather, aggregate):
        c = self.config
        target = e3nn.Irreps([(c.channels, ir) for _, ir in Y.irreps])
        sc = ElementLinear(self.irreps_out, name="skip")(h, onehot)
        h_up = e3nn.flax.Linear(h.irreps, name="linear_up")(h)
        # per edge: h_j (x) Y_ij, one chunk per path (l_h, l_Y -> l), C channels each
        h_j = e3nn.IrrepsArray(h_up.irreps, gather(h_up.array))
        tp = e3nn.tensor_product(h_j, Y, filter_ir_out=[m.ir for m in target], regroup_output=False)
        n_paths = len(tp.irreps)
        w = e3nn.flax.MultiLayerPerceptron((*c.radial_mlp, n_paths * c.channels), act=jax.nn.silu,
                                           output_activation=False, name="radial")(radial)
        w = w.reshape(-1, n_paths, c.channels)  # [n_edges, paths, C]: zero off the edges (radial is zero there)
        chunks = [None if ch is None else ch * w[:, k, :, None] for k, ch in enumerate(tp.chunks)]
        msg = e3nn.from_chunks(tp.irreps, chunks, (w.shape[0],), radial.dtype)
        A = e3nn.flax.Linear(target, name="linear")(e3nn.IrrepsArray(msg.irreps, aggregate(msg.array)))
        return A / c.avg_num_neighbors, sc


def pair_ops(R, mask, edges: EdgeList | None, config: MACEConfig):
    """(vec [n_edges, 3] r_j - r_i Å, dist [n_edges] Å, ok [n_edges] real edges within the cutoff, gather,
    aggregate) of a padded batch R [B, A, 3], mask [B, A] on its edge list (None or pair_list "dense": every
    pair of the atom slots), over the flattened atoms [B * A]: gather(x [B A, k]) takes the senders' rows,
    aggregate(m [n_edges, k]) is the segment sum over the (sorted) receivers. (A dense [B, A, A] form, with a
    broadcast for the gather and a sum for the aggregation, measured 1.1x slower in the train step on
    ethanol-xtb, where every pair is within 5 Å: the scatters are not where the time goes.)"""
    B, A = mask.shape
    edges = edges_within(mask, None if config.pair_list == "dense" else edges, config.cutoff_ang)
    senders, receivers, real = flat_edges(edges, A)
    vec, dist = edge_geometry(R, edges)  # [n_edges, 3] r_j - r_i, [n_edges] Å
    gather = lambda x: x[senders]  # noqa: E731
    aggregate = lambda m: jax.ops.segment_sum(m, receivers, B * A, indices_are_sorted=True)  # noqa: E731
    return vec, dist, real & (dist < config.cutoff_ang), gather, aggregate


class MACE(nn.Module):
    """y [B, A] per-atom outputs of a padded batch (Z [B, A] int, R [B, A, 3] Å, mask [B, A]) on the batch's
    edge list (`edges`, graph.EdgeList within at least r_max; None: every pair of the atom slots);
    return_features=True also returns every layer's features [A_t, B_t, h_t] (IrrepsArrays over the
    flattened [B * A] atoms, for the equivariance tests)."""

    config: MACEConfig

    @nn.compact
    def __call__(self, Z, R, mask, return_features: bool = False, edges: EdgeList | None = None):
        c = self.config
        if c.pair_list not in ("dense", "edges"):
            raise ValueError(f"pair_list must be 'dense' or 'edges', not {c.pair_list!r}")
        if not c.elements or c.avg_num_neighbors is None:
            raise ValueError("MACEConfig.elements and avg_num_neighbors must be set (fit sets them from the "
                             "training data; see mace.resolve)")
        B, A = mask.shape
        vec, dist, ok, gather, aggregate = pair_ops(R, mask, edges, c)
        Y = bond_harmonics(-vec, ok, c.l_max)  # of r_i - r_j, as mace-torch
        radial = jnp.where(ok[:, None], bessel_basis(dist, c.cutoff_ang, c.n_bessel)
                           * polynomial_envelope(dist, c.cutoff_ang, c.envelope_p)[:, None], 0.0)  # [n_edges, n]

        table = np.full(119, -1)
        table[list(c.elements)] = np.arange(len(c.elements))
        species = jnp.asarray(table)[Z.reshape(-1)]  # [B A] index into elements, -1: padding or unknown
        onehot = (species[:, None] == jnp.arange(len(c.elements))).astype(R.dtype)  # [B A, E]
        h = e3nn.flax.Linear(f"{c.channels}x0e", name="embedding")(e3nn.IrrepsArray(f"{len(c.elements)}x0e", onehot))
        y, features = 0.0, []
        for t in range(c.layers):
            last = t == c.layers - 1
            out = hidden_irreps(c, last)
            A_t, sc = Interaction(c, str(out), name=f"interaction_{t}")(h, onehot, Y, radial, gather, aggregate)
            B_t = SymmetricContraction(tuple(str(ir) for _, ir in out), c.correlation, c.l_max,
                                       name=f"product_{t}")(A_t, onehot)
            h = e3nn.flax.Linear(out, name=f"product_linear_{t}")(B_t) + sc
            if last:
                s = e3nn.flax.Linear(f"{c.readout_mlp}x0e", name=f"readout_{t}")(h)
                s = e3nn.flax.Linear("0e", name=f"readout_out_{t}")(e3nn.scalar_activation(s, [jax.nn.silu]))
            else:
                s = e3nn.flax.Linear("0e", name=f"readout_{t}")(h)
            y = y + s.array[:, 0]
            features += [A_t, B_t, h]
        flat_mask = mask.reshape(-1)
        y = jnp.where(flat_mask, y, 0.0)
        # NaN for an atom of an element the model does not know: sqrt(-1) there, sqrt(-0) = 0 elsewhere (no NaN
        # array is ever built, so jax_debug_nans stays quiet on known elements)
        y = (y + jnp.sqrt(-(flat_mask & (species < 0)).astype(y.dtype))).reshape(B, A)
        return (y, features) if return_features else y


# ---- fit-time settings from the training data, and registration --------------------------------------
def average_neighbours(data, idx, cutoff_ang: float) -> float:
    """Mean number of neighbours within cutoff_ang per atom over data[idx] (directed edges / atoms)."""
    from ..data.molecules import edge_counts

    idx = np.asarray(idx)
    return float(edge_counts(data, idx, cutoff_ang).sum() / max(int(data.n_atoms[idx].sum()), 1))


def resolve(config: MACEConfig, data, idx, more_idx=()) -> MACEConfig:
    """config with elements (those of data[idx] and data[more_idx], e.g. the training and validation molecules:
    every molecule a fit batches) and avg_num_neighbors (over data[idx]) set where they are None."""
    idx = np.asarray(idx)
    kw = {}
    if not config.elements:
        every = np.concatenate([idx, np.asarray(more_idx, int)]).astype(int)
        kw["elements"] = tuple(sorted(int(z) for z in np.unique(data.Z[every]) if z > 0))
    if config.avg_num_neighbors is None:
        kw["avg_num_neighbors"] = round(average_neighbours(data, idx, config.cutoff_ang), 6)
    return dataclasses.replace(config, **kw) if kw else config


TINY = {"model": {"channels": 4, "l_max": 1, "layers": 1, "n_bessel": 4, "radial_mlp": (8,), "readout_mlp": 4},
        "train": {"batch_size": 20, "n_buckets": 1}}
QUICK = {"channels": 16, "l_max": 2}
# frames (compare's quick budget; its whole job must stay within 10 min on 2 cores): 16 channels train at
# ~2.7 s per epoch of 950 ethanol-xtb frames on one core (32 channels: ~6 s) and, at lr 0.01 (MACE's), reach
# validation force MAE 0.88 / 0.76 / 0.68 kcal/mol/Å after 20 / 25 / 30 epochs (50 frames)
QUICK_EPOCHS, QUICK_LR = 25, 1e-2
QUICK_EPOCHS_QM9 = 5  # to be tuned
# MACE's published rMD17 training (batch 5, lr 0.01, EMA 0.99, plateau factor 0.8 / patience 50); the
# energy/force weights of the loss stay jaxqc's (make_fit: force 1, energy 0.01): to be tuned
PAPER_TRAIN = {"batch_size": 5, "lr": 0.01, "ema_decay": 0.99, "plateau_factor": 0.8, "plateau_patience": 50,
               "patience": 100}

_SPEC = network_spec(
    "mace", MACEConfig, MACE, "MACE higher-order equivariant message passing (Batatia 2022)",
    sizes=(("channels", "channels"), ("layers", "layers"), ("l_max", "l_max")),
    flag_fields={"features": "channels", "interactions": "layers", "cutoff": "cutoff_ang", "l_max": "l_max"},
    budgets={
        ("frames", "tiny"): Budget((40,), epochs=1, options=TINY),
        ("property", "tiny"): Budget((40,), epochs=1, options=TINY),
        ("frames", "quick"): Budget((1000,), epochs=QUICK_EPOCHS, max_minutes=30.0,
                                    options={"model": QUICK, "train": {"lr": QUICK_LR}}),
        ("property", "quick"): Budget((5000,), epochs=QUICK_EPOCHS_QM9, max_minutes=30.0,
                                      options={"model": QUICK, "train": {"n_buckets": 4}}),
        ("frames", "paper"): Budget((1000,), epochs=100_000, max_minutes=24 * 60.0,
                                    options={"model": PAPER, "train": PAPER_TRAIN}),
        ("property", "paper"): Budget((110_000,), epochs=100_000, max_minutes=48 * 60.0,
                                      options={"model": PAPER, "train": {"patience": 100}}),
    })
_base_fit = _SPEC.fit


def _fit(config, data, split, key, budget, **run):
    """The network fit with elements (training and validation molecules) and avg_num_neighbors (training
    molecules) from the data, where the config leaves them None."""
    config = resolve(config, data, split["train"], split.get("valid", ()))
    return _base_fit(config, data, split, key, budget, **run)


SPEC = register(dataclasses.replace(_SPEC, fit=_fit))
