"""sGDML on revised MD17, jaxqc against the `sgdml` package on the same frames and sigma grid.

Protocol (rMD17, Christensen & von Lilienfeld 2020): for each molecule and split k = 01..05, train on the
1000 frames of `rmd17_<mol>_train_<k>.npz` (950 training + 50 validation frames for the sigma grid, from a
seeded permutation) and report MAE on the 1000 frames of `rmd17_<mol>_test_<k>.npz`. Learning curve on
split 01: N = 100, 200, 500 training frames (validation: the last 50 frames of the same permutation,
never trained on) and N = 1000 (= 950 + 50). Ethanol CCSD(T) (sGDML's training file; its published test
set is not available here): an internal seeded split of its 1000 frames, 200 test, 50 validation,
N = 100 .. 750 training frames — not comparable with published CCSD(T) test errors.

Both codes get the same training and validation frames, the same sigma grid and the same regulariser;
each finds its own permutations (counts reported). Reported per run: energy/force MAE and RMSE on the
test frames, training time (symmetries + the whole sigma grid), prediction throughput (test frames per
second, after a warm-up call) and the ratios between the codes within this one run. A run whose dense
kernel ((3N n_train)^2 float64) would not fit in MAX_KERNEL_GB is skipped and says so (jaxqc has no
matrix-free solver yet: aspirin at 950 frames needs 29 GB).

    python experiments/md17_sgdml.py                              # everything (hours on 2 cores)
    python experiments/md17_sgdml.py --molecules ethanol --splits 01 --no-ccsdt
    python experiments/md17_sgdml.py --quick --no-peer            # CI-sized, on ethanol-xtb (tests run this)
Peer: pip install torch==2.13.0 (CPU) then 'jaxqc[peers]' (sgdml 1.0.3 needs numpy<2.4).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from jaxqc.data import io
from jaxqc.data.registry import shared_data_dir
from jaxqc.kernels import gdml
from jaxqc.kernels.symmetries import find_permutations

# ---- configuration (edit here) --------------------------------------------------------------
MOLECULES = ("aspirin", "benzene", "ethanol", "malonaldehyde", "toluene", "uracil")
SPLITS = ("01", "02", "03", "04", "05")
N_TOTAL = 1000                      # frames of train_k used, validation included
N_VALID = 50
LEARNING_CURVE = (100, 200, 500, 1000)  # on split 01; 1000 means 950 train + 50 validation
SIGMAS = tuple(float(s) for s in range(2, 100, 10))  # sgdml's default grid (2:10:100), 1/Å
LAM = 1e-10                         # regulariser, the same for both codes
SEED = 0
CCSD_T = dict(path=("md17", "ethanol_ccsd_t-train.npz"), n_test=200, n_valid=50, n=(100, 200, 500, 750))
MAX_KERNEL_GB = 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
QUICK = dict(source="ethanol-xtb", n=(40, 80), n_valid=20, n_test=100, sigmas=(10.0, 20.0))
OUT = Path(__file__).parent / "results" / "md17_sgdml"


# ---- jaxqc side ---------------------------------------------------------------------------------
def run_jaxqc(train, valid, test, sigmas, lam) -> dict:
    """sGDML fit on `train` (Dataset) with sigma chosen on `valid`; test metrics, times, throughput."""
    t0 = time.perf_counter()
    perms = find_permutations(train.Z[0], train.R)
    t_sym = time.perf_counter() - t0
    config = gdml.GDMLConfig(symmetric=True, sigmas=tuple(sigmas), lam=lam)
    fit = gdml.fit(train.R, train.F, train.E, valid.R, valid.F, valid.E, perms, config)
    train_s = time.perf_counter() - t0
    x, J = gdml.descriptors(train.R)
    params = gdml.make_params(x, gdml.descriptor_coefficients(J, fit["alpha"]), perms, fit["sigma"], fit["c"])
    gdml.predict(params, test.R[:config.predict_batch])  # warm-up: compile
    t = time.perf_counter()
    E, F = gdml.predict(params, test.R, config.predict_batch)
    predict_s = time.perf_counter() - t
    return {**gdml.metrics(E, F, test.E, test.F), "sigma": fit["sigma"], "n_perms": int(len(perms)),
            "train_s": train_s, "symmetries_s": t_sym, "timings": fit["timings"],
            "predict_frames_per_s": len(test) / predict_s,
            "grid": [{k: g[k] for k in ("sigma", "forces_mae", "energy_mae") if k in g} for g in fit["grid"]]}


# ---- sgdml side -----------------------------------------------------------------------------------
def _as_sgdml(d, name) -> dict:
    return {"R": d.R, "z": d.Z[0], "E": d.E[:, None], "F": d.F, "name": np.array(name),
            "theory": np.array(str(d.meta.get("theory", "unknown"))), "md5": np.array(d.md5),
            "type": "d", "r_unit": np.array("Ang"), "e_unit": np.array("kcal/mol")}


def run_sgdml(trainer, train, valid, test, sigmas, lam, name) -> dict:
    """The `sgdml` package on the same frames: its own permutations, the same sigma grid and lambda.
    `trainer` is the one sgdml.train.GDMLTrain of this process (sgdml allows only one instance)."""
    from sgdml.predict import GDMLPredict

    ds_train, ds_valid = _as_sgdml(train, name), _as_sgdml(valid, name)
    best, perms, grid = None, None, []
    t0 = time.perf_counter()
    for sigma in sigmas:
        sig = int(sigma) if float(sigma).is_integer() else sigma
        task = trainer.create_task(ds_train, len(train), ds_valid, len(valid), sig=sig, lam=lam, use_sym=True,
                                   perms=perms)
        perms = task["perms"]
        model = trainer.train(task)
        _, Fv = GDMLPredict(model, max_processes=os.cpu_count()).predict(valid.R.reshape(len(valid), -1))
        mae = float(np.abs(Fv - valid.F.reshape(len(valid), -1)).mean())
        grid.append({"sigma": float(sigma), "forces_mae": mae})
        if best is None or mae < best[0]:
            best = (mae, model, float(sigma))
    train_s = time.perf_counter() - t0
    predictor = GDMLPredict(best[1], max_processes=os.cpu_count())
    predictor.predict(test.R[:8].reshape(8, -1))  # warm-up
    t = time.perf_counter()
    E, F = predictor.predict(test.R.reshape(len(test), -1))
    predict_s = time.perf_counter() - t
    return {**gdml.metrics(E, F.reshape(test.F.shape), test.E, test.F), "sigma": best[2],
            "n_perms": int(len(perms)), "train_s": train_s, "predict_frames_per_s": len(test) / predict_s,
            "grid": grid}


# ---- one run ------------------------------------------------------------------------------------
def run(data_name, train_all, train_idx, valid_idx, test, cfg, peer, extra) -> dict:
    """One training size on one split: jaxqc, and the sgdml trainer `peer` when given (else None)."""
    train, valid = train_all.subset(train_idx), train_all.subset(valid_idx)
    n3 = 3 * train.Z.shape[1]
    row = {"data": data_name, **extra, "n_train": int(len(train)), "n_valid": int(len(valid)),
           "n_test": int(len(test)), "kernel_gb": (len(train) * n3) ** 2 * 8 / 2**30}
    if row["kernel_gb"] > cfg["max_kernel_gb"]:
        row["skipped"] = (f"dense kernel needs {row['kernel_gb']:.1f} GB > {cfg['max_kernel_gb']:.1f} GB "
                          f"(no matrix-free solver yet)")
        print(f"  {data_name} {extra} N={len(train)}: {row['skipped']}", flush=True)
        return row
    row["jaxqc"] = run_jaxqc(train, valid, test, cfg["sigmas"], cfg["lam"])
    if peer:
        try:
            row["sgdml"] = run_sgdml(peer, train, valid, test, cfg["sigmas"], cfg["lam"], data_name)
        except Exception as err:  # the peer's failure is a result, not a crash of the whole experiment
            row["sgdml"] = {"error": f"{type(err).__name__}: {err}"}
        if "error" not in row["sgdml"]:
            j, s = row["jaxqc"], row["sgdml"]
            row["ratios"] = {"forces_mae_jaxqc_over_sgdml": j["forces_mae"] / s["forces_mae"],
                             "energy_mae_jaxqc_over_sgdml": j["energy_mae"] / s["energy_mae"],
                             "train_speedup_jaxqc": s["train_s"] / j["train_s"],
                             "predict_speedup_jaxqc": j["predict_frames_per_s"] / s["predict_frames_per_s"]}
    j = row["jaxqc"]
    print(f"  {data_name} {extra} N={len(train)}: force MAE {j['forces_mae']:.3f} kcal/mol/Å, energy MAE "
          f"{j['energy_mae']:.3f} kcal/mol, sigma {j['sigma']:g}, {j['n_perms']} perms, train {j['train_s']:.1f} s, "
          f"{j['predict_frames_per_s']:.0f} frames/s"
          + (f" | sgdml force MAE {row['sgdml']['forces_mae']:.3f}" if "ratios" in row else ""), flush=True)
    return row


def nested_split(n_frames, n_valid, n_test, seed) -> tuple:
    """(order, valid, test): a seeded permutation; test = its first n_test, validation = its last n_valid,
    training prefixes taken from what lies between (nested for learning curves)."""
    order = np.random.default_rng(seed).permutation(n_frames)
    test, valid = order[:n_test], order[n_frames - n_valid:]
    return order[n_test:n_frames - n_valid], valid, test


def summarise(runs) -> list:
    out = []
    keys = sorted({(r["data"], r["n_train"]) for r in runs if "jaxqc" in r})
    for data_name, n in keys:
        rows = [r for r in runs if r["data"] == data_name and r["n_train"] == n and "jaxqc" in r]
        entry = {"data": data_name, "n_train": n, "n_runs": len(rows)}
        for code in ("jaxqc", "sgdml"):
            ok = [r[code] for r in rows if code in r and "error" not in r[code]]
            if ok:
                entry[code] = {k: {"mean": float(np.mean([o[k] for o in ok])), "std": float(np.std([o[k] for o in ok]))}
                               for k in ("forces_mae", "energy_mae", "train_s", "predict_frames_per_s")}
        out.append(entry)
    return out


def plot(runs, path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for data_name in sorted({r["data"] for r in runs}):
        for code, style in (("jaxqc", "-o"), ("sgdml", "--s")):
            pts = sorted((r["n_train"], r[code]["forces_mae"]) for r in runs
                         if r["data"] == data_name and code in r and "error" not in r[code]
                         and r.get("split", "01") == "01")
            if pts:
                ax.plot(*zip(*pts), style, label=f"{data_name} ({code})")
    ax.set(xscale="log", yscale="log", xlabel="training frames", ylabel="force MAE (kcal/mol/Å)",
           title="sGDML learning curves")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


# ---- main ---------------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run on the embedded ethanol-xtb data")
    p.add_argument("--no-peer", action="store_true", help="do not run the sgdml package")
    p.add_argument("--molecules", nargs="+", default=list(MOLECULES))
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.add_argument("--n", type=int, nargs="+", default=list(LEARNING_CURVE), help="learning-curve sizes (split 01)")
    p.add_argument("--sigmas", type=float, nargs="+", default=None)
    p.add_argument("--no-ccsdt", action="store_true", help="skip the ethanol CCSD(T) internal split")
    p.add_argument("--out", default=str(OUT), help="output prefix (.json and .png are added)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse(argv)
    peer = not args.no_peer and importlib.util.find_spec("sgdml") is not None
    if peer:
        import sgdml
        print(f"peer: sgdml {sgdml.__version__}", flush=True)
    elif not args.no_peer:
        print("sgdml not importable: running jaxqc only", flush=True)
    cfg = {"sigmas": tuple(args.sigmas or (QUICK["sigmas"] if args.quick else SIGMAS)), "lam": LAM,
           "max_kernel_gb": MAX_KERNEL_GB, "seed": SEED}
    if peer:
        from sgdml.train import GDMLTrain

        peer = GDMLTrain(max_processes=os.cpu_count())
    runs, data_info = [], {}
    if args.quick:
        data = io.read(QUICK["source"])
        data_info[QUICK["source"]] = {"n_frames": len(data), "forces_std": float(data.F.std()),
                                      "md5": data.md5, "theory": data.meta.get("theory")}
        pool, valid, test = nested_split(len(data), QUICK["n_valid"], QUICK["n_test"], SEED)
        for n in QUICK["n"]:
            runs.append(run(QUICK["source"], data, pool[:n], valid, data.subset(test), cfg, peer,
                            {"protocol": "quick: seeded split of ethanol-xtb"}))
    else:
        root = shared_data_dir()
        if not (root / "rmd17").is_dir():
            raise SystemExit(f"rMD17 not found under {root} (set JAXQC_SHARED_DATA)")
        for mol in args.molecules:
            for k in args.splits:
                train_all = io.read(root / "rmd17" / f"rmd17_{mol}_train_{k}.npz")
                test = io.read(root / "rmd17" / f"rmd17_{mol}_test_{k}.npz")
                data_info.setdefault(mol, {"forces_std": float(train_all.F.std()), "n_atoms": int(train_all.max_atoms)})
                order = np.random.default_rng(SEED).permutation(len(train_all))
                pool, valid = order[:N_TOTAL - N_VALID], order[N_TOTAL - N_VALID:N_TOTAL]
                sizes = sorted(set(args.n) | {N_TOTAL}) if k == "01" else [N_TOTAL]
                for n in sizes:
                    n_tr = min(n, N_TOTAL - N_VALID)
                    runs.append(run(mol, train_all, pool[:n_tr], valid, test, cfg, peer,
                                    {"protocol": f"rMD17 train_{k}/test_{k}", "split": k, "N": n}))
        if not args.no_ccsdt:
            path = root.joinpath(*CCSD_T["path"])
            if path.exists():
                data = io.read(path)
                data_info["ethanol-ccsd(t)"] = {"forces_std": float(data.F.std()), "md5": data.md5}
                pool, valid, test = nested_split(len(data), CCSD_T["n_valid"], CCSD_T["n_test"], SEED)
                for n in CCSD_T["n"]:
                    runs.append(run("ethanol-ccsd(t)", data, pool[:n], valid, data.subset(test), cfg, peer,
                                    {"protocol": "ethanol CCSD(T), internal seeded split (not the published test set)"}))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"experiment": "md17_sgdml", "quick": args.quick, "peer": bool(peer),
               "config": {**cfg, "n_total": N_TOTAL, "n_valid": N_VALID},
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
               "data": data_info, "runs": runs, "summary": summarise(runs)}
    results["plot"] = str(out.with_suffix(".png")) if plot(runs, out.with_suffix(".png")) else None
    out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
