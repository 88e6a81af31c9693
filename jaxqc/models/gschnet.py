"""G-SchNet (Gebauer, Gastegger & Schütt, NeurIPS 2019): an autoregressive model that builds molecules in 3D
one atom at a time.

A partial molecule is a set of placed atoms plus two tokens, given to a SchNet feature extractor as extra
"atoms": the focus token at the position of the focus (the placed atom the next one attaches to) and the
origin token at the molecule's centre of mass. Two heads read the features x_i [F] of every slot i:
- next type: each slot gives log-probabilities over the element types and "stop" (the focus has no more
  unplaced neighbours); the slots' distributions multiply (their log-softmaxes add, tokens included) and
  are renormalised;
- distances: given the next type t, each slot predicts the distance from itself to the new atom as a
  distribution over `n_dist_bins` bins on [0, max_dist_ang] (x_i times an embedding of t, then an MLP).
The new atom's position is sampled on a 3D grid around the focus (points 0.9-1.7 Å from it, spacing
`grid_spacing_ang`) with probability ∝ prod_i p_i(|r - r_i|)^(1/T) (T the temperature); the first atom, at
the origin, is placed on a line at a distance drawn from the predicted distribution. Distances are
rotation and translation invariant, so the likelihood of a molecule is too.

Training follows the paper's construction traces: the first atom is the one closest to the centre of mass;
then, at each step, the focus is drawn uniformly from the placed atoms that are not finished, and the next
atom is its unplaced bonded neighbour closest to the centre of mass (label: its type, and its distances to
every slot, smeared by a Gaussian of width `label_width_ang`), or, if it has none, the label is "stop" and
the focus is finished. A molecule of n atoms has 2n steps. Each training batch draws `steps_per_molecule`
steps of fresh random traces per molecule inside the jitted loss (a short lax.fori_loop replays the trace),
so every epoch sees new traces. Loss: cross-entropy of the type + (when an atom is placed) the mean over
slots of the cross-entropy of the distance distributions, as the reference code's KL terms.

Generation runs a batch of molecules at once under jit (one lax.while_loop over steps for the whole batch);
it compiles once per batch size and config. Bonds for the traces: jaxqc's covalent bond graph
(kernels.symmetries: d < 1.25 (r_a + r_b), and at most max_bond_ang so that the grid can place them).

Hyperparameters (`paper`): 128 features, 9 interactions, 10 Å cutoff, 25 Gaussians, 300 distance bins on
0-15 Å, label width 0.05 Å, grid spacing 0.05 Å, temperature 0.1, at most 35 atoms (reference code
`atomistic-machine-learning/G-SchNet`). The CPU configuration is smaller (see BUDGETS).
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

from ..elements import SYMBOLS, masses_amu
from ..errors import JaxqcError
from ..kernels.symmetries import BOND_SCALE, COVALENT_RADIUS_ANG
from ..nn.layers import MLP
from ..nn.schnet import SchNetConfig, schnet_features
from .registry import Budget, Fitted, ModelSpec, config_fields, register


@dataclasses.dataclass(frozen=True)
class GSchNetConfig:
    """G-SchNet settings; the defaults are the reference code's (for an accelerator)."""

    features: int = 128            # SchNet feature width F
    interactions: int = 9          # SchNet interaction blocks
    cutoff_ang: float = 10.0       # SchNet cutoff (molecules of QM9 fit inside: every slot sees every slot)
    n_rbf: int = 25                # Gaussians of the filter networks
    head_hidden: tuple = (128, 128)  # hidden widths of the type and distance heads
    elements: tuple = (1, 6, 7, 8, 9)  # the atom types it places (H, C, N, O, F)
    max_heavy_atoms: int = 9       # the training pool: molecules with at most this many heavy atoms
    max_atoms: int = 35            # generation stops a molecule (unfinished) at this many atoms
    n_dist_bins: int = 300         # distance distribution bins on [0, max_dist_ang]
    max_dist_ang: float = 15.0
    label_width_ang: float = 0.05  # sigma of the Gaussian distance labels
    grid_spacing_ang: float = 0.05  # the 3D grid around the focus
    min_bond_ang: float = 0.9      # new atoms are placed min..max from the focus
    max_bond_ang: float = 1.7
    temperature: float = 0.1       # default sampling temperature of the positions
    steps_per_molecule: int = 8    # trace steps drawn per molecule per training batch

    @property
    def n_types(self) -> int:
        return len(self.elements)

    def schnet(self) -> SchNetConfig:
        # embedding rows: 0 padding, 1..T the types, T + 1 the focus token, T + 2 the origin token
        return SchNetConfig(features=self.features, interactions=self.interactions, cutoff_ang=self.cutoff_ang,
                            n_rbf=self.n_rbf, max_z=self.n_types + 2)


