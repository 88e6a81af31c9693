"""SchNOrb (Schütt et al., Nat. Commun. 10:5024, 2019): learn the Kohn-Sham Hamiltonian H and overlap S in an
atomic-orbital basis, and the energy, from one network; every orbital property then follows (jaxqc.orbitals).

Two variants, one config flag:
- `covariant=False`, SchNOrb as published: SchNet atom features x_i; pair features p_ij = (W x_i)(W x_j) f(r_ij);
  2 l_max SchNOrb blocks, each a network of p_ij times the Cartesian components of the pair direction u_ij, plus
  the same summed over the neighbours of i and of j, mixed into `directions` channels; a cumulative product
  over the blocks makes polynomials in u up to degree 2 l_max (4 covers every d-d block). A dense layer maps
  them to each off-site block H_ij; on-site blocks are the neighbour mean of another dense layer plus a
  per-element block. H = (H + H^T) / 2. Not rotation covariant: rotations are learned by augmentation
  (each training molecule randomly rotated, with inversion, and H, S, F rotated with jaxqc.orbitals' D).
- `covariant=True` (PhiSNet / QHNet style): MACE node features (e3nn-jax, jaxqc.models.mace) give pair irreps
  z_ij = Linear[a_i (x) a_j, (a_i + a_j) (x) Y(u_ij)], each path weighted per pair by an invariant pair network
  e_ij = MLP[rbf(r_ij), q_i q_j, q_i + q_j] of the node scalars q (`pair_mlp` wide; 0: by a radial network
  alone), which also adds a nonlinear scalar part to every 0e output (on-site: a_i (x) a_i plus a neighbour sum
  of a_j (x) Y(u_ij), and an MLP of the node scalars and sum_j e_ij, with an optional per-element one,
  `element_onsite` wide, since an O 1s and a C 1s shell share a template slot); each (l1, l2) shell block is
  sum_L CG(l1, l2, L) z_L, moved to PySCF's real spherical order. Covariant by construction:
  H(QR) = D(Q) H(R) D(Q)^T for every rotation and inversion. Its energy is MACE's.

Orbitals (energies, coefficients, HOMO/LUMO, density, dipole) come from the predicted H with the exact overlap S:
S is a one-electron integral of the basis that PySCF computes in microseconds from the geometry, and PhiSNet
and QHNet use it the same way; the predicted S (SchNOrb's second output) is reported as its own error, and
orbitals_fn falls back to it when a batch carries no S.

A physical baseline (`baseline="sad"`, both variants): the network learns H - H0, where H0 is the Kohn-Sham
matrix of PySCF's 'minao' guess density (a superposition of atomic densities; the data prop H0, one Fock build,
about 8% of an SCF's cost). H0 already holds the exact one-electron integrals, the long-range Coulomb
screening and the atoms' own shells; what is left is the density's response to bonding, short-ranged and
smaller (ethanol: |H - H0| 6,000 µHa on average, against 47,000 for the mean-H baseline). H0 rotates with D
exactly, so the covariant variant stays covariant. It is a hybrid in the review's sense: not geometry alone.

An orbital-energy loss (`eps_weight` > 0, `--eps-weight`): the mean squared error of the eigenvalues up to the
LUMO of the predicted H with the exact S, trained through their Hellmann-Feynman gradient
(orbitals.generalized_eigvalsh), as WALoss (arXiv:2502.19227, ICLR 2025) argues. An element-wise loss hardly sees the
errors that matter most for orbitals: a shift dH = c S moves every orbital energy by c, and def2-SVP's nearly
singular S (ethanol: smallest eigenvalue 0.004) turns small correlated H errors into intruder orbitals. Off by
default (SchNOrb's published loss).

Both predict the blocks in a template basis (per l, the most shells any element has); each element's AOs are
a subset of it, gathered into the molecule's AO order with per-AO index arrays (ao_index). Targets are
standardised: H = per-element mean on-site block + h_scale x network (same for S). Forces are -grad E.
Units: H in Ha, S dimensionless, E kcal/mol, F kcal/mol/Å.
"""
from __future__ import annotations

import dataclasses
import functools
import tempfile
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from .. import orbitals as orb
from ..errors import JaxqcError
from ..nn.layers import MLP, Dense, atomwise_sum, cosine_cutoff, gaussian_rbf
from .registry import Budget, Fitted, ModelSpec, register

AO_PROPS = ("ao_atom", "ao_slot", "ao_l", "ao_m", "ao_shell", "ao_mask")


@dataclasses.dataclass(frozen=True)
class SchNOrbConfig:
    """SchNOrb hyperparameters (defaults: CPU-sized). The basis (ao_shells) and elements come from the data."""

    covariant: bool = False
    features: int = 64             # SchNet atom features F (published: 1000 factors)
    interactions: int = 3          # SchNet interaction blocks (published 3)
    directions: int = 8            # direction channels per SchNOrb block (published 12)
    lmax: int = 2                  # 2 lmax SchNOrb blocks: polynomials in the pair direction up to degree 2 lmax
    cutoff_ang: float = 5.0        # published: 10 Å
    n_rbf: int = 25
    # covariant variant (MACE features)
    channels: int = 16
    mace_layers: int = 2
    correlation: int = 2
    pair_channels: int = 8         # channels of each irrep of the pair features a_i
    pair_mlp: int = 256            # width of the invariant pair network e_ij (0: the radial-only gates of models
                                   # saved before it existed, which load with 0)
    element_onsite: int = 0        # width of a per-element network adding to the on-site scalars (0: none)
    # the basis and elements, from the data (fit)
    basis: str | None = None
    ao_shells: tuple | None = None  # ((Z, (l, ...)), ...) in PySCF's AO order per element
    avg_num_neighbors: float | None = None
    # the loss: w_H MSE(H)/h_scale^2 + w_S MSE(S)/s_scale^2 + w_E MSE(E)/scale^2 + w_F MSE(F)/scale^2
    h_weight: float = 1.0
    s_weight: float = 1.0
    energy_weight: float = 0.1
    force_weight: float = 0.0
    # + w_eps MSE(eps_k, k <= LUMO)/h_scale^2: the orbital energies of the predicted H with the exact S (an
    # element-wise loss does not see errors such as dH = c S, which shift every eigenvalue by c)
    eps_weight: float = 0.0
    augment: bool = True           # random rotations in training (needed by the non-covariant variant)
    baseline: str = "none"         # "sad": learn H - H0 (the data's guess Kohn-Sham matrices; module docstring)

    @property
    def elements(self) -> tuple:
        return tuple(z for z, _ in self.ao_shells) if self.ao_shells else ()

    @property
    def max_z(self) -> int:
        return max(self.elements) if self.ao_shells else 118

    def layout(self) -> orb.AOLayout:
        if not self.ao_shells:
            raise JaxqcError("SchNOrbConfig.ao_shells is not set (fit takes it from the Hamiltonian data)")
        return orb.AOLayout(basis=str(self.basis), shells=tuple(self.ao_shells))


