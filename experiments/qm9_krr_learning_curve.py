"""QM9 KRR learning curve, jaxqc against the peer qmllib on the same molecules, split and grid.

For each representation (sorted Coulomb matrix, bag of bonds) and training size N: both codes build the
representation, run the same (sigma, lambda) grid on the 2,000-molecule validation split, and predict
U0 on the fixed 10,000-molecule test set with the chosen hyperparameters. Then both repeat the final
fit + prediction at the chosen (sigma, lambda) alone, timed stage by stage. Writes JSON and a log-log
plot; ratios compare the two codes within this one run.

    python experiments/qm9_krr_learning_curve.py                       # N = 1k, 2k, 5k, 10k
    python experiments/qm9_krr_learning_curve.py --n 1000 20000 --no-peer
    python experiments/qm9_krr_learning_curve.py --quick               # CI-sized (tests run this)
Peer: pip install qmllib==1.2.0 (OMP_NUM_THREADS=1 is not set here: both codes use both cores).
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import numpy as np

from jaxqc.data import io
from jaxqc.data.molecules import Dataset
from jaxqc.data.qm9 import qm9_protocol_split
from jaxqc.elements import SYMBOLS
from jaxqc.kernels import krr
from jaxqc.kernels.base import distance_kind, kernel_from_distances, pairwise_distances
from jaxqc.representations.bob import bag_sizes

# ---- configuration (edit here) --------------------------------------------------------------
N_TRAIN = (1000, 2000, 5000, 10000)
REPRESENTATIONS = ("cm", "bob")
SIGMAS = (800.0, 1600.0, 3200.0, 6400.0, 12800.0, 25600.0, 51200.0)
LAMBDAS = (1e-10, 1e-8, 1e-6)
TARGET = "U0"
QUICK = dict(n_train=(200, 400), n_test=500, n_valid=200, sigmas=(3200.0, 12800.0, 51200.0), lambdas=(1e-8,))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---- jaxqc side ---------------------------------------------------------------------------------
def run_jaxqc(data, split, n, rep, bags, cfg, fixed=None, solver="auto", cg_tol=1e-4, cg_rank=1000) -> dict:
    """Grid search + final fit; with `fixed` = (sigma, lambda) only the final fit (large N)."""
    t0 = time.perf_counter()
    sub = data.subset(np.concatenate([split["train"][:n], split["valid"], split["test"]]))
    X, _ = krr.represent(sub, rep, bags)
    nv = len(split["valid"])
    Xt, Xv, Xs = X[:n], X[n:n + nv], X[n + nv:]
    Y = krr.target_matrix(sub, (TARGET,))
    Yt, Yv, Ys = Y[:n], Y[n:n + nv], Y[n + nv:]
    t_rep = time.perf_counter() - t0
    t0 = time.perf_counter()
    if fixed is None:
        model = krr.fit(Xt, Yt, Xv, Yv, cfg)
    else:
        model = {"sigma": fixed[0], "lambda": fixed[1], "grid_mae": None}
    t_grid = time.perf_counter() - t0
    # final fit + prediction at the chosen hyperparameters, timed on their own
    t0 = time.perf_counter()
    final = krr.fit_fixed(Xt, Yt, cfg, model["sigma"], model["lambda"], solver=solver, rank=cg_rank, tol=cg_tol,
                          progress=fixed is not None)
    t1 = time.perf_counter()
    pred = krr.predict(Xs, Xt, final["alpha"], final["mean"], cfg, model["sigma"])
    t2 = time.perf_counter()
    grid = None if model["grid_mae"] is None else model["grid_mae"][..., 0].tolist()
    return {"mae": float(np.abs(pred - Ys).mean()), "sigma": model["sigma"], "lambda": model["lambda"],
            "grid_mae": grid, "hyperparameters": "validation grid" if fixed is None else "fixed (from a smaller N)",
            "solver": final["solver"], "cg": final["cg"],
            "time_s": {"representation": t_rep, "grid_search": t_grid, "kernel": final["timings"]["kernel_s"],
                       "solve": final["timings"]["solve_s"], "predict": t2 - t1, "fit_predict": t2 - t0}}


# ---- qmllib side ----------------------------------------------------------------------------------
def qmllib_represent(data: Dataset, rep: str, bags) -> np.ndarray:
    from qmllib.representations import generate_bob, generate_coulomb_matrix

    out = []
    if rep == "cm":
        for Z, R, k in zip(data.Z, data.R, data.n_atoms):
            out.append(generate_coulomb_matrix(Z[:k], R[:k], size=data.max_atoms, sorting="row-norm"))
    else:
        asize = {SYMBOLS[-a]: s for a, _, s in bags if a < 0}
        atomtypes = np.array(sorted(asize))
        for Z, R, k in zip(data.Z, data.R, data.n_atoms):
            out.append(generate_bob(Z[:k], R[:k], atomtypes, size=data.max_atoms, asize=asize))
    return np.asarray(out, dtype=np.float64)


def run_qmllib(data, split, n, rep, bags, cfg, fixed=None) -> dict:
    """The same grid as jaxqc, or (large N) only the final fit at jaxqc's chosen `fixed` (sigma, lambda)."""
    from qmllib.kernels import gaussian_kernel, laplacian_kernel
    from qmllib.solvers import cho_solve

    kern = laplacian_kernel if cfg.kernel == "laplacian" else gaussian_kernel
    t0 = time.perf_counter()
    sub = data.subset(np.concatenate([split["train"][:n], split["valid"], split["test"]]))
    X = qmllib_represent(sub, rep, bags)
    nv = len(split["valid"])
    Xt, Xv, Xs = X[:n], X[n:n + nv], X[n + nv:]
    Y = krr.target_matrix(sub, (TARGET,))[:, 0]
    Yt, Yv, Ys = Y[:n], Y[n:n + nv], Y[n + nv:]
    mean = Yt.mean()
    t_rep = time.perf_counter() - t0
    t0 = time.perf_counter()
    grid = np.full((len(cfg.sigmas), len(cfg.lambdas)), np.inf)
    for i, s in enumerate(cfg.sigmas if fixed is None else ()):
        K, Kv = kern(Xt, Xt, s), kern(Xv, Xt, s)
        for j, lam in enumerate(cfg.lambdas):
            A = K.copy()
            A[np.diag_indices_from(A)] += lam
            try:
                alpha = cho_solve(A, Yt - mean)
            except Exception:  # not positive definite at this lambda
                continue
            grid[i, j] = np.abs(Kv @ alpha + mean - Yv).mean()
    t_grid = time.perf_counter() - t0
    if fixed is None:
        i, j = np.unravel_index(np.argmin(grid), grid.shape)
        sigma, lam = cfg.sigmas[i], cfg.lambdas[j]
    else:
        sigma, lam = fixed
    t0 = time.perf_counter()
    K = kern(Xt, Xt, sigma)
    t1 = time.perf_counter()
    K[np.diag_indices_from(K)] += lam
    alpha = cho_solve(K, Yt - mean)
    t2 = time.perf_counter()
    pred = kern(Xs, Xt, sigma) @ alpha + mean
    t3 = time.perf_counter()
    return {"mae": float(np.abs(pred - Ys).mean()), "sigma": sigma, "lambda": lam,
            "grid_mae": grid.tolist() if fixed is None else None,
            "hyperparameters": "validation grid" if fixed is None else "jaxqc's choice (same run)",
            "time_s": {"representation": t_rep, "grid_search": t_grid, "kernel": t1 - t0, "solve": t2 - t1,
                       "predict": t3 - t2, "fit_predict": t3 - t0}}