class GSchNetNet(nn.Module):
    """Heads of G-SchNet on a batch of partial molecules: slots [B, S] embedding indices (0 padding), R [B, S, 3]
    Å, mask [B, S]. __call__ -> (type log-probs [B, T + 1] (index T = stop), features x [B, S, F]);
    distances(x, next_type [B]) -> log-probs [B, S, n_dist_bins]."""

    config: GSchNetConfig

    def setup(self):
        c = self.config
        self.type_head = MLP((*c.head_hidden, c.n_types + 1), name="type_head")
        self.type_embed = nn.Embed(c.n_types, c.features, name="next_type_embedding")
        self.dist_head = MLP((*c.head_hidden, c.n_dist_bins), name="distance_head")
        self.extract = _Extractor(c.schnet(), name="schnet")

    def __call__(self, slots, R, mask):
        x = self.extract(slots, R, mask)  # [B, S, F]
        logp = jax.nn.log_softmax(self.type_head(x), axis=-1)  # [B, S, T + 1]
        agg = jnp.sum(jnp.where(mask[..., None], logp, 0.0), axis=1)  # product of the slots' distributions
        return jax.nn.log_softmax(agg, axis=-1), x

    def distances(self, x, next_type):
        e = self.type_embed(next_type)[:, None, :]  # [B, 1, F]
        return jax.nn.log_softmax(self.dist_head(x * e), axis=-1)  # [B, S, bins]

    def both(self, slots, R, mask, next_type):
        logp_type, x = self(slots, R, mask)
        return logp_type, self.distances(x, next_type)


class _Extractor(nn.Module):
    config: SchNetConfig

    @nn.compact
    def __call__(self, slots, R, mask):
        return schnet_features(self.config, slots, R, mask)


# ---- construction traces --------------------------------------------------------------------------------
def type_index_table(config: GSchNetConfig) -> jnp.ndarray:
    """[max Z + 1] int: atomic number -> type index 1..T (0 for padding or elements the model does not place)."""
    table = np.zeros(max(config.elements) + 1, np.int32)
    for k, z in enumerate(config.elements):
        table[z] = k + 1
    return jnp.asarray(table)


def bonded(Z, R, max_bond_ang: float):
    """[A, A] bool covalent bond graph (jaxqc's radii, d < 1.25 (r_a + r_b) and d <= max_bond_ang)."""
    r = jnp.asarray([COVALENT_RADIUS_ANG.get(z, 0.75) for z in range(max(COVALENT_RADIUS_ANG) + 1)])[Z]
    d = jnp.linalg.norm(R[:, None] - R[None, :] + jnp.eye(len(Z))[..., None], axis=-1)  # eye: no 0-length grad
    real = (Z > 0)[:, None] & (Z > 0)[None, :] & ~jnp.eye(len(Z), dtype=bool)
    return real & (d < BOND_SCALE * (r[:, None] + r[None, :])) & (d <= max_bond_ang)


def centre_of_mass(Z, R):
    """[3] Å the mass-weighted centre of one molecule (Z [A], zeros = padding)."""
    table = np.zeros(10)
    table[1:] = masses_amu(np.arange(1, 10))
    m = jnp.asarray(table)[Z] * (Z > 0)
    return jnp.sum(m[:, None] * R, axis=0) / jnp.maximum(jnp.sum(m), 1e-12)