# ---- the template basis and per-AO index arrays ----------------------------------------------------
def template(shells: tuple) -> tuple:
    """(slots: ((l, k), ...) the template's shells, offsets {(l, k): first template AO}, T template AOs):
    per l, as many shells as the element with the most of them."""
    n_max = {}
    for _, ls in shells:
        for l in set(ls):
            n_max[l] = max(n_max.get(l, 0), ls.count(l))
    slots, offsets, o = [], {}, 0
    for l in sorted(n_max):
        for k in range(n_max[l]):
            slots.append((l, k))
            offsets[(l, k)] = o
            o += 2 * l + 1
    return tuple(slots), offsets, o


def element_ao_template(shells: tuple, z: int) -> tuple:
    """(template AO index, l, m, shell number within the atom) of every AO of element z, in PySCF order."""
    _, offsets, _ = template(shells)
    ls = dict(shells)[int(z)]
    seen, out = {}, []
    for s, l in enumerate(ls):
        k = seen.get(l, 0)
        seen[l] = k + 1
        out += [(offsets[(l, k)] + m, l, m, s) for m in range(2 * l + 1)]
    return tuple(out)


def ao_index(Z, shells: tuple, n_ao_pad: int) -> dict:
    """Per-AO index arrays [M, n_ao_pad] of molecules Z [M, A]: atom, template AO, l, m, shell (unique in
    the molecule), mask."""
    M = Z.shape[0]
    out = {k: np.zeros((M, n_ao_pad), np.int32) for k in AO_PROPS}
    for b in range(M):
        rows, shell0 = [], 0
        for i, z in enumerate(Z[b]):
            if z <= 0:
                continue
            aos = element_ao_template(shells, int(z))
            rows += [(i, t, l, m, shell0 + s, 1) for t, l, m, s in aos]
            shell0 += max(s for *_, s in aos) + 1
        if len(rows) > n_ao_pad:
            raise JaxqcError(f"molecule {b} has {len(rows)} AOs, more than the data's {n_ao_pad}")
        arr = np.asarray(rows, np.int32)
        for c, k in enumerate(AO_PROPS):
            out[k][b, :len(rows)] = arr[:, c]
    return out


def with_ao_index(data, config: SchNOrbConfig):
    """The data set with the per-AO index props (not stored in files: they follow from Z and the basis)."""
    import dataclasses as dc

    n_ao = data.props["H"].shape[-1]
    props = {**data.props, **ao_index(data.Z, tuple(config.ao_shells), n_ao)}
    return dc.replace(data, props=props)


def assemble(blocks, props):
    """[B, n, n] matrices from template blocks [B, A, A, T, T] and the batch's per-AO index props."""
    a, t, mask = props["ao_atom"], props["ao_slot"], props["ao_mask"].astype(bool)
    bi = jnp.arange(blocks.shape[0])[:, None, None]
    M = blocks[bi, a[:, :, None], a[:, None, :], t[:, :, None], t[:, None, :]]
    M = 0.5 * (M + jnp.swapaxes(M, 1, 2))
    return jnp.where(mask[:, :, None] & mask[:, None, :], M, 0.0)


def ao_rotations(Q, props):
    """[B, n, n] AO rotation D of each molecule (Q [B, 3, 3]) from the per-AO index props."""
    Dl = jnp.stack([jnp.pad(jax.vmap(lambda q, l=l: orb.wigner_d_pyscf(l, q))(Q),
                            ((0, 0), (0, 5 - (2 * l + 1)), (0, 5 - (2 * l + 1)))) for l in range(orb.L_MAX + 1)],
                   axis=1)  # [B, 3, 5, 5]
    l, m, sh, mask = props["ao_l"], props["ao_m"], props["ao_shell"], props["ao_mask"].astype(bool)
    bi = jnp.arange(Q.shape[0])[:, None, None]
    vals = Dl[bi, l[:, :, None], m[:, :, None], m[:, None, :]]
    same = (sh[:, :, None] == sh[:, None, :]) & mask[:, :, None] & mask[:, None, :]
    return jnp.where(same, vals, 0.0)


# ---- geometry of dense pairs ------------------------------------------------------------------------
def dense_geometry(R, mask, cutoff_ang):
    """(d [B, A, A] Å, u [B, A, A, 3] unit vectors r_j - r_i, pair mask i != j within the cutoff) from
    jaxqc.data.graph.dense_pairs (zero off the pairs)."""
    from ..data.graph import dense_pairs

    pairs = dense_pairs(R, mask, cutoff_ang)
    d = jnp.where(pairs.mask, pairs.dist, 1.0)
    return d, jnp.where(pairs.mask[..., None], pairs.vec / d[..., None], 0.0), pairs.mask


class SchNetFeatures(nn.Module):
    """SchNet atom features x [B, A, F] on dense pairs (jaxqc.nn.schnet's interaction, Gaussian filters)."""

    config: SchNOrbConfig

    @nn.compact
    def __call__(self, Z, d, pm):
        c = self.config
        x = nn.Embed(c.max_z + 1, c.features, embedding_init=nn.initializers.normal(1.0), name="embedding")(Z)
        rbf = gaussian_rbf(d, 0.0, c.cutoff_ang, c.n_rbf) * (cosine_cutoff(d, c.cutoff_ang) * pm)[..., None]
        for t in range(c.interactions):
            W = MLP((c.features, c.features), name=f"filter_{t}")(rbf) * pm[..., None]
            h = Dense(c.features, use_bias=False, name=f"in2f_{t}")(x)
            x = x + MLP((c.features, c.features), name=f"f2out_{t}")(jnp.einsum("bijf,bjf->bif", W, h))
        return x, rbf


