"""Kernel ridge regression (Rupp 2012, Hansen 2015) as a model family: a closed-form fit, and a jit-able
energy(params, molecules) that computes the representation (sorted Coulomb matrix, its eigenvalues or
the bag of bonds) inside, so KRR runs through the same prediction and evaluation path as every model.

The fit (jaxqc.kernels.krr) picks (sigma, lambda) on the validation molecules; the resolved config keeps
the chosen pair as its one-point grid (and the bag layout), so it refits the same model. A grid may also
be given as multiples of the median training distance (budget option "scales", for frames of one
molecule) or replaced above a size by a fixed pair (options "grid_max_n", "fixed": the paper budget).
Targets: QM9 properties (U0, U, H, G fitted as atomization energies) or "energy" for frames.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from ..errors import JaxqcError
from ..kernels.krr import KRRConfig
from .registry import Budget, Fitted, ModelSpec, config_fields, register

CHUNK = 1024  # training molecules per step of the prediction's distance map
FRAME_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # x median L1 distance (Laplacian sigma)
FRAME_LAMBDAS = (1e-10, 1e-8, 1e-6)
CURVE_N = (100, 200, 500, 1000)


def _targets(config, target):
    return (target,) if target is not None and config.targets == KRRConfig.targets else tuple(config.targets)


def fit(config: KRRConfig, data, split, key, budget: Budget, *, progress: bool = False, target=None,
        **_) -> Fitted:
    from ..kernels import krr
    from ..kernels.base import distance_kind, pairwise_distances
    from ..representations.bob import bag_sizes

    targets = _targets(config, target)
    config = dataclasses.replace(config, targets=targets)
    tr, va = np.asarray(split["train"]), np.asarray(split["valid"])
    n = len(tr)
    t0 = time.perf_counter()
    bags = config.bags if config.bags is not None else (bag_sizes(data.Z) if config.representation == "bob" else None)
    sub = data.subset(np.concatenate([tr, va]))
    X, bags = krr.represent(sub, config.representation, bags)
    Y_all = krr.target_matrix(sub, targets)
    Y, Yv = Y_all[:n], Y_all[n:]
    t_rep = time.perf_counter() - t0
    opts = budget.options
    sigmas, lambdas = tuple(config.sigmas), tuple(opts.get("lambdas", config.lambdas))
    if "scales" in opts:  # a grid relative to the data: multiples of the median training distance
        D = pairwise_distances(X[:n], X[:n], distance_kind(config.kernel))
        med = float(np.median(D) if config.kernel == "laplacian" else np.sqrt(np.median(D)))
        sigmas = tuple(float(f"{med * k:.4g}") for k in opts["scales"])
    elif "sigmas" in opts:
        sigmas = tuple(opts["sigmas"])
    fixed = opts.get("fixed") or opts.get("fixed_by_representation", {}).get(config.representation)
    if fixed and n > opts.get("grid_max_n", math.inf):
        sigmas, lambdas = (float(fixed[0]),), (float(fixed[1]),)
    config = dataclasses.replace(config, sigmas=sigmas, lambdas=lambdas, bags=bags)
    if len(sigmas) == 1 and len(lambdas) == 1:
        # one (sigma, lambda): no grid, so no dense validation kernel; the solver follows memory
        model = krr.fit_fixed(X[:n], Y, config, sigmas[0], lambdas[0], progress=progress)
        pv = krr.predict(X[n:], X[:n], model["alpha"], model["mean"], config, sigmas[0]) if len(va) else Yv
        model["grid_mae"] = np.abs(pv - Yv).mean(0)[None, None, :]
    elif krr.choose_solver(n) != "dense":
        raise JaxqcError(f"a dense grid search at N = {n} does not fit in memory here; give one --sigma-grid "
                         f"and one --lambda-grid value (e.g. chosen at a smaller N) to use the matrix-free solver")
    else:
        model = krr.fit(X[:n], Y, X[n:], Yv, config, progress=progress)
    model["timings"]["representation_s"] = t_rep
    resolved = dataclasses.replace(config, sigmas=(float(model["sigma"]),), lambdas=(float(model["lambda"]),))
    params = {"alpha": np.asarray(model["alpha"]), "mean": np.asarray(model["mean"]), "X_train": X[:n]}
    info = {"sigma": float(model["sigma"]), "lambda": float(model["lambda"]), "grid_sigmas": list(sigmas),
            "grid_lambdas": list(lambdas), "grid_mae": np.asarray(model["grid_mae"]).tolist(),
            "solver": model.get("solver", "dense"), "timings": model["timings"],
            "validation_mae": {t: float(m) for t, m in zip(targets, np.min(model["grid_mae"], axis=(0, 1)))}}
    return Fitted(params, info, resolved)


def prepare(config: KRRConfig, params) -> dict:
    """Training representations and coefficients in [chunks, CHUNK, .] blocks (zero coefficients pad)."""
    X, alpha = np.asarray(params["X_train"], np.float64), np.asarray(params["alpha"], np.float64)
    if alpha.ndim == 1:
        alpha = alpha[:, None]
    pad = -len(X) % CHUNK
    X = np.concatenate([X, np.repeat(X[:1], pad, 0)]).reshape(-1, CHUNK, X.shape[1])
    alpha = np.concatenate([alpha, np.zeros((pad, alpha.shape[1]))]).reshape(-1, CHUNK, alpha.shape[1])
    return {"X_train": X, "alpha": alpha, "mean": np.asarray(params["mean"], np.float64).reshape(-1)}


def atom_width(config: KRRConfig, n_features: int) -> int | None:
    """The atom count A the representation was computed with (its length is A(A+1)/2 or A)."""
    if config.representation == "cm":
        return int(round((math.sqrt(8 * n_features + 1) - 1) / 2))
    if config.representation == "cm-eigen":
        return n_features
    return None


def representation_fn(config: KRRConfig):
    from ..representations.bob import bag_of_bonds
    from ..representations.coulomb import coulomb_eigenvalues, sorted_coulomb_matrix

    if config.representation == "bob":
        bags = tuple(tuple(b) for b in config.bags)
        return lambda Z, R: bag_of_bonds(Z, R, bags)
    return {"cm": sorted_coulomb_matrix, "cm-eigen": coulomb_eigenvalues}[config.representation]


def make_energy(config: KRRConfig):
    """energy(params, molecules) -> [B] (one target) or [B, T]: the kernel expansion over the training
    molecules, plus the QM9 free-atom energies for atomization targets. Run under float64."""
    import jax
    import jax.numpy as jnp

    from ..elements import QM9_ATOM_REF_HA, MAX_Z
    from ..kernels.base import _l1_block, _sq_block, kernel_scale
    from ..kernels.krr import ATOMIZED
    from ..units import HARTREE_KCAL_MOL

    rep = representation_fn(config)
    scale = kernel_scale(config.kernel, float(config.sigmas[0]))
    laplacian = config.kernel == "laplacian"
    refs = np.zeros((MAX_Z + 1, len(config.targets)))
    for k, t in enumerate(config.targets):
        if t in ATOMIZED:
            for z, e in QM9_ATOM_REF_HA[t].items():
                refs[z, k] = e * HARTREE_KCAL_MOL

    def energy(params, molecules):
        Z, R = molecules.Z, molecules.R
        A = atom_width(config, params["X_train"].shape[-1])
        if A is not None:  # the sorted Coulomb matrix's length depends on the padded atom count
            if Z.shape[1] > A:
                Z, R = Z[:, :A], R[:, :A]
            elif Z.shape[1] < A:
                Z = jnp.pad(Z, ((0, 0), (0, A - Z.shape[1])))
                R = jnp.pad(R, ((0, 0), (0, A - R.shape[1]), (0, 0)))
        x = rep(Z, R)  # [B, D]
        dist = _l1_block if laplacian else _sq_block
        D = jax.lax.map(lambda xc: dist(x, xc), params["X_train"])  # [chunks, B, CHUNK]
        D = jnp.moveaxis(D, 0, 1).reshape(x.shape[0], -1)  # [B, N_pad]
        K = jnp.exp(D * scale)  # as kernels.base.kernel_from_distances: the same rounding as the fit
        y = K @ params["alpha"].reshape(K.shape[1], -1) + params["mean"]  # one product over all N
        y = y + jnp.asarray(refs, y.dtype)[molecules.Z].sum(1)
        return y[:, 0] if y.shape[1] == 1 else y

    return energy


def config_from_json(d: dict) -> KRRConfig:
    """The resolved config, also from files of earlier versions (grid + the chosen 'sigma', 'lambda')."""
    cfg = config_fields(KRRConfig, d)
    if d.get("sigma") is not None:
        cfg["sigmas"], cfg["lambdas"] = (float(d["sigma"]),), (float(d["lambda"]),)
    if cfg.get("bags") is not None:
        cfg["bags"] = tuple(tuple(b) for b in cfg["bags"])
    return KRRConfig(**cfg)


def config_json(config: KRRConfig) -> dict:
    d = dataclasses.asdict(config)
    d["bags"] = [list(b) for b in config.bags] if config.bags else None
    if len(config.sigmas) == 1 and len(config.lambdas) == 1:  # the keys earlier versions wrote
        d["sigma"], d["lambda"] = config.sigmas[0], config.lambdas[0]
    return d


def from_flags(flags: dict, data):
    overrides = {k: flags[k] for k in ("representation", "kernel") if flags.get(k) is not None}
    targets = tuple(flags.get("target") or ["U0" if "U0" in data.props or data.E is None else "energy"])
    if "all" in targets:
        from ..data.qm9 import QM9_TARGETS
        targets = tuple(t for t in ("U0", "U", "H", "G", "HOMO", "LUMO", "gap", "ZPVE", "mu", "alpha", "R2", "Cv")
                        if t in QM9_TARGETS)
    overrides["targets"] = targets
    if flags.get("sigma_grid"):
        overrides["sigmas"] = tuple(flags["sigma_grid"])
    if flags.get("lambda_grid"):
        overrides["lambdas"] = tuple(flags["lambda_grid"])
    return overrides, Budget()


def applies(kind: str, data) -> str | None:
    if kind == "frames" and data.E is None:
        return "energy-only model; the data set has no energies"
    return None


def default_split(data, n_train, n_valid, seed, config=None):
    from ..data.splits import for_krr

    return for_krr(data, n_train, n_valid, seed)


def describe(config: KRRConfig) -> str:
    s = f", sigma {config.sigmas[0]:g}, lambda {config.lambdas[0]:g}" if len(config.sigmas) == 1 else ""
    return f"krr ({config.representation}, {config.kernel} kernel{s}), targets {', '.join(config.targets)}"


_FRAMES = {"scales": FRAME_SCALES, "lambdas": FRAME_LAMBDAS}
SPEC = register(ModelSpec(
    name="krr", config_class=KRRConfig, fit=fit, energy=make_energy, outputs=("energy", "property"),
    describe=describe, description="kernel ridge regression (Rupp 2012; Hansen 2015)", applies=applies,
    from_flags=from_flags, config_json=config_json, config_from_json=config_from_json, float64=True,
    predict_batch=512,
    variants={"krr-cm": {"representation": "cm"}, "krr-bob": {"representation": "bob"}},
    force_field=lambda config, header: False, prepare=prepare, split=default_split,
    n_atoms=lambda config, params: atom_width(config, np.shape(params["X_train"])[-1]),
    budgets={
        ("frames", "tiny"): Budget((20, 40), options={"scales": (1.0, 4.0), "lambdas": (1e-8,)}),
        ("frames", "quick"): Budget(CURVE_N, options=_FRAMES),
        ("frames", "paper"): Budget(CURVE_N, options=_FRAMES),
        ("property", "tiny"): Budget((20, 40), options={"sigmas": (10.0, 100.0), "lambdas": (1e-8,)}),
        ("property", "quick"): Budget((500, 1000, 2000, 5000)),
        # grid on validation up to 10k; above, the (sigma, lambda) that experiments/qm9_krr_learning_curve.py
        # chose at 20k, with the memory-aware solver (dense, or Nyström-preconditioned CG)
        ("property", "paper"): Budget((1000, 2000, 5000, 10_000, 20_000, 50_000, 110_000),
                                      options={"grid_max_n": 10_000, "fixed_by_representation": {
                                          "cm": (3200.0, 1e-6), "bob": (1600.0, 1e-6)}}),
    }))