def trace_step(Z, R, key, t, max_bond_ang: float = 1.7):
    """The state before step t (0 <= t < 2n) of a random construction trace of one molecule (Z [A], R [A, 3]
    Å) and that step's label: {"placed" [A], "focus" (atom index, -1: the origin token), "has" (an atom is
    placed, else stop), "next" (its atom index)}. Pure JAX, so that it runs inside the jitted loss."""
    A = Z.shape[0]
    real = Z > 0
    com = centre_of_mass(Z, R)
    dcom = jnp.where(real, jnp.linalg.norm(R - com, axis=-1), jnp.inf)
    adj = bonded(Z, R, max_bond_ang)
    first = jnp.argmin(dcom)

    def step(placed, finished, k):
        started = jnp.any(placed)
        unfinished = placed & ~finished
        focus = jax.random.categorical(k, jnp.where(unfinished, 0.0, -jnp.inf))
        cand = jnp.where(started, adj[focus] & ~placed, jnp.arange(A) == first)
        has = jnp.any(cand)
        nxt = jnp.argmin(jnp.where(cand, dcom, jnp.inf))
        placed2 = placed | (has & (jnp.arange(A) == nxt))
        finished2 = finished | (started & ~has & (jnp.arange(A) == focus))
        return placed2, finished2, {"focus": jnp.where(started, focus, -1), "has": has, "next": nxt}

    def body(i, carry):
        placed, finished, k = carry
        k, sub = jax.random.split(k)
        placed, finished, _ = step(placed, finished, sub)
        return placed, finished, k

    zeros = jnp.zeros(A, bool)
    placed, finished, key = jax.lax.fori_loop(0, t, body, (zeros, zeros, key))
    _, _, label = step(placed, finished, jax.random.split(key)[1])
    return {"placed": placed, **label, "com": com}


def step_inputs(Z, R, state, table, n_types: int):
    """(slots [S], positions [S, 3], mask [S]) of the partial molecule of a trace state; S = A + 2: the focus
    token (embedding row T + 1), the origin token (T + 2), then the atoms (their type rows 1..T)."""
    focus_pos = jnp.where(state["focus"] >= 0, R[jnp.maximum(state["focus"], 0)], state["com"])
    slots = jnp.concatenate([jnp.array([n_types + 1, n_types + 2]), table[Z]])
    pos = jnp.concatenate([focus_pos[None], state["com"][None], R])
    mask = jnp.concatenate([jnp.array([True, True]), state["placed"]])
    return slots, pos, mask


def distance_labels(d_ang, config: GSchNetConfig):
    """[..., bins] Gaussian-smeared distance labels (normalised) of distances d_ang [...] Å."""
    centres = jnp.linspace(0.0, config.max_dist_ang, config.n_dist_bins)
    q = jnp.exp(-0.5 * ((jnp.minimum(d_ang, config.max_dist_ang)[..., None] - centres) / config.label_width_ang) ** 2)
    return q / jnp.maximum(jnp.sum(q, axis=-1, keepdims=True), 1e-30)


def step_batch(config: GSchNetConfig, Z, R, mask, key, K: int):
    """K random trace steps of every molecule of a batch (Z [B, A], R [B, A, 3]): the network's inputs and
    labels, [B * K, ...]."""
    table = type_index_table(config)
    T = config.n_types
    B = Z.shape[0]
    n = jnp.sum(mask, axis=1)

    def one(z, r, nn_, k):
        k1, k2 = jax.random.split(k)
        t = jax.random.randint(k1, (), 0, jnp.maximum(2 * nn_, 1))
        st = trace_step(z, r, k2, t, config.max_bond_ang)
        slots, pos, m = step_inputs(z, r, st, table, T)
        next_type = jnp.where(st["has"], table[z[st["next"]]] - 1, T)  # T: stop
        d = jnp.linalg.norm(pos - r[st["next"]], axis=-1)  # [S]
        return slots, pos, m, next_type, st["has"], d

    keys = jax.random.split(key, B * K).reshape(B, K, -1)
    f = jax.vmap(jax.vmap(one, in_axes=(None, None, None, 0)), in_axes=(0, 0, 0, 0))
    out = f(Z, R, n, keys)
    return tuple(o.reshape(B * K, *o.shape[2:]) for o in out)


