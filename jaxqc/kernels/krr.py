"""Kernel ridge regression of molecular properties (Rupp 2012; Hansen 2015; Faber 2017).

alpha = (K + lambda I)^-1 (y - mean), prediction y* = K(x*, X) alpha + mean. All targets are fitted at
once from one Cholesky factorisation (float64) with a multi-column right-hand side. sigma and lambda are
chosen on a validation split from a grid; one distance matrix serves every sigma, one kernel every lambda.
Extensive energies (U0, U, H, G) are fitted as atomization energies (total minus QM9's free-atom
energies) and the atom energies are added back at prediction, so MAEs on total and atomization
energies are the same number.
"""
from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..data import splits
from ..data.molecules import Dataset
from ..elements import qm9_atom_reference_kcal_mol
from ..errors import DataError, JaxqcError
from ..representations.bob import bag_of_bonds, bag_sizes, check_fits
from ..representations.coulomb import coulomb_eigenvalues, sorted_coulomb_matrix
from .base import distance_kind, kernel_from_distances, pairwise_distances
from .linalg import memory_budget_bytes, regularized_solve

REPRESENTATIONS = ("cm", "cm-eigen", "bob")
ATOMIZED = ("U0", "U", "H", "G")  # fitted as atomization energies


@dataclasses.dataclass(frozen=True)
class KRRConfig:
    representation: str = "cm"
    kernel: str = "laplacian"
    targets: tuple = ("U0",)
    sigmas: tuple = (800.0, 1600.0, 3200.0, 6400.0, 12800.0, 25600.0, 51200.0)  # Laplacian on QM9 CM/BoB
    lambdas: tuple = (1e-10, 1e-8, 1e-6)
    select_on: str | None = None  # target whose validation MAE picks (sigma, lambda); default: the first
    block_mb: float = 64.0
    bags: tuple | None = None     # bag-of-bonds layout ((z_a, z_b, size), ...); None: from the training data


# ---- representations over a Dataset ------------------------------------------------------------
def represent(data: Dataset, representation: str, bags=None, chunk: int = 4096) -> tuple[np.ndarray, tuple]:
    """[M, D] float64 representation of every molecule (jit over fixed-size chunks). Returns (X, bags)."""
    if representation not in REPRESENTATIONS:
        raise JaxqcError(f"unknown representation {representation!r}; expected one of {REPRESENTATIONS}")
    if representation == "bob":
        bags = bag_sizes(data.Z) if bags is None else tuple(tuple(b) for b in bags)
        check_fits(data.Z, bags)
    fn = {"cm": sorted_coulomb_matrix, "cm-eigen": coulomb_eigenvalues,
          "bob": lambda Z, R: bag_of_bonds(Z, R, bags)}[representation]
    with jax.enable_x64(True):
        f = jax.jit(fn)
        out = []
        for s in range(0, len(data), chunk):
            Z, R = data.Z[s:s + chunk], data.R[s:s + chunk]
            n = len(Z)
            if n < chunk and len(data) > chunk:  # pad the last chunk: one compilation
                Z = np.concatenate([Z, np.repeat(Z[:1], chunk - n, 0)])
                R = np.concatenate([R, np.repeat(R[:1], chunk - n, 0)])
            out.append(np.asarray(f(jnp.asarray(Z), jnp.asarray(R, jnp.float64)))[:n])
    return np.concatenate(out).astype(np.float64), bags


def available_targets(data: Dataset, asked: str = "") -> str:
    """'available: a, b, energy' (the energy of frames of one molecule too), with a hint for a case slip; or
    that the data set has nothing to learn."""
    names = sorted(data.props) + (["energy"] if data.E is not None else [])
    if not names:
        return "it has no energies and no properties to learn"
    close = [n for n in names if n.lower() == asked.lower()]
    return f"available: {', '.join(names)}" + (f"; did you mean {close[0]!r}?" if close else "")


def target_matrix(data: Dataset, targets) -> np.ndarray:
    """[M, T] fit targets: atomization energies for U0/U/H/G, the raw property otherwise."""
    cols = []
    for t in targets:
        if t == "energy" and data.E is not None:  # frames of one molecule: the energy itself
            cols.append(np.asarray(data.E, np.float64))
            continue
        if t not in data.props:
            raise DataError(f"target {t!r} not in the data set ({available_targets(data, t)})")
        y = np.asarray(data.props[t], np.float64)
        if t in ATOMIZED:
            y = y - qm9_atom_reference_kcal_mol(data.Z, t)
        cols.append(y)
    return np.stack(cols, 1)


