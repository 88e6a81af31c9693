"""A learnable pair potential as a jaxqc plugin: one file outside jaxqc, registered with jaxqc.models.register
(`jaxqc --plugin tests/plugins/pair_potential.py train pair ...` or JAXQC_PLUGINS=...).

E = sum_i e[Z_i] + sum_{i<j} sum_k c[Z_i Z_j, k] phi_k(r_ij),  phi_k(r) = exp(-(r - mu_k)² / 2w²) fc(r),
with Gaussians mu_k on [r_min, cutoff] and a cosine cutoff fc. E is linear in (e, c), so the fit is ridge
least squares on energies and forces, with the design matrix the Jacobian of (E, -dE/dR) by the coefficients.
"""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxqc.errors import JaxqcError
from jaxqc.models import Budget, Fitted, ModelSpec, register
from jaxqc.potential import energy_and_forces_fn


@dataclasses.dataclass(frozen=True)
class PairConfig:
    elements: tuple = (1, 6, 7, 8)  # atomic numbers the model knows
    n_basis: int = 8                # Gaussians per element pair
    r_min_ang: float = 0.7
    cutoff_ang: float = 5.0
    lam: float = 1e-6               # ridge regulariser (relative to the mean diagonal of the normal matrix)
    force_weight: float = 1.0       # weight of force rows ((kcal/mol/Å)² against (kcal/mol)²)


def _tables(config):
    n = len(config.elements)
    lut = np.zeros(119, np.int32)  # atomic number -> element index
    lut[list(config.elements)] = np.arange(n)
    pair = np.zeros((n, n), np.int32)  # element indices -> pair index (symmetric)
    pair[np.triu_indices(n)] = np.arange(n * (n + 1) // 2)
    return lut, np.maximum(pair, pair.T), n * (n + 1) // 2


def make_energy(config):
    lut, pair, _ = _tables(config)
    mu = np.linspace(config.r_min_ang, config.cutoff_ang, config.n_basis)
    width = (config.cutoff_ang - config.r_min_ang) / (config.n_basis - 1)

    def energy(params, molecules):  # [B] kcal/mol
        e = jnp.asarray(lut)[molecules.Z]  # [B, A]
        m = molecules.mask
        both = m[:, :, None] & m[:, None, :] & ~jnp.eye(m.shape[1], dtype=bool)
        d2 = jnp.sum((molecules.R[:, :, None] - molecules.R[:, None]) ** 2, -1)
        r = jnp.sqrt(jnp.where(both, d2, 1.0))  # [B, A, A] Å, safe on the diagonal and padding
        fc = jnp.where(r < config.cutoff_ang, 0.5 * (jnp.cos(jnp.pi * r / config.cutoff_ang) + 1), 0.0)
        phi = jnp.exp(-0.5 * ((r[..., None] - mu) / width) ** 2) * fc[..., None]  # [B, A, A, K]
        c = params["c"][jnp.asarray(pair)[e[:, :, None], e[:, None, :]]]  # [B, A, A, K]
        pairs = 0.5 * jnp.sum(jnp.where(both[..., None], c * phi, 0.0), (1, 2, 3))
        return pairs + jnp.sum(jnp.where(m, params["e"][e], 0.0), 1)

    return energy


def fit(config, data, split, key, budget, *, target="energy", **_):
    """Ridge least squares of the energies (and forces, when the data have them) of split["train"]."""
    if target != "energy" or data.E is None:
        raise JaxqcError("pair: learns energies (and forces) of frames; the data set has no energies")
    bad = sorted(set(np.unique(data.Z[data.Z > 0]).tolist()) - set(config.elements))
    if bad:
        raise JaxqcError(f"pair: element(s) {bad} not in the model's elements {config.elements}")
    config = dataclasses.replace(config, lam=float(budget.options.get("lam", config.lam)))
    _, _, n_pairs = _tables(config)
    n_e = len(config.elements)
    shapes = {"e": (n_e,), "c": (n_pairs, config.n_basis)}
    unflat = lambda th: {"e": th[:n_e], "c": th[n_e:].reshape(shapes["c"])}  # noqa: E731
    ef = energy_and_forces_fn(make_energy(config))
    tr = np.asarray(split["train"])
    with jax.enable_x64(True):
        mol = data.molecules(tr, dtype=jnp.float64)
        rows = lambda th: jnp.concatenate([a.reshape(len(tr), -1) for a in ef(unflat(th), mol)], 1)  # noqa: E731
        X = np.asarray(jax.jit(jax.jacfwd(rows))(jnp.zeros(n_e + n_pairs * config.n_basis)))  # [N, 1 + 3A, P]
    y = np.concatenate([data.E[tr, None], np.zeros((len(tr), X.shape[1] - 1)) if data.F is None else
                        data.F[tr].reshape(len(tr), -1)], 1)
    w = np.ones(X.shape[1]) * np.sqrt(config.force_weight if data.F is not None else 0.0)
    w[0] = 1.0
    X, y = (X * w[:, None]).reshape(-1, X.shape[-1]), (y * w).reshape(-1)
    G = X.T @ X
    theta = np.linalg.solve(G + config.lam * np.mean(np.diag(G)) * np.eye(len(G)), X.T @ y)
    params = unflat(theta)
    info = {"train_rmse": float(np.sqrt(np.mean((X @ theta - y) ** 2))), "n_params": int(len(theta))}
    return Fitted({k: np.asarray(v) for k, v in params.items()}, info, config)


SPEC = register(ModelSpec(
    name="pair", config_class=PairConfig, fit=fit, energy=make_energy, outputs=("energy", "forces"),
    describe=lambda c: f"pair potential ({c.n_basis} Gaussians per element pair, cutoff {c.cutoff_ang:g} Å)",
    description="a learnable pair potential (a jaxqc plugin example)", float64=True,
    applies=lambda kind, data: None if kind == "frames" and data.E is not None else "learns energies of frames",
    from_flags=lambda flags, data: ({}, Budget()),
    budgets={("frames", "tiny"): Budget((20, 40)), ("frames", "quick"): Budget((100, 200, 500, 1000)),
             ("frames", "paper"): Budget((1000,))}))