def step_losses(net_apply, params, config: GSchNetConfig, slots, pos, m, next_type, has, d):
    """Per-step (type cross-entropy [N], distance cross-entropy [N] (0 for stop steps), type correct [N])."""
    T = config.n_types
    logp_type, logp_d = net_apply(params, slots, pos, m, jnp.minimum(next_type, T - 1))
    ce_type = -jnp.take_along_axis(logp_type, next_type[:, None], axis=1)[:, 0]
    q = distance_labels(d, config)  # [N, S, bins]
    ce = -jnp.sum(q * logp_d, axis=-1)  # [N, S]
    ce_d = jnp.sum(jnp.where(m, ce, 0.0), axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1)
    return ce_type, jnp.where(has, ce_d, 0.0), jnp.argmax(logp_type, axis=1) == next_type


class TraceObjective:
    """loop.train's objective: the construction-trace loss of random steps; validation on fixed steps."""

    def __init__(self, config: GSchNetConfig, seed: int = 0):
        self.config, self.seed = config, seed

    def make_steps(self, cfg):
        from ..train import loop

        c = self.config
        net = GSchNetNet(c)
        apply = lambda p, s, r, m, t: net.apply({"params": p}, s, r, m, t, method=GSchNetNet.both)  # noqa: E731
        tx = loop.make_optimizer(cfg)

        def losses(params, batch, key):
            inputs = step_batch(c, batch.Z, batch.R, batch.mask, key, c.steps_per_molecule)
            w = jnp.repeat(batch.mol_mask, c.steps_per_molecule)
            return step_losses(apply, params, c, *inputs), w, inputs[4]

        def loss_fn(params, stats, batch, key):
            (ce_t, ce_d, _), w, _ = losses(params, batch, key)
            return jnp.sum(jnp.where(w, ce_t + ce_d, 0.0)) / jnp.maximum(jnp.sum(w), 1)

        def eval_step(params, stats, batch):
            key = jax.random.PRNGKey(self.seed + 17)  # the same steps every epoch: comparable validations
            (ce_t, ce_d, ok), w, has = losses(params, batch, key)
            return {"type": jnp.sum(jnp.where(w, ce_t, 0.0)), "dist": jnp.sum(jnp.where(w & has, ce_d, 0.0)),
                    "ok": jnp.sum(w & ok), "n": jnp.sum(w), "n_place": jnp.sum(w & has)}

        return tx, loop.make_train_step(loss_fn, tx, cfg), eval_step

    @staticmethod
    def summarise(tot: dict) -> dict:
        n, n_place = max(float(tot["n"]), 1.0), max(float(tot["n_place"]), 1.0)
        t, d = float(tot["type"]) / n, float(tot["dist"]) / n_place
        return {"loss": t + float(tot["dist"]) / n, "type_nll": t, "distance_nll": d,
                "type_accuracy": float(tot["ok"]) / n, "n_steps": int(n)}

    metric_key = "loss"   # the validation negative log-likelihood per placement step