class SchNOrbNet(nn.Module):
    """(y [B, A] per-atom energy outputs, H blocks [B, A, A, T, T], S blocks [B, A, A, T, T]) of SchNOrb."""

    config: SchNOrbConfig

    @nn.compact
    def __call__(self, Z, R, mask):
        c = self.config
        _, _, T = template(c.ao_shells)
        d, u, pm = dense_geometry(R, mask, c.cutoff_ang)
        x, rbf = SchNetFeatures(c, name="schnet")(Z, d, pm)
        y = MLP((c.features // 2, 1), name="readout")(x)[..., 0]
        f = Dense(c.features, name="pair_filter")(rbf)
        xa = Dense(c.features, use_bias=False, name="pair_atom")(x)
        p = xa[:, :, None, :] * xa[:, None, :, :] * f * pm[..., None]  # [B, A, A, F]
        omegas, prod = [p], None
        for k in range(2 * c.lmax):
            g = MLP((c.features, c.features), name=f"direction_{k}")(p) * pm[..., None]
            v = g[..., None, :] * u[..., :, None]                       # [B, A, A, 3, F]
            env = jnp.sum(v, axis=2)                                    # [B, A, 3, F]: sum over neighbours
            v = v + env[:, :, None] + env[:, None, :]
            w = self.param(f"mix_{k}", nn.initializers.normal(1.0 / np.sqrt(3.0)), (3, c.directions))
            om = jnp.einsum("bijcf,cd->bijfd", v, w)                   # [B, A, A, F, D]
            prod = om if prod is None else prod * om
            omegas.append(prod.reshape(*prod.shape[:3], -1))
        feat = jnp.concatenate(omegas, -1) * pm[..., None]
        n_nb = jnp.maximum(jnp.sum(pm, -1), 1)[..., None, None]
        blocks = []
        for name in ("H", "S"):
            off = Dense(T * T, name=f"{name}_offsite")(feat).reshape(*feat.shape[:3], T, T)
            on = jnp.sum(Dense(T * T, name=f"{name}_onsite")(feat).reshape(*feat.shape[:3], T, T)
                         * pm[..., None, None], axis=2) / n_nb            # [B, A, T, T]
            if name == "H":
                on = on + nn.Embed(c.max_z + 1, T * T, embedding_init=nn.initializers.zeros,
                                   name="H_element")(Z).reshape(*Z.shape, T, T)
            eye = jnp.eye(Z.shape[1], dtype=bool)[None, :, :, None, None]
            blocks.append(jnp.where(eye, on[:, :, None], off * pm[..., None, None]))
        return y, blocks[0], blocks[1]


# ---- the covariant variant ---------------------------------------------------------------------------
def block_irreps(shells: tuple) -> tuple:
    """(irreps string of the pair features the head needs, [(l1, off1, l2, off2, L, irrep index, copy)]): every
    template shell pair (l1, l2) needs one L of parity (-1)^(l1 + l2) for |l1 - l2| <= L <= l1 + l2."""
    slots, offsets, _ = template(shells)
    need, plan = {}, []
    for s1 in slots:
        for s2 in slots:
            l1, l2 = s1[0], s2[0]
            for L in range(abs(l1 - l2), l1 + l2 + 1):
                ir = (L, (-1) ** (l1 + l2))
                plan.append((l1, offsets[s1], l2, offsets[s2], ir, need.get(ir, 0)))
                need[ir] = need.get(ir, 0) + 1
    order = sorted(need, key=lambda ir: (ir[0], -ir[1]))
    irreps = "+".join(f"{need[ir]}x{ir[0]}{'e' if ir[1] == 1 else 'o'}" for ir in order)
    index = {ir: k for k, ir in enumerate(order)}
    return irreps, tuple((l1, o1, l2, o2, index[ir], n) for l1, o1, l2, o2, ir, n in plan)


@functools.lru_cache(maxsize=None)
def irreps_to_blocks(shells: tuple) -> np.ndarray:
    """[dim of block_irreps, T, T] the constant linear map from pair irreps to template blocks in PySCF's AO
    order: the (l1, l2) block of copy n of irrep L is A_l1 (sum_M CG(l1, l2, L)[:, :, M] z_M) A_l2^T. One
    matrix (one contraction in the network) instead of one small product per block: compiles in seconds."""
    import e3nn_jax as e3nn

    irreps, plan = block_irreps(shells)
    irreps = e3nn.Irreps(irreps)
    _, _, T = template(shells)
    W = np.zeros((irreps.dim, T, T))
    starts = np.concatenate([[0], np.cumsum([mul * ir.dim for mul, ir in irreps])])
    for l1, o1, l2, o2, k, n in plan:
        L = irreps[k].ir.l
        cg = np.asarray(e3nn.clebsch_gordan(l1, l2, L), np.float64)       # [2l1+1, 2l2+1, 2L+1]
        A1, A2 = orb.A_E3NN_TO_PYSCF[l1], orb.A_E3NN_TO_PYSCF[l2]
        for M in range(2 * L + 1):
            W[starts[k] + n * (2 * L + 1) + M, o1:o1 + 2 * l1 + 1, o2:o2 + 2 * l2 + 1] += A1 @ cg[:, :, M] @ A2.T
    return W


def blocks_from_irreps(z, shells: tuple):
    """Template blocks [..., T, T] in PySCF's AO order from pair irreps z (IrrepsArray of block_irreps)."""
    return jnp.einsum("...k,kab->...ab", z.array, jnp.asarray(irreps_to_blocks(shells), z.dtype))


class CovariantNet(nn.Module):
    """(y [B, A], H blocks, S blocks) of the covariant variant (module docstring)."""

    config: SchNOrbConfig

    @nn.compact
    def __call__(self, Z, R, mask):
        import e3nn_jax as e3nn

        from .mace import MACE, MACEConfig

        c = self.config
        mc = MACEConfig(channels=c.channels, max_L=2, l_max=2, correlation=c.correlation, layers=c.mace_layers,
                        cutoff_ang=c.cutoff_ang, elements=c.elements, avg_num_neighbors=c.avg_num_neighbors,
                        pair_list="dense", radial_mlp=(32, 32), readout_mlp=16)
        y, feats = MACE(mc, name="mace")(Z, R, mask, return_features=True)
        B, A = mask.shape
        node = e3nn.concatenate([feats[-4], feats[-3]]) if c.mace_layers > 1 else feats[0]   # h_(T-2), A_(T-1)
        pc = c.pair_channels
        scalars = node.filter(keep="0e").array.reshape(B, A, -1)     # [B, A, n_scalars] invariant node features
        a = e3nn.flax.Linear(f"{pc}x0e+{pc}x1o+{pc}x2e", name="pair_in")(node)
        a = e3nn.IrrepsArray(a.irreps, a.array.reshape(B, A, -1))
        d, u, pm = dense_geometry(R, mask, c.cutoff_ang)
        Y = e3nn.spherical_harmonics("0e+1o+2e", u, normalize=False, normalization="component")
        ai = e3nn.IrrepsArray(a.irreps, jnp.broadcast_to(a.array[:, :, None], (B, A, A, a.irreps.dim)))
        aj = e3nn.IrrepsArray(a.irreps, jnp.broadcast_to(a.array[:, None, :], (B, A, A, a.irreps.dim)))
        irreps_out, _ = block_irreps(c.ao_shells)
        keep = [ir for _, ir in e3nn.Irreps(irreps_out)]
        rbf = gaussian_rbf(d, 0.0, c.cutoff_ang, c.n_rbf) * (cosine_cutoff(d, c.cutoff_ang) * pm)[..., None]
        edge, width = rbf, 32
        if c.pair_mlp:
            # invariant pair network (SchNOrb's p_ij, QHNet's edge weights): e_ij = MLP[rbf, q_i q_j, q_i + q_j]
            # of the node scalars q = W s, symmetric in i, j; it weights every tensor-product path per pair
            # instead of a function of distance alone, and adds a nonlinear scalar part to each 0e output
            q = Dense(c.pair_mlp, use_bias=False, name="pair_scalars")(scalars)
            qi, qj = q[:, :, None], q[:, None, :]
            edge = MLP((c.pair_mlp, c.pair_mlp), activation="silu", name="pair_mlp")(
                jnp.concatenate([rbf, qi * qj, qi + qj], -1))   # [B, A, A, n_rbf + 2 pair_mlp]
            edge, width = edge * pm[..., None], c.pair_mlp
        # off-site: a_i (x) a_j (symmetric part: the matrix is symmetrised anyway) and (a_i + a_j) (x) Y(u_ij)
        t1 = e3nn.tensor_product(ai, aj, filter_ir_out=keep)
        t2 = e3nn.tensor_product(ai + aj, Y, filter_ir_out=keep)
        pair = e3nn.concatenate([t1, t2]).regroup()
        gate = MLP((width, pair.irreps.num_irreps), activation="silu", name="offsite_gate")(edge) * pm[..., None]
        pair = _scale_channels(pair, gate)
        # on-site: a_i (x) a_i and the neighbour sum of a_j (x) Y(u_ij), weighted by the pair network
        gate_env = MLP((width, t2.irreps.num_irreps), activation="silu", name="env_gate")(edge) * pm[..., None]
        env = _scale_channels(e3nn.tensor_product(aj, Y, filter_ir_out=keep), gate_env)
        env = e3nn.IrrepsArray(env.irreps, jnp.sum(env.array, axis=2) / c.avg_num_neighbors)
        t0 = e3nn.tensor_product(a, a, filter_ir_out=keep)
        onsite = e3nn.concatenate([t0, env]).regroup()
        n0 = e3nn.Irreps(irreps_out)[0].mul   # the 0e copies come first (block_irreps sorts by L)
        site = jnp.concatenate([scalars, jnp.sum(edge, 2) / c.avg_num_neighbors], -1)   # invariant, per atom
        blocks = []
        for name in ("H", "S"):
            zo = e3nn.flax.Linear(irreps_out, name=f"{name}_offsite")(pair)
            zs = e3nn.flax.Linear(irreps_out, name=f"{name}_onsite")(onsite)
            if c.pair_mlp:
                zo = _add_scalars(zo, n0, Dense(n0, name=f"{name}_offsite_scalar")(edge))
                zs = _add_scalars(zs, n0, MLP((c.pair_mlp, n0), activation="silu", name=f"{name}_onsite_scalar")(site))
            if c.element_onsite:
                per_element = ElementMLP(c.element_onsite, n0, c.elements, name=f"{name}_onsite_element")
                zs = _add_scalars(zs, n0, per_element(Z, site))
            off = blocks_from_irreps(zo, c.ao_shells) * pm[..., None, None]
            on = blocks_from_irreps(zs, c.ao_shells)
            eye = jnp.eye(A, dtype=bool)[None, :, :, None, None]
            blocks.append(jnp.where(eye, on[:, :, None], off))
        return y.reshape(B, A), blocks[0], blocks[1]


class ElementMLP(nn.Module):
    """y [B, A, n_out] = an MLP of x [B, A, F] with one hidden layer (`width`) and readout per element: the
    on-site scalars of an O 1s and a C 1s shell share a template slot, but need not share a function. The
    readout starts at zero, so adding it to a trained network (a warm start) changes nothing at first."""

    width: int
    n_out: int
    elements: tuple

    @nn.compact
    def __call__(self, Z, x):
        n_el = len(self.elements)
        onehot = (Z[..., None] == jnp.asarray(self.elements)).astype(x.dtype)      # [B, A, n_el]
        h = jax.nn.silu(Dense(n_el * self.width, name="hidden")(x))
        h = h.reshape(*x.shape[:-1], n_el, self.width) * onehot[..., None]           # [B, A, n_el, width]
        W = self.param("readout", nn.initializers.zeros, (n_el, self.width, self.n_out), jnp.float32)
        b = self.param("bias", nn.initializers.zeros, (n_el, self.n_out), jnp.float32)
        return jnp.einsum("baew,ewo->bao", h, W.astype(x.dtype)) + onehot @ b.astype(x.dtype)


def _add_scalars(z, n0: int, y):
    """z (IrrepsArray whose first n0 components are 0e) plus y [..., n0] on them: invariant, so covariant."""
    import e3nn_jax as e3nn

    assert z.irreps[0].ir == e3nn.Irrep("0e") and z.irreps[0].mul == n0
    return e3nn.IrrepsArray(z.irreps, z.array.at[..., :n0].add(y))


def _scale_channels(x, w):
    """x (IrrepsArray [..., dim]) with each irrep copy scaled by w [..., num_irreps]."""
    import e3nn_jax as e3nn

    chunks, k = [], 0
    for (mul, _), ch in zip(x.irreps, x.chunks):
        chunks.append(None if ch is None else ch * w[..., k:k + mul, None])
        k += mul
    return e3nn.from_chunks(x.irreps, chunks, x.shape[:-1], x.dtype)


# ---- the pure functions --------------------------------------------------------------------------
def network(config: SchNOrbConfig):
    return CovariantNet(config) if config.covariant else SchNOrbNet(config)


def predict_fn(config: SchNOrbConfig):
    """predict(params, batch) -> (E [B] kcal/mol, H [B, n, n] Ha, S [B, n, n]); the batch carries the per-AO
    index props (with_ao_index)."""
    net = network(config)

    def predict(params, batch, R=None):
        R = batch.R if R is None else R
        y, hb, sb = net.apply({"params": params["net"]}, batch.Z, R, batch.mask)
        s = params["stats"]
        E = atomwise_sum(y, batch.mask, batch.Z, s["scale"], s["shift"], s["atom_ref"])
        eye = jnp.eye(batch.Z.shape[1], dtype=bool)[None, :, :, None, None]
        hb = s["h_scale"] * hb + jnp.where(eye, s["h_onsite"][batch.Z][:, :, None], 0.0)
        sb = s["s_scale"] * sb + jnp.where(eye, s["s_onsite"][batch.Z][:, :, None], 0.0)
        H = assemble(hb, batch.props)
        if config.baseline == "sad":
            H = H + batch.props["H0"]
        return E, H, assemble(sb, batch.props)

    return predict


def energy_fn(config: SchNOrbConfig):
    """energy(params, molecules) -> [B] kcal/mol (the energy head alone: MD, ASE, forces)."""
    net = network(config)

    def energy(params, molecules):
        y, _, _ = net.apply({"params": params["net"]}, molecules.Z, molecules.R, molecules.mask)
        s = params["stats"]
        return atomwise_sum(y, molecules.mask, molecules.Z, s["scale"], s["shift"], s["atom_ref"])

    return energy


def orbitals_fn(config: SchNOrbConfig):
    """orbitals(params, molecules) -> (eps [B, n] Ha, C [B, n, n]): the orbitals of the predicted H of a batch
    with the per-AO index props (with_ao_index), with the exact overlap S when the batch has it (props["S"]),
    else the predicted one; pure and jit-able. Padded AOs' eigenvalues sort last (jaxqc.orbitals.pad_h_s)."""
    predict = predict_fn(config)

    def orbitals(params, molecules):
        _, H, S = predict(params, molecules)
        S = molecules.props.get("S", S)  # the exact overlap when the batch has it (module docstring)
        H, S = orb.pad_h_s(H, S, molecules.props["ao_mask"].astype(bool))
        return jax.vmap(orb.generalized_eigh)(H, S)

    return orbitals


def evaluate_more(config: SchNOrbConfig, params, data, idx, batch: int = 16) -> dict:
    """`jaxqc evaluate`'s Hamiltonian metrics on data[idx], in float64 on the host (scipy's generalised eigh,
    predicted H with the exact S): H and S entries, occupied orbital energies, HOMO, LUMO, gap, dipole, orbital similarity (|cos| in the
    S metric of each occupied orbital with its reference)."""
    import scipy.linalg

    from ..data import hamiltonian
    from ..metrics import mae_rmse

    idx = np.asarray(idx)
    hamiltonian.check(data.subset(idx), "--data", layout=config.layout())
    check_baseline(config, data)
    data = with_ao_index(data, config)
    predict = jax.jit(predict_fn(config))
    d = {k: [] for k in ("H", "S", "eps_occ", "homo", "lumo", "gap", "dipole", "sim")}
    for s in range(0, len(idx), batch):
        rows = idx[s:s + batch]
        _, H, S = (np.asarray(x, np.float64) for x in predict(params, data.molecules(rows)))
        for b, m in enumerate(rows):
            n = int(data.props["ao_mask"][m].sum())
            Hp, Sp = H[b, :n, :n], S[b, :n, :n]
            Hr, Sr = data.props["H"][m, :n, :n], data.props["S"][m, :n, :n]
            n_occ = orb.n_occupied(data.Z[m], int(data.meta.get("charge", 0)))
            eps, C = scipy.linalg.eigh(Hp, Sr)   # the exact overlap (module docstring)
            eps_r, C_r = scipy.linalg.eigh(Hr, Sr)
            d["H"].append((Hp - Hr).ravel())
            d["S"].append((Sp - Sr).ravel())
            d["eps_occ"].append(eps[:n_occ] - eps_r[:n_occ])
            d["homo"].append(eps[n_occ - 1] - eps_r[n_occ - 1])
            d["lumo"].append(eps[n_occ] - eps_r[n_occ])
            d["gap"].append((eps[n_occ] - eps[n_occ - 1]) - (eps_r[n_occ] - eps_r[n_occ - 1]))
            num = np.abs(np.einsum("ik,ij,jk->k", C[:, :n_occ], Sr, C_r[:, :n_occ]))
            nrm = np.sqrt(np.einsum("ik,ij,jk->k", C[:, :n_occ], Sr, C[:, :n_occ]))
            d["sim"].append(num / nrm)
            if "ao_r" in data.props:
                P = 2 * C[:, :n_occ] @ C[:, :n_occ].T
                P_r = 2 * C_r[:, :n_occ] @ C_r[:, :n_occ].T
                d["dipole"].append(-np.einsum("xij,ji->x", data.props["ao_r"][m][:, :n, :n], P - P_r)
                                   * orb.DEBYE_PER_AU)
    cat = lambda k: np.concatenate([np.atleast_1d(x) for x in d[k]])  # noqa: E731
    uha, mev = 1e6, 27211.386245988
    out = {"H": {**mae_rmse(uha * cat("H"), 0.0), "unit": "µHa"}, "S": {**mae_rmse(cat("S"), 0.0), "unit": "1"},
           "eps_occ": {**mae_rmse(uha * cat("eps_occ"), 0.0), "unit": "µHa"}}
    for k in ("homo", "lumo", "gap"):
        out[k] = {**mae_rmse(mev * cat(k), 0.0), "unit": "meV"}
    if d["dipole"]:
        out["dipole"] = {**mae_rmse(cat("dipole"), 0.0), "unit": "Debye (per component)"}
    sim = cat("sim")
    out["orbital_similarity"] = {"mean": float(np.mean(sim)), "min": float(np.min(sim)),
                                 "unit": "|cos| of occupied orbitals (S metric)"}
    if len({len(e) for e in d["eps_occ"]}) == 1:   # one molecule (MD frames): the error of each orbital
        per = np.abs(np.column_stack([np.stack(d["eps_occ"]), np.asarray(d["lumo"])]))
        out["eps_by_orbital"] = {"mae_list": (uha * per.mean(0)).tolist(), "unit": "µHa (occupied, then LUMO)"}
    return {**out, **untrained_heads(config)}   # a head the loss left out predicts nothing: say so


def trains_energy(config: SchNOrbConfig) -> bool:
    """Whether the loss fits the energy head (else the model is no potential: no MD, ASE or energy metrics)."""
    return config.energy_weight > 0 or config.force_weight > 0


def untrained_heads(config: SchNOrbConfig) -> dict:
    """{output: {"not_trained": why}} for the outputs the loss leaves out (an H-only loss: s_weight = 0,
    energy_weight = force_weight = 0); `jaxqc evaluate` reports these instead of an untrained head's errors."""
    out = {}
    if config.s_weight == 0:
        out["S"] = {"not_trained": "s_weight = 0: this model does not learn S (its orbitals use the exact S)"}
    if not trains_energy(config):
        out["energy"] = {"not_trained": "energy_weight = force_weight = 0: the energy head was not trained"}
    return out


# ---- training objective -------------------------------------------------------------------------
def _n_occ(batch):
    return (jnp.sum(jnp.where(batch.mask, batch.Z, 0), -1) // 2).astype(jnp.int32)


class HamiltonianObjective:
    """The loop's objective: MSE of H, S, E (and F) on randomly rotated copies; validation metrics in chemists'
    units (see summarise)."""

    def __init__(self, config: SchNOrbConfig):
        self.config = config

    def make_steps(self, cfg):
        from ..train import loop

        c = self.config
        predict = predict_fn(c)
        tx = loop.make_optimizer(cfg)

        def rotated(batch, key):
            B = batch.Z.shape[0]
            Q = jax.vmap(lambda k: orb.random_rotation(k, batch.R.dtype))(jax.random.split(key, B))
            D = ao_rotations(Q, batch.props)
            rot = lambda M: jnp.einsum("bij,bjk,blk->bil", D, M, D)  # noqa: E731
            props = {**batch.props, **{k: rot(batch.props[k]) for k in ("H", "S", "H0") if k in batch.props}}
            R = jnp.einsum("bax,byx->bay", batch.R, Q)
            F = None if batch.F is None else jnp.einsum("bax,byx->bay", batch.F, Q)
            return batch.replace(R=R, F=F, props=props)

        def loss_fn(net, stats, batch, key):
            if c.augment:
                batch = rotated(batch, key)
            params = {"net": net, "stats": stats}
            m = batch.mol_mask
            am = batch.props["ao_mask"].astype(bool) & m[:, None]
            mm = am[:, :, None] & am[:, None, :]
            n_m = jnp.maximum(jnp.sum(mm), 1)
            if c.force_weight > 0:
                (E, H, S), vjp = jax.vjp(lambda R: predict(params, batch, R), batch.R)
                F = -vjp((jnp.ones_like(E), jnp.zeros_like(H), jnp.zeros_like(S)))[0]
            else:
                E, H, S = predict(params, batch)
            loss = c.h_weight * jnp.sum(jnp.where(mm, (H - batch.props["H"]) ** 2, 0.0)) / n_m / stats["h_scale"] ** 2
            loss += c.s_weight * jnp.sum(jnp.where(mm, (S - batch.props["S"]) ** 2, 0.0)) / n_m / stats["s_scale"] ** 2
            n_mol = jnp.maximum(jnp.sum(m), 1)
            if c.eps_weight > 0:
                loss += c.eps_weight * eps_loss(H, batch) / stats["h_scale"] ** 2
            loss += c.energy_weight * jnp.sum(jnp.where(m, (E - batch.E) ** 2, 0.0)) / n_mol / stats["scale"] ** 2
            if c.force_weight > 0:
                fm = (batch.mask & m[:, None])[..., None]
                loss += c.force_weight * jnp.sum(jnp.where(fm, (F - batch.F) ** 2, 0.0)) / jnp.maximum(
                    3 * jnp.sum(fm), 1) / stats["scale"] ** 2
            return loss

        def eval_step(net, stats, batch):
            return errors({"net": net, "stats": stats}, batch, predict)

        return tx, loop.make_train_step(loss_fn, tx, cfg), eval_step

    summarise = staticmethod(lambda tot: summarise(tot))

    # runs checkpointed before the loop recorded its selection metric were all selected by the H MAE
    legacy_metric_key = "H_mae_uha"

    @property
    def metric_key(self) -> str:
        """What the loop keeps the best model by: the validation H MAE, or with the orbital-energy loss on
        (eps_weight > 0) the validation occupied-orbital MAE, the quantity that loss is there for."""
        return "eps_occ_mae_uha" if self.config.eps_weight > 0 else "H_mae_uha"


def eps_loss(H, batch):
    """Mean squared error (Ha^2) of the orbital energies up to the LUMO (occupied + 1) of the predicted H [B, n, n],
    with the batch's exact S, against those of its reference H; padded molecules and AOs excluded."""
    am = batch.props["ao_mask"].astype(bool)
    Hp, Sp = orb.pad_h_s(H, batch.props["S"], am)
    Hr, _ = orb.pad_h_s(batch.props["H"], batch.props["S"], am)
    eps = jax.vmap(orb.generalized_eigvalsh)(Hp, Sp)
    eps_r = jax.lax.stop_gradient(jax.vmap(orb.generalized_eigvalsh)(Hr, Sp))
    k = jnp.arange(eps.shape[-1])[None, :]
    sel = (k <= _n_occ(batch)[:, None]) & batch.mol_mask[:, None]
    return jnp.sum(jnp.where(sel, (eps - eps_r) ** 2, 0.0)) / jnp.maximum(jnp.sum(sel), 1)


def errors(params, batch, predict) -> dict:
    """Sums over a batch: |dH|, |dS| (real AO pairs), |d eps| (occupied), HOMO/LUMO/gap, dipole (when the
    batch has AO dipole integrals), orbital similarity of the occupied orbitals, |dE|."""
    E, H, S = predict(params, batch)
    m = batch.mol_mask
    am = batch.props["ao_mask"].astype(bool)
    mm = am[:, :, None] & am[:, None, :] & m[:, None, None]
    n_occ = _n_occ(batch)
    Hp, Sp = orb.pad_h_s(H, batch.props["S"], am)   # orbitals of the predicted H with the exact S
    Hr, Sr = orb.pad_h_s(batch.props["H"], batch.props["S"], am)
    eps, C = jax.vmap(orb.generalized_eigh)(Hp, Sp)
    eps_r, C_r = jax.vmap(orb.generalized_eigh)(Hr, Sr)
    k = jnp.arange(eps.shape[-1])[None, :]
    occ = (k < n_occ[:, None]) & m[:, None]
    take = lambda e, j: jnp.take_along_axis(e, j[:, None], 1)[:, 0]  # noqa: E731
    homo, lumo = take(eps, n_occ - 1), take(eps, n_occ)
    homo_r, lumo_r = take(eps_r, n_occ - 1), take(eps_r, n_occ)
    num = jnp.abs(jnp.einsum("bik,bij,bjk->bk", C, Sr, C_r))
    nrm = jnp.sqrt(jnp.einsum("bik,bij,bjk->bk", C, Sr, C) * jnp.einsum("bik,bij,bjk->bk", C_r, Sr, C_r))
    sim = jnp.where(occ, num / nrm, 0.0)
    out = {"H_abs": jnp.sum(jnp.where(mm, jnp.abs(H - batch.props["H"]), 0.0)),
           "S_abs": jnp.sum(jnp.where(mm, jnp.abs(S - batch.props["S"]), 0.0)), "n_ao2": jnp.sum(mm),
           "eps_abs": jnp.sum(jnp.where(occ, jnp.abs(eps - eps_r), 0.0)), "n_occ": jnp.sum(occ),
           "homo_abs": jnp.sum(jnp.where(m, jnp.abs(homo - homo_r), 0.0)),
           "lumo_abs": jnp.sum(jnp.where(m, jnp.abs(lumo - lumo_r), 0.0)),
           "gap_abs": jnp.sum(jnp.where(m, jnp.abs((lumo - homo) - (lumo_r - homo_r)), 0.0)),
           "sim": jnp.sum(sim), "e_abs": jnp.sum(jnp.where(m, jnp.abs(E - batch.E), 0.0)), "n_mol": jnp.sum(m)}
    if "ao_r" in batch.props:
        occ_w = jnp.where(occ, 2.0, 0.0)
        P = jnp.einsum("bik,bk,bjk->bij", C, occ_w, C)
        P_r = jnp.einsum("bik,bk,bjk->bij", C_r, occ_w, C_r)
        ddip = -jnp.einsum("bxij,bji->bx", batch.props["ao_r"], P - P_r) * orb.DEBYE_PER_AU
        out["dipole_abs"] = jnp.sum(jnp.where(m[:, None], jnp.abs(ddip), 0.0))
    return out


def summarise(tot: dict) -> dict:
    """Validation / test metrics from the sums of `errors`: H and eps in µHa, S dimensionless, HOMO/LUMO/gap in
    meV and µHa, dipole in Debye (per component), orbital similarity (mean |cos| of occupied orbitals), E in
    kcal/mol."""
    f = lambda k: float(tot[k])  # noqa: E731
    ha_mev = 27211.386245988
    out = {"H_mae_uha": 1e6 * f("H_abs") / f("n_ao2"), "S_mae": f("S_abs") / f("n_ao2"),
           "eps_occ_mae_uha": 1e6 * f("eps_abs") / f("n_occ"), "orbital_similarity": f("sim") / f("n_occ"),
           "homo_mae_mev": ha_mev * f("homo_abs") / f("n_mol"), "lumo_mae_mev": ha_mev * f("lumo_abs") / f("n_mol"),
           "gap_mae_mev": ha_mev * f("gap_abs") / f("n_mol"), "gap_mae_uha": 1e6 * f("gap_abs") / f("n_mol"),
           "energy_mae": f("e_abs") / f("n_mol"), "n": int(f("n_mol"))}
    if "dipole_abs" in tot:
        out["dipole_mae_debye"] = f("dipole_abs") / (3 * f("n_mol"))
    return out


# ---- statistics, init, fit -----------------------------------------------------------------------
def fit_stats(data, idx, config: SchNOrbConfig) -> dict:
    """Energy scale / shift (per atom), per-element mean on-site blocks of H and S in the template basis, and
    the std of the rest of H and S, over the training molecules."""
    from ..nn import model as nnmodel

    _, _, T = template(config.ao_shells)
    ref = nnmodel.atom_reference(data, "energy", config.max_z)
    st = nnmodel.fit_stats(data, idx, "energy", ref, config.force_weight > 0 and data.F is not None, "sum")
    out = {"scale": st["scale"], "shift": st["shift"], "atom_ref": st["atom_ref"]}
    n_ao = data.props["H"].shape[-1]
    index = ao_index(data.Z[idx], tuple(config.ao_shells), n_ao)
    for key in ("H", "S"):
        acc, n_atoms, rest = np.zeros((config.max_z + 1, T, T)), np.zeros(config.max_z + 1), []
        for b, m in enumerate(idx):
            mask = index["ao_mask"][b].astype(bool)
            a, t = index["ao_atom"][b][mask], index["ao_slot"][b][mask]
            M = data.props[key][m][np.ix_(mask, mask)]
            if key == "H" and config.baseline == "sad":
                M = M - data.props["H0"][m][np.ix_(mask, mask)]   # the network learns the rest
            for i in np.unique(a):
                sel = a == i
                z = int(data.Z[m, i])
                acc[z][np.ix_(t[sel], t[sel])] += M[np.ix_(sel, sel)]
                n_atoms[z] += 1
            rest.append(M[a[:, None] != a[None, :]])
        out[f"{key.lower()}_onsite"] = invariant_part(acc / np.maximum(n_atoms, 1)[:, None, None], config.ao_shells)
        out[f"{key.lower()}_scale"] = float(np.std(np.concatenate(rest))) or 1.0
    return out


def invariant_part(blocks: np.ndarray, shells: tuple) -> np.ndarray:
    """The rotation average of on-site blocks [..., T, T]: between two shells of the same l, trace / (2l + 1)
    times the identity; between shells of different l, zero. (A mean on-site block of training molecules in
    their own orientations is not covariant; its rotation average is, and it is exact for S.)"""
    slots, offsets, _ = template(shells)
    out = np.zeros_like(blocks)
    for s1 in slots:
        for s2 in slots:
            if s1[0] != s2[0]:
                continue
            n, o1, o2 = 2 * s1[0] + 1, offsets[s1], offsets[s2]
            tr = np.trace(blocks[..., o1:o1 + n, o2:o2 + n], axis1=-2, axis2=-1) / n
            out[..., o1:o1 + n, o2:o2 + n] = tr[..., None, None] * np.eye(n)
    return out


def init_params(config, key, example, stats) -> dict:
    net = network(config)
    variables = jax.jit(net.init)(key, example.Z, example.R, example.mask)
    dtype = example.R.dtype
    return {"net": variables["params"], "stats": {k: jnp.asarray(v, dtype) for k, v in stats.items()}}


def resolve(config: SchNOrbConfig, data, idx) -> SchNOrbConfig:
    """config with the data's basis, AO shells and mean neighbour count."""
    from ..data import hamiltonian

    layout = hamiltonian.check(data, layout=config.layout() if config.ao_shells else None)
    check_loss_weights(config)
    check_baseline(config, data)
    kw = {"basis": layout.basis, "ao_shells": layout.shells}
    if config.avg_num_neighbors is None:
        d, _, pm = dense_geometry(jnp.asarray(data.R[idx[:200]]), jnp.asarray(data.Z[idx[:200]] > 0), config.cutoff_ang)
        kw["avg_num_neighbors"] = round(float(np.sum(pm) / max(np.sum(data.Z[idx[:200]] > 0), 1)), 6)
    return dataclasses.replace(config, **kw)


BASELINES = ("none", "sad")
LOSS_WEIGHTS = ("h_weight", "s_weight", "energy_weight", "force_weight", "eps_weight")


def check_loss_weights(config: SchNOrbConfig) -> None:
    """A clear error when a loss weight is negative or NaN, or none fits H (a config file or --set reaches them
    without the CLI's check). Training only: a saved model is evaluated whatever it was trained with."""
    for name in LOSS_WEIGHTS:
        if not getattr(config, name) >= 0:
            raise JaxqcError(f"schnorb {name} {getattr(config, name)}: must be a number >= 0")
    if config.h_weight == 0 and config.eps_weight == 0:
        raise JaxqcError("schnorb h_weight and eps_weight are both 0: nothing would fit the Hamiltonian")


def check_baseline(config: SchNOrbConfig, data, source: str = "--data") -> None:
    """A clear error when the config's baseline is unknown or the data lacks its matrices."""
    if config.baseline not in BASELINES:
        raise JaxqcError(f"schnorb baseline {config.baseline!r} is not one of {', '.join(BASELINES)}")
    if config.baseline == "sad" and "H0" not in data.props:
        raise JaxqcError(f"{source}: baseline 'sad' needs the guess Kohn-Sham matrices H0, which this Hamiltonian "
                         "data set lacks (jaxqc data label ... --hamiltonian stores them since this version)")


def fit(config, data, split, key, budget: Budget, *, out=None, resume: bool = False, progress: bool = True,
        n_devices: int | None = None, target: str = "energy", seed: int = 0, init_from=None) -> Fitted:
    """Train on data[split["train"]]. `init_from`: a saved schnorb model (run directory or file) of the same
    basis whose arrays start the network (saved.warm_start: fine-tuning, or a longer schedule, or a new head
    added to a trained model)."""
    from ..train import loop
    from .network import fitted_from_run, train_config

    if target != "energy":
        raise JaxqcError("schnorb learns H, S and the energy; --target is not one of its options")
    tr = np.asarray(split["train"])
    config = resolve(config, data, tr)
    if budget.options.get("forces") and config.force_weight == 0:
        if data.F is None or not data.meta.get("forces_computed", True):
            raise JaxqcError("--forces: the Hamiltonian data set has no forces (labelled with --no-forces)")
        config = dataclasses.replace(config, force_weight=1.0)
    md5 = data.md5  # of the data as given (evaluate compares it), before the per-AO index props
    data = with_ao_index(data, config)
    cfg = train_config(budget, seed)
    stats = fit_stats(data, tr, config)
    params = init_params(config, key, data.molecules(tr[:2]), stats)
    started = {}
    if init_from is not None:
        from .saved import warm_start

        params, report = warm_start(params, init_from, SPEC, config, same=("covariant", "basis", "ao_shells",
                                                                           "baseline"))
        started = {"init_from": str(init_from)}
        if progress:
            print(report)
    prov = {**started, "dataset_md5": md5, "dataset_name": data.meta.get("name"),
            "protocol": split.get("protocol", "split given by the caller"),
            "test_idx": np.asarray(split.get("test", np.zeros(0, int))), "target": "energy",
            "elements": list(config.elements), "basis": config.basis}
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="jaxqc_schnorb_"))
    summary = loop.train("schnorb", config, energy_fn(config), params, data, split, cfg, run_dir, resume=resume,
                         n_devices=n_devices, provenance=prov, progress=progress,
                         objective=HamiltonianObjective(config))
    return fitted_from_run(summary, run_dir, config)


def config_from_json(d: dict) -> SchNOrbConfig:
    from .registry import config_fields

    kw = config_fields(SchNOrbConfig, d.get("model", d))
    kw.setdefault("pair_mlp", 0)   # saved before the pair network existed: radial-only gates
    kw.setdefault("element_onsite", 0)
    if kw.get("ao_shells") is not None:
        kw["ao_shells"] = tuple((int(z), tuple(int(l) for l in ls)) for z, ls in kw["ao_shells"])
    return SchNOrbConfig(**kw)


def applies(kind: str, data) -> str | None:
    if kind != "frames":
        return "SchNOrb learns Hamiltonians of frames (jaxqc data label ... --hamiltonian)"
    if "H" not in data.props or "basis" not in data.meta:
        return "needs a Hamiltonian data set (H and S per frame: jaxqc data label ... --hamiltonian)"
    return None


def from_flags(flags: dict, data) -> tuple[dict, Budget]:
    """The networks' flags (jaxqc.models.network.make_from_flags), and --covariant."""
    from .network import make_from_flags

    overrides, budget = make_from_flags("schnorb", {"features": "features", "interactions": "interactions",
                                                    "cutoff": "cutoff_ang"})(flags, data)
    if flags.get("covariant"):
        overrides["covariant"] = True
    if flags.get("baseline"):
        overrides["baseline"] = flags["baseline"]
    if flags.get("eps_weight") is not None:
        overrides["eps_weight"] = float(flags["eps_weight"])   # checked with the rest of the config (resolve)
    return overrides, budget


def describe(config: SchNOrbConfig) -> str:
    base = ", learning H - H0 (minao guess)" if config.baseline == "sad" else ""
    base += f", orbital-energy loss x{config.eps_weight:g}" if config.eps_weight > 0 else ""
    base += "".join(f", {k} not trained" for k in untrained_heads(config))
    if config.covariant:
        pair = f", pair network {config.pair_mlp} wide" if config.pair_mlp else ", radial pair gates"
        pair += f", per-element on-site network {config.element_onsite} wide" if config.element_onsite else ""
        return (f"schnorb (covariant, MACE features {config.channels} channels, {config.mace_layers} layers{pair}), "
                f"basis {config.basis}, cutoff {config.cutoff_ang:g} Å{base}")
    return (f"schnorb, {config.features} features, {config.interactions} interactions, "
            f"{2 * config.lmax} direction blocks, basis {config.basis}, cutoff {config.cutoff_ang:g} Å{base}")


TINY = {"model": {"features": 16, "interactions": 1, "directions": 2, "lmax": 1, "n_rbf": 8, "channels": 4,
                  "mace_layers": 1, "pair_channels": 2, "pair_mlp": 8}, "train": {"batch_size": 10, "n_buckets": 1, "lr": 2e-3}}
QUICK_TRAIN = {"batch_size": 16, "n_buckets": 1, "lr": 1e-3, "schedule": "exponential", "decay_steps": 20_000}
SPEC = register(ModelSpec(
    name="schnorb", config_class=SchNOrbConfig, fit=fit, energy=energy_fn,
    outputs=("energy", "forces", "matrices"), describe=describe,
    budgets={("frames", "tiny"): Budget((40,), epochs=2, options=TINY),
             ("frames", "quick"): Budget((500,), epochs=100, max_minutes=30.0, options={"train": QUICK_TRAIN}),
             ("frames", "paper"): Budget((25_000,), epochs=100_000, max_minutes=24 * 60.0, options={
                 "model": {"features": 256, "directions": 12, "cutoff_ang": 10.0},
                 "train": {"batch_size": 32, "lr": 1e-4, "patience": 100}})},
    description="SchNOrb: learned Kohn-Sham Hamiltonians (Schütt 2019); --covariant: PhiSNet/QHNet-style",
    applies=applies, from_flags=from_flags, config_from_json=config_from_json,
    force_field=lambda config, header: trains_energy(config),
    variants={"schnorb": {}, "schnorb-covariant": {"covariant": True}},
    init=init_params, predict_batch=16, evaluate_more=evaluate_more))