# ---- main -----------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, nargs="+", default=list(N_TRAIN))
    p.add_argument("--representations", nargs="+", default=list(REPRESENTATIONS))
    p.add_argument("--no-peer", action="store_true", help="skip qmllib")
    p.add_argument("--quick", action="store_true", help="tiny CI configuration")
    p.add_argument("--data", default="qm9")
    p.add_argument("--out", default="experiments/results/qm9_krr_learning_curve")
    p.add_argument("--peer-grid-max-n", type=int, default=10_000,
                   help="above this N, qmllib fits only at jaxqc's chosen (sigma, lambda) (its grid is ~30 min at 20k)")
    p.add_argument("--grid-max-n", type=int, default=20_000,
                   help="above this N, jaxqc reuses (sigma, lambda) of the largest grid-searched N (or --fixed)")
    p.add_argument("--fixed", type=float, nargs=2, metavar=("SIGMA", "LAMBDA"), default=None,
                   help="hyperparameters for N above --grid-max-n when no smaller N of this run chose them")
    p.add_argument("--solver", default="auto", choices=["auto", "dense", "cg", "cg-blocked"])
    p.add_argument("--cg-tol", type=float, default=1e-4, help="CG: relative residual to stop at")
    p.add_argument("--cg-rank", type=int, default=1000, help="CG: rank of the Nyström preconditioner")
    p.add_argument("--sigmas", type=float, nargs="+", default=None, help="override the sigma grid")
    p.add_argument("--lambdas", type=float, nargs="+", default=None, help="override the lambda grid")
    args = p.parse_args(argv)

    sigmas, lambdas, n_train = tuple(args.sigmas or SIGMAS), tuple(args.lambdas or LAMBDAS), args.n
    data = io.read(args.data)
    split = qm9_protocol_split(len(data), n_test=min(10_000, len(data) // 5), n_valid=min(2_000, len(data) // 10))
    if args.quick:
        sigmas, lambdas, n_train = QUICK["sigmas"], QUICK["lambdas"], list(QUICK["n_train"])
        split = {"test": split["test"][:QUICK["n_test"]], "valid": split["valid"][:QUICK["n_valid"]],
                 "train": split["train"]}
    bags = bag_sizes(data.Z)
    results = {"machine": platform.processor() or platform.machine(), "cpus": __import__("os").cpu_count(),
               "target": TARGET, "n_test": len(split["test"]), "n_valid": len(split["valid"]),
               "sigmas": sigmas, "lambdas": lambdas, "dataset_md5": data.meta.get("md5") or data.md5, "runs": []}
    out = Path(args.out)
    for rep in args.representations:
        cfg = krr.KRRConfig(representation=rep, kernel="laplacian", targets=(TARGET,), sigmas=tuple(sigmas),
                            lambdas=tuple(lambdas))
        chosen = tuple(args.fixed) if args.fixed else None
        for n in n_train:
            fixed = chosen if n > args.grid_max_n else None
            if n > args.grid_max_n and fixed is None:
                raise SystemExit(f"N={n} > --grid-max-n: give --fixed SIGMA LAMBDA or include a smaller N")
            row = {"representation": rep, "n_train": n,
                   "jaxqc": run_jaxqc(data, split, n, rep, bags, cfg, fixed, args.solver, args.cg_tol, args.cg_rank)}
            if fixed is None:
                chosen = (row["jaxqc"]["sigma"], row["jaxqc"]["lambda"])
            if not args.no_peer:
                peer_fixed = None if n <= args.peer_grid_max_n else (row["jaxqc"]["sigma"], row["jaxqc"]["lambda"])
                row["qmllib"] = run_qmllib(data, split, n, rep, bags, cfg, peer_fixed)
                row["mae_ratio_jaxqc_over_qmllib"] = row["jaxqc"]["mae"] / row["qmllib"]["mae"]
                row["speedup_fit_predict"] = row["qmllib"]["time_s"]["fit_predict"] / row["jaxqc"]["time_s"]["fit_predict"]
            row["peak_rss_gb"] = peak_rss_gb()
            results["runs"].append(row)
            peer = (f" | qmllib {row['qmllib']['mae']:.3f} ({row['qmllib']['time_s']['fit_predict']:.1f} s)"
                    if "qmllib" in row else "")
            print(f"{rep:4s} N={n:6d}: jaxqc MAE {row['jaxqc']['mae']:.3f} kcal/mol "
                  f"(fit+predict {row['jaxqc']['time_s']['fit_predict']:.1f} s){peer}", flush=True)
            io.atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1))
    plot(results, out.with_suffix(".png"))
    return results


def plot(results: dict, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(5, 4))
    for rep in sorted({r["representation"] for r in results["runs"]}):
        rows = [r for r in results["runs"] if r["representation"] == rep]
        n = [r["n_train"] for r in rows]
        ax.loglog(n, [r["jaxqc"]["mae"] for r in rows], "o-", label=f"jaxqc {rep}")
        if "qmllib" in rows[0]:
            ax.loglog(n, [r["qmllib"]["mae"] for r in rows], "x--", label=f"qmllib {rep}")
    ax.axhline(1.0, color="gray", lw=0.8, ls=":", label="chemical accuracy")
    ax.set_xlabel("training molecules N")
    ax.set_ylabel(f"{results['target']} test MAE (kcal/mol)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