def trace_log_likelihood(config: GSchNetConfig, params, Z, R, key, n_steps: int | None = None):
    """Sum over every step of one random construction trace (fixed by `key`) of the type log-probability and
    the distance log-probabilities (of the bins' Gaussian labels: -cross-entropy): a function of the geometry
    that must not change when the molecule is rotated or translated."""
    net = GSchNetNet(config)
    apply = lambda p, s, r, m, t: net.apply({"params": p}, s, r, m, t, method=GSchNetNet.both)  # noqa: E731
    table = type_index_table(config)
    T = config.n_types

    @jax.jit
    def step_ll(params, Z, R, t):
        st = trace_step(Z, R, key, t, config.max_bond_ang)  # the same key: the same trace, replayed to step t
        slots, pos, m = step_inputs(Z, R, st, table, T)
        next_type = jnp.where(st["has"], table[Z[st["next"]]] - 1, T)
        d = jnp.linalg.norm(pos - R[st["next"]], axis=-1)
        ce_t, ce_d, _ = step_losses(apply, params, config, slots[None], pos[None], m[None], next_type[None],
                                    st["has"][None], d[None])
        return -ce_t[0] - ce_d[0]

    n = int(np.sum(np.asarray(Z) > 0))
    return sum(step_ll(params, Z, R, t) for t in range(2 * n if n_steps is None else n_steps))


# ---- generation ----------------------------------------------------------------------------------------
def grid_offsets(config: GSchNetConfig) -> np.ndarray:
    """[G, 3] Å the candidate offsets from the focus: a cubic grid, points min_bond..max_bond from the centre."""
    h, r = config.grid_spacing_ang, config.max_bond_ang
    k = np.arange(-np.floor(r / h), np.floor(r / h) + 1) * h
    g = np.stack(np.meshgrid(k, k, k, indexing="ij"), -1).reshape(-1, 3)
    d = np.linalg.norm(g, axis=-1)
    return g[(d >= config.min_bond_ang) & (d <= r)].astype(np.float32)


