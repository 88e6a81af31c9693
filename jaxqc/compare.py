"""`jaxqc compare`: every method that applies, on one data set, with one protocol, in one table.

Two kinds of data, two method sets:
  frames      frames of one molecule with energies (and forces): ethanol-xtb, rMD17/MD17/sGDML npz, extxyz.
              gdml, sgdml (forces), schnet, dtnn, cormorant (energies + forces), krr-cm, krr-bob (energies only: the
              Coulomb-matrix models here have no force output, so their force MAE is "not applicable").
  property    one geometry per molecule with QM9 properties (qm9, or a file with them; --target, default
              U0): krr-cm, krr-bob, schnet, dtnn, cormorant. gdml/sgdml do not apply (they learn the force field
              of one molecule) and are listed as such.

Protocol (the same frames for every method):
  rMD17 (--test FILE): of the --data file, a seed-0 permutation; its first 1000 frames are the pool
    (--data with fewer frames: all), the last 50 of those the validation frames and the rest the
    training pool (N = 1000 means 950 + 50); the test frames are all of FILE. The sGDML runs then are
    those of experiments/md17_sgdml.py (same frames, same sigma grid and lambda, same permutations).
  QM9 (the registered data set): jaxqc's fixed split (10,000 test, 2,000 validation, train[:N] nested).
  any other file: a seed-0 permutation: test = its first n_test frames, validation = its last n_valid,
    training pool = what lies between, nested for learning curves.
sigma / lambda grids and network early stopping use the validation frames; the test frames are seen
only for the reported MAE and throughput.

Each method runs in its own worker process (`python -m jaxqc.compare SPEC`), so that its peak memory is
its own: `peak_rss_mb` is the resident-set high-water mark (Linux VmHWM) of the worker during one run
(fit + test prediction), reset before each run through /proc/self/clear_refs; it includes the Python
interpreter, the JAX runtime and the data set (`rss_start_mb` is the RSS when the run began).
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import DataError, JaxqcError
from .nn import NETWORK_KINDS

METHODS = ("krr-cm", "krr-bob", "gdml", "sgdml", *NETWORK_KINDS)
BUDGETS = ("quick", "paper")  # "tiny" (seconds; tests) is accepted but not advertised
SGDML_GRID = tuple(float(s) for s in range(2, 100, 10))  # sgdml's default sigma grid 2:10:100 (1/Å)
SMALL_GRID = (12.0, 22.0, 32.0, 42.0)  # experiments/md17_sgdml.py's curve grid (the optimum at N = 200 of
# five of the six rMD17 molecules lies inside it; ethanol-xtb's at N = 200 is 22)
KRR_FRAME_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # x median L1 distance of the training set
# (Laplacian sigma; on ethanol-xtb the Laplacian kernel halved the energy MAE of a Gaussian one)
QUICK_NET_NOTE = ("quick budget: networks train for a fixed wall time (not to convergence) and SchNet is "
                  "smaller than published (64 features, 3 interactions vs 128 and 6); DTNN has its published "
                  "sizes. Their MAEs show where a short CPU run gets, not the papers' accuracy.")

BUDGET_NOTES = {
    "quick": "quick: small N and networks trained for 2 min each; about 10 min on 2 CPU cores for ethanol-xtb",
    "paper": ("paper: the published protocols (rMD17: 1000 frames = 950 training + 50 validation; QM9: N up to "
              "110k; SchNet/DTNN at their published sizes, trained up to 24 h (MD) / 48 h (QM9) with early "
              "stopping): runs for accelerators"),
    "tiny": "tiny: a few frames and epochs; exercises every code path in seconds (tests), no meaningful errors",
}

# ---- budgets: what runs, at which N, with which settings (edit here) --------------------------------
# "n": training sizes (clamped to the training pool: N = 1000 on rMD17 is 950 + 50 validation)
# the "tiny" budget (tests): one epoch of each network on 40 molecules, the same for both kinds of data
_TINY_TRAIN = {"batch_size": 20, "n_buckets": 1}
TINY_NETWORKS = {
    "schnet": {"n": (40,), "epochs": 1, "model": {"features": 16, "interactions": 1, "n_rbf": 10}, "train": _TINY_TRAIN},
    "dtnn": {"n": (40,), "epochs": 1, "model": {"features": 8, "factors": 8, "interactions": 1, "n_rbf": 10},
             "train": _TINY_TRAIN},
    "cormorant": {"n": (40,), "epochs": 1, "model": {"channels": 3, "cg_levels": 1, "l_max": 1, "n_rbf": 8,
                                                     "radial_hidden": 8, "readout_hidden": 8}, "train": _TINY_TRAIN},
}
PLANS = {
    "frames": {
        "quick": {
            "protocol": {"n_test": 1000, "n_valid": 50},
            "krr-cm": {"n": (100, 200, 500, 1000), "kernel": "laplacian", "scales": KRR_FRAME_SCALES,
                       "lambdas": (1e-10, 1e-8, 1e-6)},
            "krr-bob": {"n": (100, 200, 500, 1000), "kernel": "laplacian", "scales": KRR_FRAME_SCALES,
                        "lambdas": (1e-10, 1e-8, 1e-6)},
            "gdml": {"n": (50, 100, 200, 500), "sigmas": SMALL_GRID, "lam": 1e-10},
            "sgdml": {"n": (50, 100, 200, 500, 1000), "sigmas": SMALL_GRID, "lam": 1e-10},
            "schnet": {"n": (1000,), "minutes": 2.0, "model": {"features": 64, "interactions": 3}},
            "dtnn": {"n": (1000,), "minutes": 2.0, "model": {}},
            "cormorant": {"n": (1000,), "minutes": 2.0, "model": {"channels": 8, "cg_levels": 3}},
        },
        "paper": {
            "protocol": {"n_test": 1000, "n_valid": 50},
            "krr-cm": {"n": (100, 200, 500, 1000), "kernel": "laplacian", "scales": KRR_FRAME_SCALES,
                       "lambdas": (1e-10, 1e-8, 1e-6)},
            "krr-bob": {"n": (100, 200, 500, 1000), "kernel": "laplacian", "scales": KRR_FRAME_SCALES,
                        "lambdas": (1e-10, 1e-8, 1e-6)},
            "gdml": {"n": (100, 200, 500, 1000), "sigmas": SGDML_GRID, "lam": 1e-10},
            "sgdml": {"n": (100, 200, 500, 1000), "sigmas": SGDML_GRID, "lam": 1e-10},
            "schnet": {"n": (1000,), "minutes": 24 * 60.0, "model": {}, "train": {"patience": 100}},
            "dtnn": {"n": (1000,), "minutes": 24 * 60.0, "model": {}, "train": {"patience": 100}},
            "cormorant": {"n": (1000,), "minutes": 24 * 60.0, "model": {}, "train": {"patience": 100}},
        },
        "tiny": {
            "protocol": {"n_test": 40, "n_valid": 10},
            "krr-cm": {"n": (20, 40), "kernel": "laplacian", "scales": (1.0, 4.0), "lambdas": (1e-8,)},
            "krr-bob": {"n": (40,), "kernel": "laplacian", "scales": (1.0, 4.0), "lambdas": (1e-8,)},
            "gdml": {"n": (20, 40), "sigmas": (10.0, 20.0), "lam": 1e-10},
            "sgdml": {"n": (20, 40), "sigmas": (10.0, 20.0), "lam": 1e-10},
            **TINY_NETWORKS,
        },
    },
    "property": {
        "quick": {
            "protocol": {"n_test": 10_000, "n_valid": 2_000},
            "krr-cm": {"n": (500, 1000, 2000, 5000), "kernel": "laplacian"},
            "krr-bob": {"n": (500, 1000, 2000, 5000), "kernel": "laplacian"},
            "schnet": {"n": (5000,), "minutes": 2.0, "model": {"features": 64, "interactions": 3},
                       "train": {"n_buckets": 4}},
            "dtnn": {"n": (5000,), "minutes": 2.0, "model": {}, "train": {"n_buckets": 4}},
            "cormorant": {"n": (5000,), "minutes": 2.0, "model": {"channels": 8, "cg_levels": 3},
                          "train": {"n_buckets": 4}},
        },
        "paper": {
            "protocol": {"n_test": 10_000, "n_valid": 2_000},
            # grid on validation up to 10k; above, the (sigma, lambda) that experiments/qm9_krr_learning_curve.py
            # chose at 20k, with the memory-aware solver (dense, or Nyström-preconditioned CG)
            "krr-cm": {"n": (1000, 2000, 5000, 10_000, 20_000, 50_000, 110_000), "kernel": "laplacian",
                       "grid_max_n": 10_000, "fixed": (3200.0, 1e-6)},
            "krr-bob": {"n": (1000, 2000, 5000, 10_000, 20_000, 50_000, 110_000), "kernel": "laplacian",
                        "grid_max_n": 10_000, "fixed": (1600.0, 1e-6)},
            "schnet": {"n": (110_000,), "minutes": 48 * 60.0, "model": {}, "train": {"patience": 100}},
            "dtnn": {"n": (110_000,), "minutes": 48 * 60.0, "model": {}, "train": {"patience": 100}},
            "cormorant": {"n": (110_000,), "minutes": 48 * 60.0, "model": {}, "train": {"patience": 100}},
        },
        "tiny": {
            "protocol": {"n_test": 40, "n_valid": 20},
            "krr-cm": {"n": (20, 40), "kernel": "laplacian", "sigmas": (10.0, 100.0), "lambdas": (1e-8,)},
            "krr-bob": {"n": (40,), "kernel": "laplacian", "sigmas": (10.0, 100.0), "lambdas": (1e-8,)},
            **TINY_NETWORKS,
        },
    },
}

DESCRIPTIONS = {
    "krr-cm": "kernel ridge regression, sorted Coulomb matrix (Rupp 2012)",
    "krr-bob": "kernel ridge regression, bag of bonds (Hansen 2015)",
    "gdml": "GDML: kernel force field from forces (Chmiela 2017)",
    "sgdml": "sGDML: GDML symmetrised over the molecule's permutations (Chmiela 2018)",
    "schnet": "SchNet continuous-filter network (Schütt 2018)",
    "dtnn": "DTNN deep tensor neural network (Schütt 2017)",
    "cormorant": "Cormorant covariant Clebsch–Gordan network (Anderson 2019)",
}

# What the rMD17 protocol of `--test` reproduces (for the report; the numbers are in experiments/results).
SGDML_REFERENCE = ("With --test on rMD17 ethanol split 01 (rmd17_ethanol_train_01 / test_01) the sgdml runs use "
                   "the frames, sigma grid {12, 22, 32, 42} and lambda 1e-10 of experiments/md17_sgdml.py's "
                   "curve section (experiments/results/md17_sgdml_curve.json): test force MAE 1.300 (N = 100), "
                   "0.840 (N = 200, sigma 12; the same as the parity section's full 2:10:100 grid), 0.524 "
                   "(N = 500) and 0.370 (N = 950 + 50) kcal/mol/Å.")


# ---- data, protocol, plan -------------------------------------------------------------------------
def read_data(source, units: dict, what: str = "--data"):
    from .data import io, registry

    if not registry.is_registered(str(source)) and not Path(source).exists():
        raise DataError(f"{what} {source}: not a registered data set ({', '.join(registry.NAMES)}) and no such file")
    return io.read(source, **units)


def formula(Z) -> str:
    from .md.models import formula as _formula

    return _formula(Z)


def data_kind(data, target: str | None) -> tuple[str, str]:
    """('frames', 'energy') for frames of one molecule with energies or forces; ('property', target) for
    molecules with properties (target default U0)."""
    if target not in (None, "energy"):
        if target not in data.props:
            raise DataError(f"--target {target}: not in the data set (available: "
                            f"{', '.join(sorted(data.props)) or 'no properties; use frames with energies'})")
        return "property", target
    if data.props and target is None and data.F is None:
        return "property", "U0" if "U0" in data.props else sorted(data.props)[0]
    if data.E is None and data.F is None:
        raise DataError("the data set has neither energies/forces nor properties to learn")
    if np.any(data.Z != data.Z[:1]):
        raise DataError("frames of different molecules with energies: compare needs frames of one molecule "
                        "(for force fields) or molecules with properties (--target)")
    return "frames", "energy"


def check_test_data(data, test, kind: str, target: str, source) -> None:
    if kind == "frames":
        if test.Z.shape[1] != data.Z.shape[1] or np.any(test.Z != data.Z[:1]):
            raise DataError(f"--test {source}: a different molecule ({formula(test.Z[0])}, {test.Z.shape[1]} atoms) "
                            f"from --data ({formula(data.Z[0])}, {data.Z.shape[1]} atoms); the test frames must be "
                            f"the same molecule with the same atom order")
        if data.F is not None and test.F is None:
            raise DataError(f"--test {source}: no forces (--data has forces)")
        if data.E is not None and test.E is None:
            raise DataError(f"--test {source}: no energies (--data has energies)")
    elif target not in test.props:
        raise DataError(f"--test {source}: no {target} values")


def make_protocol(data, kind: str, budget: str, has_test_file: bool, n_test_file: int = 0, seed: int = 0) -> dict:
    """{"pool", "valid", "test" (indices into --data, or into the --test file), "description"}."""
    from .data.qm9 import N_QM9, qm9_protocol_split

    p = PLANS[kind][budget]["protocol"]
    n = len(data)
    if kind == "property" and data.meta.get("name") == "qm9" and n == N_QM9 and not has_test_file:
        s = qm9_protocol_split(n, seed=seed)
        return {"pool": s["train"], "valid": s["valid"][:p["n_valid"]], "test": s["test"][:p["n_test"]],
                "description": f"QM9 fixed split (seed {seed}): test = {min(p['n_test'], len(s['test']))} of the "
                               f"10,000 test molecules, validation = {min(p['n_valid'], len(s['valid']))}, "
                               f"training = train[:N] (nested)"}
    order = np.random.default_rng(seed).permutation(n)
    if has_test_file:
        n_total = min(1000, n)
        n_valid = min(p["n_valid"], max(1, n_total // 10))
        if n_total - n_valid < 1:
            raise DataError(f"--data has {n} frame(s): too few to train and validate")
        return {"pool": order[:n_total - n_valid], "valid": order[n_total - n_valid:n_total],
                "test": np.arange(n_test_file),
                "description": f"rMD17 protocol: a seed-{seed} permutation of --data, its first {n_total} frames; "
                               f"validation = the last {n_valid} of those, training = a prefix of the other "
                               f"{n_total - n_valid} (nested); test = all {n_test_file} frames of --test"}
    n_valid = min(p["n_valid"], max(1, n // 10))
    n_test = min(p["n_test"], max(1, n // 3))
    if n - n_valid - n_test < 1:
        raise DataError(f"--data has {n} frame(s): too few to train, validate and test")
    return {"pool": order[n_test:n - n_valid], "valid": order[n - n_valid:], "test": order[:n_test],
            "description": f"a seed-{seed} permutation of --data: test = its first {n_test}, validation = its last "
                           f"{n_valid}, training = a prefix of the {n - n_test - n_valid} between (nested)"}


def not_applicable(method: str, kind: str, data) -> str | None:
    if method in ("gdml", "sgdml"):
        if kind == "property":
            return ("needs many geometries of one molecule with forces (a force field); property data has one "
                    "geometry per molecule and no forces")
        if data.F is None:
            return "needs forces; the data set has none"
    if method.startswith("krr") and kind == "frames" and data.E is None:
        return "energy-only model; the data set has no energies"
    if method in NETWORK_KINDS and kind == "frames" and data.E is None:
        return "the networks learn an energy (forces are its gradient); the data set has no energies"
    return None


def make_plan(kind: str, budget: str, n_pool: int, methods, data) -> dict:
    """{method: entry}: entry["applicable"], and either "reason" or "n" (clamped to the pool) and "settings"."""
    if budget not in PLANS[kind]:
        raise JaxqcError(f"unknown budget {budget!r}; one of {', '.join(BUDGETS)}")
    plan = {}
    for m in methods:
        reason = not_applicable(m, kind, data)
        if reason:
            plan[m] = {"applicable": False, "reason": reason, "description": DESCRIPTIONS[m]}
            continue
        s = dict(PLANS[kind][budget][m])
        ns = sorted({min(int(n), n_pool) for n in s.pop("n")})
        entry = {"applicable": True, "description": DESCRIPTIONS[m], "n_train": ns, "settings": s}
        if m.startswith("krr"):
            entry["energy_only"] = kind == "frames"
            if kind == "frames":
                entry["note"] = ("energies only: the Coulomb-matrix/bag-of-bonds KRR models here predict energies, "
                                 "not forces (force MAE not applicable); Laplacian kernel, sigma grid = the scales "
                                 "x the median L1 distance between training representations")
            elif "sigmas" not in s and "fixed" not in s:
                entry["note"] = ("the KRR protocol of the README table (experiments/qm9_krr_learning_curve.py: "
                                 "Laplacian kernel, 7 x 3 (sigma, lambda) grid on the validation molecules)")
        if m == "sgdml" and kind == "frames":
            entry["reference"] = SGDML_REFERENCE
        if m in NETWORK_KINDS:
            from .nn import model as nnmodel

            published = dataclasses.asdict(nnmodel.config_for(m))
            entry["model"] = {**published, **s.get("model", {})}
            entry["forces"] = kind == "frames" and data.F is not None
            if budget == "quick":
                entry["note"] = QUICK_NET_NOTE
            if "minutes" in s:
                entry["note"] = (entry.get("note", "") + f" Training stops after {s['minutes']:g} min (or early "
                                 f"stopping on the validation frames); the best validation model is evaluated.").strip()
        plan[m] = entry
    return plan


def parse_methods(values) -> list:
    if not values:
        return list(METHODS)
    names = [v.strip().lower() for value in values for v in str(value).split(",") if v.strip()]
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise JaxqcError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    return [m for m in METHODS if m in names]


# ---- memory ---------------------------------------------------------------------------------------
def status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in MiB; None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset this process's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 1024.0)


# ---- one method ------------------------------------------------------------------------------------
def _metric_row(E, E_ref, F=None, F_ref=None) -> dict:
    from .metrics import mae_rmse

    out = {}
    if E is not None and E_ref is not None:
        out.update({f"energy_{k}": v for k, v in mae_rmse(E, E_ref).items()})
    if F is not None and F_ref is not None:
        out.update({f"forces_{k}": v for k, v in mae_rmse(F, F_ref).items()})
    return out


def krr_featurizer(rep: str, bags=None, chunk: int = 4096):
    """features(dataset) -> [M, D] float64 sorted Coulomb matrices ('cm') or bags of bonds ('bob'), with
    one jitted function for every call: krr.represent jits anew per call (bob), so the time of a second
    prediction pass would include a compilation and not be the throughput."""
    import functools

    import jax
    import jax.numpy as jnp

    from .representations import bag_of_bonds, sorted_coulomb_matrix
    from .representations.bob import check_fits

    fn = jax.jit(sorted_coulomb_matrix if rep == "cm" else functools.partial(bag_of_bonds, bags=bags))

    def features(d) -> np.ndarray:
        if rep == "bob":
            check_fits(d.Z, bags)
        with jax.enable_x64(True):
            return np.concatenate([np.asarray(fn(jnp.asarray(d.Z[s:s + chunk]), jnp.asarray(d.R[s:s + chunk],
                                                                                           jnp.float64)))
                                   for s in range(0, len(d), chunk)]).astype(np.float64)

    return features


def _run_krr(method, entry, data, proto, test, target, kind, progress):
    from .kernels import krr
    from .kernels.base import distance_kind, pairwise_distances
    from .representations.bob import bag_sizes

    s = entry["settings"]
    rep = method.split("-", 1)[1]
    bags = bag_sizes(data.Z) if rep == "bob" else None
    features = krr_featurizer(rep, bags)
    targets = (target,)
    Y_of = (lambda d: d.E[:, None]) if kind == "frames" else (lambda d: krr.target_matrix(d, targets))
    valid = data.subset(proto["valid"])
    Xv = features(valid)
    Yv = Y_of(valid)
    Y_test = Y_of(test)
    offset = 0.0 if kind == "frames" else np.asarray(test.props[target]) - Y_test[:, 0]  # atom energies (U0, ...)
    for n in entry["n_train"]:
        t0 = time.perf_counter()
        train = data.subset(proto["pool"][:n])
        X = features(train)
        Y = Y_of(train)
        if kind == "frames":
            D = pairwise_distances(X, X, distance_kind(s["kernel"]))
            med = float(np.median(D) if s["kernel"] == "laplacian" else np.sqrt(np.median(D)))
            sigmas = tuple(float(f"{med * k:.4g}") for k in s["scales"])
        else:
            sigmas = tuple(s.get("sigmas", krr.KRRConfig.sigmas))
        lambdas = tuple(s.get("lambdas", krr.KRRConfig.lambdas))
        fixed = s.get("fixed") if n > s.get("grid_max_n", np.inf) else None
        cfg = krr.KRRConfig(representation=rep, kernel=s["kernel"], targets=targets,
                            sigmas=(fixed[0],) if fixed else sigmas, lambdas=(fixed[1],) if fixed else lambdas)
        if fixed:
            model = krr.fit_fixed(X, Y, cfg, fixed[0], fixed[1], solver="auto", progress=progress)
        else:
            model = krr.fit(X, Y, Xv, Yv, cfg)
        fit_s = time.perf_counter() - t0

        def predict():
            return krr.predict(features(test), X, model["alpha"], model["mean"], cfg, model["sigma"])[:, 0]

        pred = predict()
        t = time.perf_counter()
        predict()
        pred_s = time.perf_counter() - t
        row = {"n_train": int(n), **_metric_row(pred, Y_test[:, 0]), "fit_s": fit_s,
               "predict_per_s": len(test) / pred_s, "sigma": float(model["sigma"]), "lambda": float(model["lambda"]),
               "solver": model.get("solver", "dense")}
        if kind == "frames":
            row["note"] = "energy only"
        yield row, {"E": pred + offset, "E_ref": Y_test[:, 0] + offset}


def _run_gdml(method, entry, data, proto, test, target, kind, progress):
    from .kernels import gdml
    from .kernels.symmetries import find_permutations

    s = entry["settings"]
    valid = data.subset(proto["valid"])
    for n in entry["n_train"]:
        t0 = time.perf_counter()
        train = data.subset(proto["pool"][:n])
        if method == "sgdml":
            perms = find_permutations(train.Z[0], train.R)  # as experiments/md17_sgdml.py
        else:
            perms = np.arange(train.Z.shape[1])[None]
        cfg = gdml.GDMLConfig(symmetric=method == "sgdml", sigmas=tuple(s["sigmas"]), lam=s["lam"])
        fit = gdml.fit(train.R, train.F, train.E, valid.R, valid.F, valid.E, perms, cfg)
        x, J = gdml.descriptors(train.R)
        params = gdml.make_params(x, gdml.descriptor_coefficients(J, fit["alpha"]), perms, fit["sigma"], fit["c"])
        fit_s = time.perf_counter() - t0
        E, F = gdml.predict(params, test.R, cfg.predict_batch)  # also the warm-up (compilation)
        t = time.perf_counter()
        gdml.predict(params, test.R, cfg.predict_batch)
        pred_s = time.perf_counter() - t
        row = {"n_train": int(n), **_metric_row(E if test.E is not None else None, test.E, F, test.F),
               "fit_s": fit_s, "predict_per_s": len(test) / pred_s, "sigma": float(fit["sigma"]),
               "n_perms": int(len(perms)), "solver": fit["solver"],
               "validation_grid": [{k: g[k] for k in ("sigma", "forces_mae", "energy_mae", "error") if k in g}
                                   for g in fit["grid"]]}
        yield row, {"E": E, "E_ref": test.E, "F": F, "F_ref": test.F}


def _run_network(method, entry, data, proto, test, target, kind, progress, out_dir=None):
    from .train import loop
    from .train.run import load_network, network_predictor, train_network

    s = entry["settings"]
    forces = entry["forces"]
    train_kw = dict(s.get("train", {}))
    if "minutes" in s:
        train_kw.update(time_budget_min=s["minutes"], epochs=10**9)
    else:
        train_kw["epochs"] = s["epochs"]
    cfg = loop.TrainConfig(**train_kw)
    root = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="jaxqc_compare_"))
    for n in entry["n_train"]:
        run_dir = root / "runs" / f"{method}_n{n}"
        t0 = time.perf_counter()
        split = {"train": proto["pool"][:n], "valid": proto["valid"],
                 "test": np.asarray(proto["test"]) if proto["test_in_data"] else np.zeros(0, int),
                 "protocol": proto["description"]}
        out = train_network(method, data, target, forces, n, len(proto["valid"]), cfg, run_dir,
                            s.get("model", {}), progress=progress, split=split)
        fit_s = time.perf_counter() - t0
        _, _, energy, params, _ = load_network(run_dir)
        predict = network_predictor(energy, forces and test.F is not None)
        idx = np.arange(len(test))
        E, F = predict(params, test, idx)
        t = time.perf_counter()
        predict(params, test, idx)
        pred_s = time.perf_counter() - t
        ref = test.E if target == "energy" else np.asarray(test.props[target])
        mask = test.Z > 0
        row = {"n_train": int(n), **_metric_row(E, ref, None if F is None else F[mask],
                                                None if F is None else test.F[mask]),
               "fit_s": fit_s, "predict_per_s": len(test) / pred_s, "epochs": out["epochs"],
               "best_epoch": out["best_epoch"], "stop_reason": out["stop_reason"], "run_dir": str(run_dir)}
        yield row, {"E": E, "E_ref": ref, "F": F, "F_ref": None if F is None else test.F}


def run_method(method: str, entry: dict, data, proto: dict, test, target: str, kind: str, out_dir=None,
               progress: bool = True) -> dict:
    """Every training size of one method: {"runs": [row, ...], "error"?}; writes the test predictions of
    the largest N to out_dir/predictions/<method>.npz (for the parity plot)."""
    runner = {"krr-cm": _run_krr, "krr-bob": _run_krr, "gdml": _run_gdml, "sgdml": _run_gdml,
              **{k: _run_network for k in NETWORK_KINDS}}[method]
    kw = {"out_dir": out_dir} if method in NETWORK_KINDS else {}
    runs, last = [], None
    result = {"runs": runs}
    gen = runner(method, entry, data, proto, test, target, kind, progress, **kw)
    while True:
        can_reset = _reset_peak()
        rss0 = status_mb("VmRSS")
        try:
            row, pred = next(gen)
        except StopIteration:
            break
        except JaxqcError as err:
            result["error"] = str(err)
            break
        except Exception as err:  # noqa: BLE001 - one method's failure is a result, not the end of compare
            result["error"] = f"{type(err).__name__}: {err}"
            break
        row["peak_rss_mb"] = _peak_mb()
        row["rss_start_mb"] = rss0
        row["peak_is_per_run"] = can_reset
        runs.append(row)
        last = (row["n_train"], pred)
        if progress:
            print(f"compare: {method} N={row['n_train']}: " + _summary(row), file=sys.stderr, flush=True)
    if last is not None and out_dir is not None:
        n, pred = last
        path = Path(out_dir) / "predictions" / f"{method}.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.asarray(v) for k, v in pred.items() if v is not None}
        if "F" in arrays:  # real atoms only (padded rows are zero)
            mask = test.Z > 0
            arrays["F"], arrays["F_ref"] = arrays["F"][mask].reshape(-1), arrays["F_ref"][mask].reshape(-1)
        np.savez(path, n_train=n, **arrays)
        result["predictions"] = str(path)
    return result


def _summary(row: dict) -> str:
    parts = []
    if "energy_mae" in row:
        parts.append(f"E MAE {row['energy_mae']:.4g}")
    if "forces_mae" in row:
        parts.append(f"F MAE {row['forces_mae']:.4g}")
    parts.append(f"fit {row['fit_s']:.1f} s, {row['predict_per_s']:.0f} molecules/s, peak {row['peak_rss_mb']:.0f} MB")
    return ", ".join(parts)


# ---- worker process -----------------------------------------------------------------------------
def _load_context(spec: dict):
    data = read_data(spec["data"], spec["units"])
    if spec["test"]:
        test = read_data(spec["test"], spec["units"], "--test")
    else:
        test = data
    proto = {k: np.asarray(v) if k in ("pool", "valid", "test") else v for k, v in spec["protocol"].items()}
    return data, proto, test.subset(proto["test"])


def worker_main(spec_path) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        data, proto, test = _load_context(spec)
        result = run_method(spec["method"], spec["entry"], data, proto, test, spec["target"], spec["kind"],
                            spec["out_dir"], progress=spec["progress"])
    except JaxqcError as err:
        result = {"runs": [], "error": str(err)}
    except Exception as err:  # noqa: BLE001
        result = {"runs": [], "error": f"{type(err).__name__}: {err}"}
    Path(spec["result"]).write_text(json.dumps(result, default=_json_default))
    return 0


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


def _run_in_worker(spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix="jaxqc_compare_") as tmp:
        spec = {**spec, "result": str(Path(tmp) / "result.json")}
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec, default=_json_default))
        # the worker's stdout and stderr (progress lines) are passed on to our stderr: stdout stays the table/JSON
        proc = subprocess.Popen([sys.executable, "-m", "jaxqc.compare", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        tail = b""
        while chunk := proc.stdout.read1(4096):
            sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
            tail = (tail + chunk)[-2000:]
        code = proc.wait()
        if not Path(spec["result"]).exists():
            last = tail.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return {"runs": [], "error": f"worker process exited with status {code} before writing a result "
                                         f"(killed, e.g. out of memory?) {last[0]}".strip()}
        return json.loads(Path(spec["result"]).read_text())


# ---- the whole comparison ----------------------------------------------------------------------------
def build(args) -> dict:
    """Read the data, choose the protocol and the plan: the context of a comparison (nothing trained)."""
    units = {k: getattr(args, k, None) for k in ("energy_unit", "force_unit", "length_unit")}
    methods = parse_methods(args.methods)
    budget = args.budget
    if budget not in PLANS["frames"]:
        raise JaxqcError(f"unknown budget {budget!r}; one of {', '.join(BUDGETS)}")
    data = read_data(args.data, units)
    kind, target = data_kind(data, args.target)
    test_file = None
    if args.test:
        test_file = read_data(args.test, units, "--test")
        check_test_data(data, test_file, kind, target, args.test)
    proto = make_protocol(data, kind, budget, test_file is not None, len(test_file) if test_file is not None else 0,
                          seed=args.seed)
    proto["test_in_data"] = test_file is None
    plan = make_plan(kind, budget, len(proto["pool"]), methods, data)
    name = str(data.meta.get("name") or Path(str(args.data)).stem)
    n_atoms = data.n_atoms
    info = {"source": str(args.data), "name": name, "md5": data.md5, "n_molecules": len(data),
            "atoms": [int(n_atoms.min()), int(n_atoms.max())], "theory": data.meta.get("theory"),
            "kind": kind, "target": target}
    if kind == "frames":
        info["formula"] = formula(data.Z[0])
        info["has_forces"] = data.F is not None
    if test_file is not None:
        info["test"] = {"source": str(args.test), "md5": test_file.md5, "n_molecules": len(test_file)}
    if kind == "property":
        unit = data.units.get(target, "")
    else:
        unit = "kcal/mol"
    return {"data": data, "test_file": test_file, "kind": kind, "target": target, "proto": proto, "plan": plan,
            "info": info, "units_in": units, "budget": budget, "methods": methods,
            "units": {"energy": unit, "forces": "kcal/mol/Å", "fit_s": "s", "predict_per_s": "molecules/s",
                      "peak_rss_mb": "MiB"}}


def plan_json(ctx: dict) -> dict:
    p = ctx["proto"]
    return {"budget": ctx["budget"], "budget_note": BUDGET_NOTES[ctx["budget"]], "data": ctx["info"],
            "target": ctx["target"], "units": ctx["units"],
            "protocol": {"description": p["description"], "n_pool": int(len(p["pool"])),
                         "n_valid": int(len(p["valid"])), "n_test": int(len(p["test"]))},
            "methods": ctx["plan"]}


def run(ctx: dict, out_dir, in_process: bool = False, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = plan_json(ctx)
    result.update(jaxqc_version=_version(), date=time.strftime("%Y-%m-%d"), machine=_machine(),
                  command=ctx.get("command"),
                  memory=("peak_rss_mb: resident-set high-water mark (Linux VmHWM) of the process that ran the "
                          "method, over one run (fit + test prediction), reset before each run; includes Python, "
                          "the JAX runtime and the data set (rss_start_mb: the RSS when the run began). "
                          + ("Every method ran in this process (--in-process): later methods' numbers include "
                             "memory kept from earlier ones." if in_process else
                             "Each method ran in its own worker process.")),
                  timing=("fit_s: wall time of the whole fit (symmetry search, every sigma/lambda of the grid with "
                          "its validation, network training incl. compilation); predict_per_s: test molecules per "
                          "second of a second prediction pass (energies and forces where the method has forces; "
                          "the first pass compiled). The CPU may be shared with other jobs."))
    data, test_file, proto = ctx["data"], ctx["test_file"], ctx["proto"]
    test = (test_file if test_file is not None else data).subset(proto["test"])
    spec_base = {"data": ctx["info"]["source"], "test": ctx["info"].get("test", {}).get("source"),
                 "units": ctx["units_in"], "target": ctx["target"], "kind": ctx["kind"], "out_dir": str(out_dir),
                 "progress": progress,
                 "protocol": {k: (np.asarray(v).tolist() if k in ("pool", "valid", "test") else v)
                              for k, v in proto.items()}}
    for method, entry in ctx["plan"].items():
        if not entry["applicable"]:
            continue
        if progress:
            print(f"compare: {method} ({entry['description']}), N = {', '.join(map(str, entry['n_train']))}",
                  file=sys.stderr, flush=True)
        t = time.perf_counter()
        if in_process:
            res = run_method(method, entry, data, proto, test, ctx["target"], ctx["kind"], out_dir, progress)
        else:
            res = _run_in_worker({**spec_base, "method": method, "entry": entry})
        res["wall_s"] = time.perf_counter() - t
        if "error" in res and progress:
            print(f"compare: {method} failed: {res['error']}", file=sys.stderr, flush=True)
        entry.update(res)
    result["rows"] = table_rows(ctx["plan"])
    result["plots"] = make_plots(result, out_dir)
    result["wall_s"] = time.perf_counter() - t0
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1, default=_json_default))
    result["out"] = str(out_dir / "compare.json")
    return result


def table_rows(plan: dict) -> list:
    """One flat row per (method, N) run, and one per method that is not applicable or failed."""
    keys = ("n_train", "energy_mae", "forces_mae", "fit_s", "predict_per_s", "peak_rss_mb", "note")
    rows = []
    for m, e in plan.items():
        if not e["applicable"]:
            rows.append({"method": m, "applicable": False, "note": "not applicable: " + e["reason"]})
            continue
        for r in e.get("runs", []):
            rows.append({"method": m, "applicable": True, **{k: r[k] for k in keys if k in r}})
        if "error" in e:
            rows.append({"method": m, "applicable": True, "note": "failed: " + e["error"]})
    return rows


def _version() -> str:
    from . import __version__

    return __version__


def _machine() -> dict:
    import jax

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}


# ---- plots and table -----------------------------------------------------------------------------------
def make_plots(result: dict, out_dir: Path) -> dict:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:
        return {"error": "matplotlib not installed (pip install 'jaxqc[plot]')"}
    plots = {}
    methods = {m: e for m, e in result["methods"].items() if e.get("runs")}
    frames = result["data"]["kind"] == "frames"
    eunit, target = result["units"]["energy"], result["target"]
    panels = [("energy_mae", f"{'energy' if target == 'energy' else target} MAE ({eunit})")]
    if frames and any("forces_mae" in r for e in methods.values() for r in e["runs"]):
        panels.append(("forces_mae", "force MAE (kcal/mol/Å)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for m, e in methods.items():
            pts = [(r["n_train"], r[key]) for r in e["runs"] if key in r]
            if pts:
                ax.loglog(*zip(*pts), "o-", label=m, color=f"C{METHODS.index(m)}")
        ax.set(xlabel="N training molecules", ylabel=label, title=f"{result['data']['name']} ({result['budget']})")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "learning_curve.png", dpi=110)
    plt.close(fig)
    plots["learning_curve"] = str(out_dir / "learning_curve.png")
    for m, e in methods.items():
        if "predictions" not in e:
            continue
        p = np.load(e["predictions"])
        quantities = [("E", "E_ref", f"{'energy' if target == 'energy' else target} ({eunit})")]
        if "F" in p.files:
            quantities.append(("F", "F_ref", "force components (kcal/mol/Å)"))
        fig, axes = plt.subplots(1, len(quantities), figsize=(4.5 * len(quantities), 4.2), squeeze=False)
        for ax, (k, kref, label) in zip(axes[0], quantities):
            pred, ref = p[k], p[kref]
            if len(ref) > 20_000:
                keep = np.random.default_rng(0).choice(len(ref), 20_000, replace=False)
                pred, ref = pred[keep], ref[keep]
            lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.plot(ref, pred, ".", ms=2, alpha=0.5)
            ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}",
                   title=f"{m}, N = {int(p['n_train'])}: MAE {np.abs(p[k] - p[kref]).mean():.3g}")
        fig.tight_layout()
        path = out_dir / f"parity_{m}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        plots[f"parity_{m}"] = str(path)
    return plots


def _fmt(x, spec) -> str:
    return "—" if x is None else format(x, spec)


def format_table(result: dict) -> str:
    d = result["data"]
    eunit = result["units"]["energy"]
    elabel = "E" if result["target"] == "energy" else result["target"]
    lines = [f"{d['name']}: {d['n_molecules']} {'frames' if d['kind'] == 'frames' else 'molecules'}"
             + (f" of {d['formula']}" if d.get("formula") else "") + f"; budget {result['budget']}",
             f"protocol: {result['protocol']['description']}"]
    head = ["method", "N train", f"{elabel} MAE ({eunit})", "F MAE (kcal/mol/Å)", "fit (s)", "predict (mol/s)",
            "peak RSS (MiB)", "note"]
    body = []
    for r in result["rows"]:
        if "n_train" not in r:
            body.append([r["method"], "—", "—", "—", "—", "—", "—", r["note"]])
            continue
        body.append([r["method"], str(r["n_train"]), _fmt(r.get("energy_mae"), ".3f"), _fmt(r.get("forces_mae"), ".3f"),
                     _fmt(r.get("fit_s"), ".1f"), _fmt(r.get("predict_per_s"), ",.0f"),
                     _fmt(r.get("peak_rss_mb"), ",.0f"), r.get("note", "")])
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head) - 1)]
    for row in [head] + body:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + ("  " + row[-1] if row[-1] else ""))
    return "\n".join(line.rstrip() for line in lines)


def format_plan(plan: dict) -> str:
    lines = [f"plan ({plan['budget']}): {plan['data']['name']}, {plan['data']['kind']} data, target "
             f"{plan['target']}", f"protocol: {plan['protocol']['description']}"]
    for m, e in plan["methods"].items():
        if not e["applicable"]:
            lines.append(f"  {m:8s} not applicable: {e['reason']}")
            continue
        settings = {k: v for k, v in e["settings"].items() if k != "model"}
        lines.append(f"  {m:8s} N = {', '.join(map(str, e['n_train']))}; {json.dumps(settings)}"
                     + (f"; model {json.dumps(e['model'])}" if "model" in e else ""))
    return "\n".join(lines)


def command_line(args) -> str:
    """The compare command that reproduces this run (options that change what is computed)."""
    parts = ["jaxqc compare", f"--data {args.data}"]
    parts += [f"--test {args.test}"] if args.test else []
    parts += [f"--target {args.target}"] if args.target else []
    parts += [f"--budget {args.budget}"]
    parts += [f"--methods {','.join(parse_methods(args.methods))}"] if args.methods else []
    parts += [f"--seed {args.seed}"] if args.seed else []
    parts += [f"--{k.replace('_', '-')} '{getattr(args, k)}'" for k in ("energy_unit", "force_unit", "length_unit")
              if getattr(args, k, None)]
    return " ".join(parts)


def main(args) -> int:
    """The `jaxqc compare` command (args from cli.build_parser)."""
    ctx = build(args)
    ctx["command"] = command_line(args)
    if args.plan:
        plan = plan_json(ctx)
        print(json.dumps(plan, default=_json_default) if args.json else format_plan(plan))
        return 0
    out = args.out or f"compare_{ctx['info']['name']}"
    result = run(ctx, out, in_process=args.in_process, progress=not args.quiet)
    if args.json:
        print(json.dumps(result, default=_json_default))
    else:
        print(format_table(result))
        print(f"wrote {result['out']}" + "".join(f", {p}" for k, p in result["plots"].items() if k != "error"))
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
