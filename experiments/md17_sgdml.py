"""sGDML on revised MD17, jaxqc against the `sgdml` package on the same frames and sigma grid, same run.

Protocol (rMD17, Christensen & von Lilienfeld 2020): train on frames of `rmd17_<mol>_train_<k>.npz` and
report MAE on all 1000 frames of `rmd17_<mol>_test_<k>.npz`. Of train_k, a seeded permutation (seed 0)
gives the validation frames (its last 50, for the sigma grid) and the training frames (a prefix of the
rest, nested across N); N = 1000 means 950 training + 50 validation frames.

Both codes get the same training and validation frames, the same sigma grid and the same regulariser;
each finds its own permutations (counts reported). Reported per run: energy/force MAE and RMSE on the test
frames, force MAE per atom, training time (symmetries + every sigma of the grid, validation included),
prediction throughput on the test frames (after a warm-up; sgdml after its `prepare_parallel` tuning),
the latency of predicting 10 geometries, and the ratios between the codes within the run.

Sections (each writes results/md17_sgdml_<section>.json and, where it has one, a .png):
  parity   all six molecules, split 01, 200 training frames, sgdml's default sigma grid 2:10:100
  speed    ethanol split 01, one fit at a fixed sigma at N = 500 and 1000 (jaxqc dense and CG at 500)
  curve    ethanol split 01, learning curve N = 100, 200, 500, 1000, a 4-sigma grid
  ccsdt    ethanol CCSD(T), internal seeded split (200 test, 50 validation; not the published test set)
  scale    aspirin: dense vs matrix-free CG on the same 200 frames, then N = 1000 with CG (jaxqc only:
           sgdml's dense solver needs the 30 GB kernel)
  splits   jaxqc alone, every molecule and split 01..05 at N = 1000, sigma from the parity section

    python experiments/md17_sgdml.py --section parity speed curve ccsdt scale   # ~1 h on 2 cores
    python experiments/md17_sgdml.py --quick --no-peer                          # CI-sized, ethanol-xtb
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
N_TOTAL, N_VALID, SEED = 1000, 50, 0       # frames of train_k used (validation included), validation frames
LAM = 1e-10                                 # regulariser, the same for both codes (sgdml's default)
SGDML_GRID = tuple(float(s) for s in range(2, 100, 10))  # sgdml's default sigma grid 2:10:100 (1/Å)
SMALL_GRID = (12.0, 22.0, 32.0, 42.0)      # a subset of it around the optimum of every molecule at N = 200
SECTIONS = {
    "parity": dict(molecules=MOLECULES, n=(200,), sigmas=SGDML_GRID),
    "speed": dict(molecules=("ethanol",), n=(500, 1000), sigma=22.0),
    "curve": dict(molecules=("ethanol",), n=(100, 200, 500, 1000), sigmas=SMALL_GRID),
    "ccsdt": dict(path=("md17", "ethanol_ccsd_t-train.npz"), n=(100, 200, 500, 750), n_test=200,
                  sigmas=SMALL_GRID),
    "scale": dict(molecule="aspirin", n_check=200, n=1000, sigmas=(22.0, 32.0)),
    "splits": dict(molecules=MOLECULES, n=1000),
}
QUICK = dict(source="ethanol-xtb", n=(40, 80), n_valid=20, n_test=100, sigmas=(10.0, 20.0))
OUT = Path(__file__).parent / "results" / "md17_sgdml"


# ---- jaxqc side ---------------------------------------------------------------------------------
def latency_ms(fn, reps: int = 20) -> float:
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times))


def per_atom_mae(F, F_true) -> list:
    return np.abs(F - F_true).mean(axis=(0, 2)).tolist()


def run_jaxqc(train, valid, test, sigmas, lam, solver: str = "auto") -> dict:
    """sGDML fit on `train` (Dataset) with sigma chosen on `valid`; test metrics, times, throughput."""
    t0 = time.perf_counter()
    perms = find_permutations(train.Z[0], train.R)
    t_sym = time.perf_counter() - t0
    config = gdml.GDMLConfig(symmetric=True, sigmas=tuple(sigmas), lam=lam, solver=solver)
    fit = gdml.fit(train.R, train.F, train.E, valid.R, valid.F, valid.E, perms, config)
    train_s = time.perf_counter() - t0
    x, J = gdml.descriptors(train.R)
    params = gdml.make_params(x, gdml.descriptor_coefficients(J, fit["alpha"]), perms, fit["sigma"], fit["c"])
    gdml.predict(params, test.R[:config.predict_batch])  # warm-up: compile
    t = time.perf_counter()
    E, F = gdml.predict(params, test.R, config.predict_batch)
    predict_s = time.perf_counter() - t
    best = next(g for g in fit["grid"] if g["sigma"] == fit["sigma"])
    return {**gdml.metrics(E, F, test.E, test.F), "sigma": fit["sigma"], "n_perms": int(len(perms)),
            "solver": fit["solver"], "train_s": train_s, "symmetries_s": t_sym, "timings": fit["timings"],
            "cg": best.get("cg"), "predict_frames_per_s": len(test) / predict_s,
            "latency_10_ms": latency_ms(lambda: gdml.predict(params, test.R[:10])),
            "forces_mae_per_atom": per_atom_mae(F, test.F),
            "grid": [{k: g[k] for k in ("sigma", "forces_mae", "energy_mae", "error") if k in g} for g in fit["grid"]]}


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
    t = time.perf_counter()
    predictor.prepare_parallel(n_bulk=len(test))  # sgdml's own tuning: 2.5-4x faster prediction
    tune_s = time.perf_counter() - t
    predictor.predict(test.R[:8].reshape(8, -1))  # warm-up
    t = time.perf_counter()
    E, F = predictor.predict(test.R.reshape(len(test), -1))
    predict_s = time.perf_counter() - t
    F = F.reshape(test.F.shape)
    small = GDMLPredict(best[1], max_processes=os.cpu_count())
    small.prepare_parallel(n_bulk=10)
    R10 = test.R[:10].reshape(10, -1)
    return {**gdml.metrics(E, F, test.E, test.F), "sigma": best[2], "n_perms": int(len(perms)),
            "train_s": train_s, "predict_frames_per_s": len(test) / predict_s, "prepare_parallel_s": tune_s,
            "latency_10_ms": latency_ms(lambda: small.predict(R10)), "forces_mae_per_atom": per_atom_mae(F, test.F),
            "grid": grid}


# ---- one run ------------------------------------------------------------------------------------
def run(data_name, train_all, train_idx, valid_idx, test, sigmas, peer, extra, solver="auto") -> dict:
    """One training size: jaxqc, and the sgdml trainer `peer` when given (else None)."""
    train, valid = train_all.subset(train_idx), train_all.subset(valid_idx)
    row = {"data": data_name, **extra, "n_train": int(len(train)), "n_valid": int(len(valid)),
           "n_test": int(len(test)), "sigmas": list(sigmas),
           "dense_kernel_gb": (len(train) * 3 * train.Z.shape[1]) ** 2 * 8 / 2**30}
    row["jaxqc"] = run_jaxqc(train, valid, test, sigmas, LAM, solver)
    if peer:
        try:
            row["sgdml"] = run_sgdml(peer, train, valid, test, sigmas, LAM, data_name)
        except Exception as err:  # the peer's failure is a result, not a crash of the whole experiment
            row["sgdml"] = {"error": f"{type(err).__name__}: {err}"}
        if "error" not in row["sgdml"]:
            j, s = row["jaxqc"], row["sgdml"]
            row["ratios"] = {"forces_mae_jaxqc_over_sgdml": j["forces_mae"] / s["forces_mae"],
                             "energy_mae_jaxqc_over_sgdml": j["energy_mae"] / s["energy_mae"],
                             "train_speedup_jaxqc": s["train_s"] / j["train_s"],
                             "predict_speedup_jaxqc": j["predict_frames_per_s"] / s["predict_frames_per_s"],
                             "latency_10_speedup_jaxqc": s["latency_10_ms"] / j["latency_10_ms"]}
    j = row["jaxqc"]
    print(f"  {data_name} {extra} N={len(train)}: force MAE {j['forces_mae']:.3f} kcal/mol/Å, energy MAE "
          f"{j['energy_mae']:.3f} kcal/mol, sigma {j['sigma']:g}, {j['n_perms']} perms, {j['solver']}, train "
          f"{j['train_s']:.1f} s, {j['predict_frames_per_s']:.0f} frames/s"
          + (f" | sgdml force MAE {row['sgdml']['forces_mae']:.3f}, energy MAE {row['sgdml']['energy_mae']:.3f}, "
             f"sigma {row['sgdml']['sigma']:g}, train {row['sgdml']['train_s']:.1f} s, "
             f"{row['sgdml']['predict_frames_per_s']:.0f} frames/s" if "ratios" in row else
             (f" | sgdml: {row['sgdml']['error']}" if "sgdml" in row else "")), flush=True)
    return row


def rmd17_split(root, mol, k):
    """(train_all, test, pool, valid): the files of split k, seeded training pool and validation frames."""
    train_all = io.read(root / "rmd17" / f"rmd17_{mol}_train_{k}.npz")
    test = io.read(root / "rmd17" / f"rmd17_{mol}_test_{k}.npz")
    order = np.random.default_rng(SEED).permutation(len(train_all))
    return train_all, test, order[:N_TOTAL - N_VALID], order[N_TOTAL - N_VALID:N_TOTAL]


def n_train_of(n: int) -> int:
    return min(n, N_TOTAL - N_VALID)  # N = 1000 is 950 training + 50 validation frames


def nested_split(n_frames, n_valid, n_test, seed) -> tuple:
    """(pool, valid, test): a seeded permutation; test = its first n_test, validation = its last n_valid,
    training prefixes taken from what lies between (nested for learning curves)."""
    order = np.random.default_rng(seed).permutation(n_frames)
    return order[n_test:n_frames - n_valid], order[n_frames - n_valid:], order[:n_test]


# ---- sections ---------------------------------------------------------------------------------------
def section_parity(root, peer, cfg):
    runs = []
    for mol in cfg["molecules"]:
        train_all, test, pool, valid = rmd17_split(root, mol, "01")
        for n in cfg["n"]:
            runs.append(run(mol, train_all, pool[:n_train_of(n)], valid, test, cfg["sigmas"], peer,
                            {"protocol": "rMD17 train_01/test_01", "split": "01", "N": n}))
    return runs


def section_speed(root, peer, cfg):
    runs = []
    for mol in cfg["molecules"]:
        train_all, test, pool, valid = rmd17_split(root, mol, "01")
        for n in cfg["n"]:
            extra = {"protocol": "rMD17 train_01/test_01, one fixed sigma", "split": "01", "N": n}
            runs.append(run(mol, train_all, pool[:n_train_of(n)], valid, test, (cfg["sigma"],), peer, extra))
            if gdml.choose_solver(n_train_of(n), 3 * train_all.Z.shape[1]) == "cg":  # the dense route too, if it fits
                try:
                    gdml.choose_solver(n_train_of(n), 3 * train_all.Z.shape[1], "dense")
                    runs.append(run(mol, train_all, pool[:n_train_of(n)], valid, test, (cfg["sigma"],), None,
                                    {**extra, "solver": "dense"}, solver="dense"))
                except gdml.JaxqcError as err:
                    print(f"  no dense comparison at N={n}: {err}")
    return runs


def section_curve(root, peer, cfg):
    runs = []
    for mol in cfg["molecules"]:
        train_all, test, pool, valid = rmd17_split(root, mol, "01")
        for n in cfg["n"]:
            runs.append(run(mol, train_all, pool[:n_train_of(n)], valid, test, cfg["sigmas"], peer,
                            {"protocol": "rMD17 train_01/test_01", "split": "01", "N": n}))
    return runs


def section_ccsdt(root, peer, cfg):
    path = root.joinpath(*cfg["path"])
    if not path.exists():
        print(f"  {path} not found: ccsdt section skipped")
        return []
    data = io.read(path)
    pool, valid, test = nested_split(len(data), N_VALID, cfg["n_test"], SEED)
    return [run("ethanol-ccsd(t)", data, pool[:n], valid, data.subset(test), cfg["sigmas"], peer,
                {"protocol": "ethanol CCSD(T), internal seeded split (not the published test set)", "N": n})
            for n in cfg["n"]]


def section_scale(root, peer, cfg):
    mol = cfg["molecule"]
    train_all, test, pool, valid = rmd17_split(root, mol, "01")
    runs = []
    for solver in ("dense", "cg"):  # the same frames and sigma: does CG reach the dense accuracy?
        runs.append(run(mol, train_all, pool[:cfg["n_check"]], valid, test, cfg["sigmas"][:1], None,
                        {"protocol": "rMD17 train_01/test_01, solver check", "split": "01", "N": cfg["n_check"],
                         "solver": solver}, solver=solver))
    n = cfg["n"]
    row = run(mol, train_all, pool[:n_train_of(n)], valid, test, cfg["sigmas"], None,
              {"protocol": "rMD17 train_01/test_01", "split": "01", "N": n, "solver": "cg"}, solver="cg")
    row["sgdml"] = {"not_run": f"sgdml's dense solver needs the {row['dense_kernel_gb']:.1f} GB kernel; this machine "
                               f"has {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GB"}
    return runs + [row]


def section_splits(root, peer, cfg, sigma_of: dict):
    runs = []
    for mol in cfg["molecules"]:
        for k in SPLITS:
            train_all, test, pool, valid = rmd17_split(root, mol, k)
            sig = (sigma_of[mol],) if mol in sigma_of else SMALL_GRID
            runs.append(run(mol, train_all, pool[:n_train_of(cfg["n"])], valid, test, sig, None,
                            {"protocol": f"rMD17 train_{k}/test_{k}", "split": k, "N": cfg["n"]}))
    return runs


# ---- plots ------------------------------------------------------------------------------------------
def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        return None


def plot_curve(runs, path) -> bool:
    plt = _plt()
    if plt is None:
        return False
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for data_name in sorted({r["data"] for r in runs}):
        for code, style in (("jaxqc", "-o"), ("sgdml", "--s")):
            pts = sorted((r["n_train"], r[code]["forces_mae"]) for r in runs
                         if r["data"] == data_name and "forces_mae" in r.get(code, {}))
            if pts:
                ax.plot(*zip(*pts), style, label=f"{data_name} ({code})")
    ax.set(xscale="log", yscale="log", xlabel="training frames", ylabel="test force MAE (kcal/mol/Å)",
           title="sGDML learning curves, jaxqc and sgdml")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def plot_per_atom(runs, path) -> bool:
    plt = _plt()
    rows = [r for r in runs if "forces_mae_per_atom" in r.get("jaxqc", {})]
    if plt is None or not rows:
        return False
    fig, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.2), squeeze=False)
    for ax, r in zip(axes[0], rows):
        n = len(r["jaxqc"]["forces_mae_per_atom"])
        ax.bar(np.arange(n) - 0.2, r["jaxqc"]["forces_mae_per_atom"], 0.4, label="jaxqc")
        if "forces_mae_per_atom" in r.get("sgdml", {}):
            ax.bar(np.arange(n) + 0.2, r["sgdml"]["forces_mae_per_atom"], 0.4, label="sgdml")
        ax.set(title=f"{r['data']} N={r['n_train']}", xlabel="atom", ylabel="force MAE (kcal/mol/Å)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- main ---------------------------------------------------------------------------------------
def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized run on the embedded ethanol-xtb data")
    p.add_argument("--no-peer", action="store_true", help="do not run the sgdml package")
    p.add_argument("--section", nargs="+", default=["parity", "speed", "curve", "ccsdt", "scale"],
                   choices=list(SECTIONS))
    p.add_argument("--molecules", nargs="+", default=None, help="restrict parity/splits to these molecules")
    p.add_argument("--out", default=str(OUT), help="output prefix (_<section>.json and .png are added)")
    return p.parse_args(argv)


def write(results, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=1, default=float))
    tmp.replace(path)


def main(argv=None) -> dict:
    args = parse(argv)
    peer = not args.no_peer and importlib.util.find_spec("sgdml") is not None
    if peer:
        import sgdml
        from sgdml.train import GDMLTrain
        print(f"peer: sgdml {sgdml.__version__}", flush=True)
        peer = GDMLTrain(max_processes=os.cpu_count())
    elif not args.no_peer:
        print("sgdml not importable: running jaxqc only", flush=True)
    meta = {"experiment": "md17_sgdml", "quick": args.quick, "peer": bool(peer), "lam": LAM, "seed": SEED,
            "n_total": N_TOTAL, "n_valid": N_VALID, "date": time.strftime("%Y-%m-%d"),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.quick:
        data = io.read(QUICK["source"])
        pool, valid, test = nested_split(len(data), QUICK["n_valid"], QUICK["n_test"], SEED)
        runs = [run(QUICK["source"], data, pool[:n], valid, data.subset(test), QUICK["sigmas"], peer,
                    {"protocol": "quick: seeded split of ethanol-xtb"}) for n in QUICK["n"]]
        results = {**meta, "section": "quick", "data": {QUICK["source"]: {"forces_std": float(data.F.std()),
                                                                             "md5": data.md5}}, "runs": runs}
        results["plot"] = str(out.with_suffix(".png")) if plot_curve(runs, out.with_suffix(".png")) else None
        write(results, out.with_suffix(".json"))
        return results
    root = shared_data_dir()
    if not (root / "rmd17").is_dir():
        raise SystemExit(f"rMD17 not found under {root} (set JAXQC_SHARED_DATA)")
    all_results = {}
    for name in args.section:
        cfg = dict(SECTIONS[name])
        if args.molecules and "molecules" in cfg:
            cfg["molecules"] = tuple(args.molecules)
        print(f"section {name}", flush=True)
        t0 = time.perf_counter()
        if name == "splits":
            parity_file = Path(f"{out}_parity.json")
            sigma_of = ({r["data"]: r["jaxqc"]["sigma"] for r in json.loads(parity_file.read_text())["runs"]}
                        if parity_file.exists() else {})
            runs = section_splits(root, peer, cfg, sigma_of)
        else:
            runs = globals()[f"section_{name}"](root, peer, cfg)
        path = Path(f"{out}_{name}")
        results = {**meta, "section": name, "config": {k: v for k, v in cfg.items()}, "runs": runs,
                   "wall_s": time.perf_counter() - t0}
        plot = plot_per_atom if name == "parity" else plot_curve if name in ("curve", "ccsdt") else None
        results["plot"] = str(path.with_suffix(".png")) if plot and plot(runs, path.with_suffix(".png")) else None
        write(results, path.with_suffix(".json"))
        all_results[name] = results
    return all_results


if __name__ == "__main__":
    main()