@functools.lru_cache(maxsize=8)
def make_generator(config: GSchNetConfig, batch: int):
    """generate(params, key, temperature) -> (Z [batch, max_atoms], R [batch, max_atoms, 3] Å, finished [batch]):
    one jitted function for a batch of molecules (compiled once per config and batch size, kept across calls
    of `generate`; temperature is traced)."""
    c = config
    net = GSchNetNet(c)
    T, M, S = c.n_types, c.max_atoms, c.max_atoms + 2
    offsets = jnp.asarray(grid_offsets(c))  # [G, 3]
    centres_x = jnp.linspace(0.0, c.max_dist_ang, c.n_dist_bins)  # first atom: on the x axis
    elements = jnp.asarray(c.elements, jnp.int32)
    bin_w = c.max_dist_ang / (c.n_dist_bins - 1)

    def lookup(logp_d, pos, points):
        """sum over slots of log p_slot(|point - r_slot|) (nearest bin): [B, P] for points [B, P, 3]."""
        d = jnp.linalg.norm(points[:, :, None, :] - pos[:, None, :, :], axis=-1)  # [B, P, S]
        b = jnp.clip(jnp.round(d / bin_w).astype(jnp.int32), 0, c.n_dist_bins - 1)
        lp = jnp.take_along_axis(logp_d[:, None, :, :], b[..., None], axis=-1)[..., 0]  # [B, P, S]
        return lp

    def step(params, carry, key, temperature):
        types, R, n, finished, done = carry  # types [B, M] 0 pad else 1..T; finished [B, M]
        k_focus, k_type, k_pos = jax.random.split(key, 3)
        placed = jnp.arange(M)[None, :] < n[:, None]
        started = n > 0
        unfinished = placed & ~finished
        focus = jax.vmap(jax.random.categorical)(jax.random.split(k_focus, types.shape[0]),
                                                 jnp.where(unfinished, 0.0, -jnp.inf))
        focus_pos = jnp.where(started[:, None], jnp.take_along_axis(R, focus[:, None, None], 1)[:, 0], 0.0)
        slots = jnp.concatenate([jnp.full((types.shape[0], 1), T + 1), jnp.full((types.shape[0], 1), T + 2),
                                 types], axis=1)
        pos = jnp.concatenate([focus_pos[:, None], jnp.zeros_like(focus_pos)[:, None], R], axis=1)
        mask = jnp.concatenate([jnp.ones((types.shape[0], 2), bool), placed], axis=1)
        logp_type, x = net.apply({"params": params}, slots, pos, mask)
        logp_type = jnp.where(started[:, None] | (jnp.arange(T + 1) < T), logp_type, -jnp.inf)  # no stop first
        t = jax.random.categorical(k_type, logp_type)  # [B]
        stop = t == T
        logp_d = net.apply({"params": params}, x, jnp.minimum(t, T - 1), method=GSchNetNet.distances)
        logp_d = jnp.where(mask[..., None], logp_d, 0.0)
        # later atoms: the grid around the focus, sharpened by the temperature
        pts = focus_pos[:, None, :] + offsets[None]  # [B, G, 3]
        lp = jnp.sum(lookup(logp_d, pos, pts), axis=-1)  # [B, G]
        lp = jax.nn.log_softmax(lp, axis=-1) / temperature
        # the first atom: distance from the origin (both tokens sit there) on the x axis, no temperature
        lp0 = jnp.sum(logp_d[:, :2, :], axis=1)  # [B, bins]
        i_g = jax.random.categorical(k_pos, lp)
        i_0 = jax.random.categorical(jax.random.fold_in(k_pos, 1), lp0)
        new_pos = jnp.where(started[:, None], jnp.take_along_axis(pts, i_g[:, None, None], 1)[:, 0],
                            jnp.stack([centres_x[i_0], jnp.zeros_like(centres_x[i_0]),
                                       jnp.zeros_like(centres_x[i_0])], -1))
        new_pos = jnp.where(jnp.isfinite(jnp.max(lp, axis=-1))[:, None] | ~started[:, None], new_pos, jnp.nan)
        place = ~done & ~stop & (n < M)
        slot = jnp.arange(M)[None, :] == n[:, None]  # [B, M]
        types = jnp.where(place[:, None] & slot, t[:, None] + 1, types)
        R = jnp.where((place[:, None] & slot)[..., None], new_pos[:, None, :], R)
        finished = finished | ((~done & stop)[:, None] & (jnp.arange(M)[None, :] == focus[:, None]))
        n = n + place
        all_done = started & ~jnp.any((jnp.arange(M)[None, :] < n[:, None]) & ~finished, axis=1)
        overflow = ~done & ~stop & (n >= M) & ~place
        done = done | all_done | overflow | ~jnp.all(jnp.isfinite(R), axis=(1, 2))
        return types, R, n, finished, done

    @jax.jit
    def generate(params, key, temperature):
        B = batch
        carry = (jnp.zeros((B, M), jnp.int32), jnp.zeros((B, M, 3), jnp.float32), jnp.zeros(B, jnp.int32),
                 jnp.zeros((B, M), bool), jnp.zeros(B, bool))

        def cond(state):
            i, carry = state
            return (i < 2 * M + 2) & ~jnp.all(carry[4])

        def body(state):
            i, carry = state
            return i + 1, step(params, carry, jax.random.fold_in(key, i), temperature)

        _, (types, R, n, finished, done) = jax.lax.while_loop(cond, body, (jnp.zeros((), jnp.int32), carry))
        placed = jnp.arange(M)[None, :] < n[:, None]
        complete = done & ~jnp.any(placed & ~finished, axis=1) & jnp.all(jnp.isfinite(R), axis=(1, 2))
        Z = jnp.where(types > 0, elements[jnp.maximum(types - 1, 0)], 0)
        return Z, jnp.where(placed[..., None], R, 0.0), complete

    return generate