# ---- fit -------------------------------------------------------------------------------------
def fit(X_train, Y_train, X_valid, Y_valid, config: KRRConfig, progress: bool = False) -> dict:
    """Grid search over (sigma, lambda) on the validation set, returning the best model's arrays and
    the full grid of validation MAEs [n_sigma, n_lambda, T]."""
    kind = distance_kind(config.kernel)
    sel = config.targets.index(config.select_on) if config.select_on else 0
    timings = {}
    t = time.perf_counter()
    D_train = pairwise_distances(X_train, X_train, kind, config.block_mb,
                                 progress="train kernel" if progress else None)
    D_valid = pairwise_distances(X_valid, X_train, kind, config.block_mb,
                                 progress="validation kernel" if progress else None)
    timings["distances_s"] = time.perf_counter() - t
    mean = Y_train.mean(0)
    grid = np.full((len(config.sigmas), len(config.lambdas), Y_train.shape[1]), np.inf)
    best = None
    t = time.perf_counter()
    for i, sigma in enumerate(config.sigmas):
        K = kernel_from_distances(D_train, config.kernel, sigma)
        Kv = kernel_from_distances(D_valid, config.kernel, sigma)
        for j, lam in enumerate(config.lambdas):
            Kc = K.copy() if j < len(config.lambdas) - 1 else K
            try:
                alpha = regularized_solve(Kc, Y_train - mean, lam)
            except JaxqcError:
                continue
            mae = np.abs(Kv @ alpha + mean - Y_valid).mean(0)
            grid[i, j] = mae
            if best is None or mae[sel] < grid[best[0], best[1], sel]:
                best = (i, j, alpha)
            if progress:
                print(f"  sigma={sigma:g} lambda={lam:g}: validation MAE {mae[sel]:.4g}", file=sys.stderr)
    timings["grid_solves_s"] = time.perf_counter() - t
    if best is None:
        raise JaxqcError("no (sigma, lambda) on the grid gave a positive-definite kernel")
    i, j, alpha = best
    return {"alpha": alpha, "mean": mean, "sigma": config.sigmas[i], "lambda": config.lambdas[j],
            "grid_mae": grid, "timings": timings}


def choose_solver(n: int, budget_bytes: int | None = None) -> str:
    """'dense' (float64 kernel, Cholesky in place: 8 N^2 bytes), else 'cg' (float32 kernel stored once:
    4 N^2 bytes), else 'cg-blocked' (nothing N x N stored; kernel recomputed per product)."""
    budget = memory_budget_bytes() if budget_bytes is None else budget_bytes
    if 8.0 * n * n * 1.1 < budget:
        return "dense"
    if 4.0 * n * n * 1.2 < budget:
        return "cg"
    return "cg-blocked"


def fit_fixed(X_train, Y_train, config: KRRConfig, sigma: float, lam: float, solver: str = "auto",
              rank: int = 1000, tol: float = 1e-7, progress: bool = False) -> dict:
    """One fit at fixed (sigma, lambda), timed per stage. solver: 'dense' (float64 Cholesky, in place),
    'cg' / 'cg-blocked' (Nyström-preconditioned CG, see kernels/cg.py) or 'auto' (by memory)."""
    from . import cg

    solver = choose_solver(len(X_train)) if solver == "auto" else solver
    mean = Y_train.mean(0)
    t0 = time.perf_counter()
    info = {}
    if solver == "dense":
        D = pairwise_distances(X_train, X_train, distance_kind(config.kernel), config.block_mb,
                               progress="train kernel" if progress else None)
        t1 = time.perf_counter()
        alpha = regularized_solve(kernel_from_distances(D, config.kernel, sigma, inplace=True), Y_train - mean, lam)
        del D
    elif solver in ("cg", "cg-blocked"):
        alpha, info = cg.solve_matrix_free(X_train, Y_train - mean, config.kernel, sigma, lam,
                                           stored=solver == "cg", rank=rank, tol=tol, progress=progress)
        t1 = t0 + info["timings"]["operator_s"]
    else:
        raise JaxqcError(f"unknown solver {solver!r}; expected auto, dense, cg or cg-blocked")
    t2 = time.perf_counter()
    return {"alpha": alpha, "mean": mean, "sigma": sigma, "lambda": lam, "solver": solver,
            "cg": {k: v for k, v in info.items() if k != "history"},
            "timings": {"kernel_s": t1 - t0, "solve_s": t2 - t1}}


def predict(X, X_train, alpha, mean, config: KRRConfig, sigma: float, progress: bool = False,
            chunk: int = 2048) -> np.ndarray:
    """[M, T] predictions of the fitted targets (before adding atom energies back), `chunk` molecules at
    a time so that only a [chunk, N_train] kernel block is ever held."""
    out = []
    t0 = time.perf_counter()
    for s in range(0, len(X), chunk):
        D = pairwise_distances(X[s:s + chunk], X_train, distance_kind(config.kernel), config.block_mb)
        out.append(kernel_from_distances(D, config.kernel, sigma, inplace=True) @ alpha + mean)
        if progress:
            print(f"\r  prediction kernel: {min(s + chunk, len(X))}/{len(X)} ({time.perf_counter() - t0:.1f} s)",
                  end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return np.concatenate(out) if out else np.zeros((0, alpha.shape[1]))


# ---- the model: split and load (fit and prediction: jaxqc.models.krr) ------------------------------
def default_split(data: Dataset, n_train: int, n_valid: int | None = None, seed: int = 0) -> dict:
    """QM9: the fixed protocol (10k test, 2k validation, nested training prefixes). Other data: a
    seeded random split with 10% test and (by default) 10% validation. See `splits.for_krr`."""
    return splits.for_krr(data, n_train, n_valid, seed)


def load_krr(path) -> dict:
    """A saved KRR model as a dict (alpha, mean, X_train, config, sigma, lambda, bags, grid_mae, provenance,
    units), from files of this and earlier versions (through the model registry's one load)."""
    from ..models import load

    model = load(path)
    if model.kind != "krr":
        raise JaxqcError(f"{path}: a {model.kind} model, not a KRR model")
    cfg = model.header["config"]
    grid_mae = cfg.get("fit", {}).get("grid_mae", cfg.get("grid_mae"))
    config = model.config
    return {**model.params, "config": config, "sigma": config.sigmas[0], "lambda": config.lambdas[0],
            "bags": config.bags, "grid_mae": np.asarray(grid_mae), "provenance": model.provenance,
            "units": model.header["units"]}