def generate(config: GSchNetConfig, params, n: int, key, temperature: float | None = None, batch: int = 50,
             progress=None) -> dict:
    """n molecules: {"Z" [n, max_atoms], "R" [n, max_atoms, 3] Å, "finished" [n] (every atom finished, not
    cut at max_atoms), "seconds"}. progress(done, n) is called after every batch."""
    import time

    if n <= 0:
        raise JaxqcError(f"the number of molecules to generate must be positive, not {n}")
    temperature = config.temperature if temperature is None else temperature
    if not temperature > 0:
        raise JaxqcError(f"the sampling temperature must be positive, not {temperature}")
    batch = max(1, min(batch, n))
    gen = make_generator(config, batch)
    net = params["net"] if "net" in params else params
    Zs, Rs, fin = [], [], []
    t0 = time.perf_counter()
    for b in range(0, n, batch):
        Z, R, ok = gen(net, jax.random.fold_in(key, b), jnp.float32(temperature))
        Zs.append(np.asarray(Z)), Rs.append(np.asarray(R)), fin.append(np.asarray(ok))
        if progress is not None:
            progress(min(b + batch, n), n)
    return {"Z": np.concatenate(Zs)[:n], "R": np.concatenate(Rs)[:n], "finished": np.concatenate(fin)[:n],
            "seconds": time.perf_counter() - t0, "temperature": float(temperature)}


# ---- data pool, split, fit --------------------------------------------------------------------------------
def pool(config: GSchNetConfig, data) -> np.ndarray:
    """Indices of the molecules G-SchNet trains on: at most max_heavy_atoms heavy atoms, only its elements,
    one connected bond graph (the traces place atoms along bonds)."""
    from ..kernels.symmetries import bond_graph

    from scipy.sparse.csgraph import connected_components

    heavy = np.sum(data.Z > 1, axis=1)
    ok_el = np.all(np.isin(data.Z, (0, *config.elements)), axis=1)
    keep = []
    for i in np.nonzero((heavy <= config.max_heavy_atoms) & ok_el)[0]:
        m = data.Z[i] > 0
        R = data.R[i][m]
        A = bond_graph(data.Z[i][m], R) & (np.linalg.norm(R[:, None] - R[None], axis=-1) <= config.max_bond_ang)
        if connected_components(A, directed=False)[0] == 1:
            keep.append(i)
    return np.asarray(keep, int)


def split(data, n_train: int, n_valid: int | None, seed: int, config: GSchNetConfig) -> dict:
    """A seeded split of the pool: validation (default 10% of the pool), train = the next n_train, test = the
    rest of the pool."""
    p = pool(config, data)
    n_valid = max(1, len(p) // 10) if n_valid is None else n_valid
    if n_train + n_valid > len(p):
        raise JaxqcError(f"gschnet: the pool (molecules with at most {config.max_heavy_atoms} heavy atoms, "
                         f"elements {', '.join(SYMBOLS[z] for z in config.elements)}) has {len(p)} molecules; "
                         f"--n-train {n_train} + validation {n_valid} do not fit")
    perm = np.random.default_rng(seed).permutation(p)
    return {"train": np.sort(perm[n_valid:n_valid + n_train]), "valid": np.sort(perm[:n_valid]),
            "test": np.sort(perm[n_valid + n_train:]),
            "protocol": f"seeded split (seed {seed}) of the {len(p)} molecules with at most "
                        f"{config.max_heavy_atoms} heavy atoms"}


def init_params(config: GSchNetConfig, key, example, stats=None) -> dict:
    net = GSchNetNet(config)
    S = config.max_atoms + 2
    slots = jnp.ones((1, S), jnp.int32)
    variables = jax.jit(lambda k: net.init(k, slots, jnp.zeros((1, S, 3)), jnp.ones((1, S), bool),
                                           jnp.zeros(1, jnp.int32), method=GSchNetNet.both))(key)
    return {"net": variables["params"], "stats": {"n_types": jnp.asarray(config.n_types, jnp.float32)}}


def fit(config, data, split_, key, budget: Budget, *, out=None, resume: bool = False, progress: bool = True,
        n_devices: int | None = None, target: str = "energy", seed: int = 0) -> Fitted:
    from ..train import loop
    from .network import fitted_from_run, train_config

    tr = np.asarray(split_["train"])
    n_atoms = int(np.max(np.sum(data.Z[tr] > 0, axis=1)))
    if n_atoms + 1 > config.max_atoms:
        config = dataclasses.replace(config, max_atoms=n_atoms + 4)
    bad = sorted({int(z) for z in np.unique(data.Z[tr]) if z and z not in config.elements})
    if bad:
        raise JaxqcError(f"gschnet places {', '.join(SYMBOLS[z] for z in config.elements)}; the training "
                         f"molecules contain {', '.join(SYMBOLS[z] for z in bad)}")
    cfg = train_config(budget, seed)
    cfg = dataclasses.replace(cfg, n_buckets=1)
    params = init_params(config, key, None)
    prov = {"dataset_md5": data.md5, "dataset_name": data.meta.get("name"),
            "dataset_source": str(Path(data.meta["source"]).resolve()) if data.meta.get("source") and
            Path(str(data.meta["source"])).is_file() else data.meta.get("name"),
            "protocol": split_.get("protocol", "split given by the caller"),
            "test_idx": np.asarray(split_.get("test", np.zeros(0, int))), "target": "construction traces",
            "elements": list(config.elements)}
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="jaxqc_gschnet_"))
    summary = loop.train("gschnet", config, energy_fn(config), params, data, split_, cfg, run_dir, resume=resume,
                         n_devices=n_devices, provenance=prov, progress=progress,
                         objective=TraceObjective(config, seed))
    return fitted_from_run(summary, run_dir, config)


def energy_fn(config):
    def energy(params, molecules):
        raise JaxqcError("gschnet generates molecules (jaxqc generate RUN); it has no energy")

    return energy


def config_from_json(d: dict) -> GSchNetConfig:
    return GSchNetConfig(**config_fields(GSchNetConfig, d.get("model", d)))


def applies(kind: str, data) -> str | None:
    return "G-SchNet generates molecules: `jaxqc train gschnet --data qm9`, then `jaxqc generate RUN`"


def from_flags(flags: dict, data) -> tuple[dict, Budget]:
    from .network import make_from_flags

    overrides, budget = make_from_flags("gschnet", {"features": "features", "interactions": "interactions",
                                                    "cutoff": "cutoff_ang"})(flags, data)
    if flags.get("max_heavy_atoms") is not None:
        overrides["max_heavy_atoms"] = int(flags["max_heavy_atoms"])
    return overrides, budget


def describe(config: GSchNetConfig) -> str:
    return (f"gschnet, {config.features} features, {config.interactions} interactions, "
            f"<= {config.max_heavy_atoms} heavy atoms, grid {config.grid_spacing_ang:g} Å")


def evaluate_generated(config, params, header, generated: dict, data=None, relax: bool = True, relax_limit=None,
                       progress=None) -> dict:
    from ..generation import evaluate

    return evaluate(generated, header, data=data, relax=relax, relax_limit=relax_limit, progress=progress)


# quick: sized to learn on one CPU core in about an hour (molecules of up to 7 heavy atoms)
QUICK_MODEL = {"features": 64, "interactions": 4, "head_hidden": (64, 64), "max_heavy_atoms": 7,
               "grid_spacing_ang": 0.1, "steps_per_molecule": 8}
TINY_MODEL = {"features": 16, "interactions": 1, "head_hidden": (16,), "n_dist_bins": 150, "n_rbf": 8,
              "grid_spacing_ang": 0.15, "steps_per_molecule": 4}
SPEC = register(ModelSpec(
    name="gschnet", config_class=GSchNetConfig, fit=fit, energy=energy_fn, outputs=("molecules",),
    describe=describe,
    budgets={("property", "tiny"): Budget((40,), epochs=1, options={"model": TINY_MODEL}),
             ("property", "quick"): Budget((3000,), epochs=10**9, max_minutes=60.0, options={
                 "model": QUICK_MODEL, "train": {"batch_size": 16, "lr": 5e-4}}),
             ("property", "paper"): Budget((50_000,), epochs=500, options={
                 "train": {"batch_size": 5, "lr": 1e-4, "patience": 50}})},
    description="G-SchNet: autoregressive 3D molecule generation (Gebauer 2019)",
    applies=applies, from_flags=from_flags, config_from_json=config_from_json,
    force_field=lambda config, header: False, split=split, init=init_params,
    generate=generate, evaluate_generated=evaluate_generated))
