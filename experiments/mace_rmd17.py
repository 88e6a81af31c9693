"""MACE on rMD17: force accuracy at N = 950 within a CPU budget, learning curves against jaxqc's sGDML on
the same frames, and the time-to-accuracy curve.

Protocol (rMD17, Christensen & von Lilienfeld 2020, split 01): the training frames are a seeded
permutation's first N frames of rmd17_<molecule>_train_01.npz, the next 50 are the validation frames, the
test set is the 1000 frames of rmd17_<molecule>_test_01.npz (jaxqc.data.splits.rmd17_files). The model
kept is the EMA of the parameters at the best validation force MAE. The budget is a number of epochs
(reproducible); the run is single-threaded on one core, so its CPU time is its wall time, and the JSON
records both (`cpu_core_hours`: user + system time of the process).

    python experiments/mace_rmd17.py --molecule ethanol --n 950 --epochs 400        # one accuracy run
    python experiments/mace_rmd17.py --molecule ethanol --n 50 100 250 500 --epochs-steps 40000
    python experiments/mace_rmd17.py --quick                                         # CI-sized
Needs ../shared/data/rmd17 (or JAXQC_SHARED_DATA).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from jaxqc.benchmark import nn_peer

# ---- configuration (edit here) --------------------------------------------------------------
# A CPU-sized MACE, jaxqc's default config: the paper's architecture (max_L 1 messages, correlation 3, 2 layers,
# r_max 5 Å, 8 Bessel functions, radial MLP 64^3) with 32 channels instead of 256 and l_max 2 instead of 3
# (l_max 3 cost 2.7x per ethanol epoch on this CPU: 19.5 s against 7.2 s)
ARCH = {"channels": 32, "max_L": 1, "l_max": 2, "correlation": 3, "layers": 2, "cutoff_ang": 5.0,
        "n_bessel": 8, "radial_mlp": (64, 64, 64), "readout_mlp": 16}
# MACE's rMD17 recipe (batch 5, lr 0.01, EMA 0.99, gradient clipping 10), with an exponential decay of
# the learning rate to lr / 100 over the epoch budget (a fixed budget: no plateau waits); loss weights
# energy 0.01 / forces 1 on the standardised targets (jaxqc's), the best epoch on validation forces.
RECIPE = {"batch_size": 5, "lr": 0.01, "ema_decay": 0.99, "schedule": "exponential", "energy_weight": 0.01,
          "force_weight": 1.0, "clip_norm": 10.0, "checkpoint_every_s": 120.0}
DECAY_TO = 0.01          # the learning rate at the end of the budget, as a fraction of lr
N_VALID, SEED, SPLIT = 50, 0, "01"
SGDML_SIGMAS = (12.0, 22.0, 32.0, 42.0, 62.0, 82.0)
# jaxqc's sGDML at N = 950 (+ 50 validation) on split 01, measured before (experiments/md17_sgdml.py):
SGDML_950 = {"ethanol": 0.370, "aspirin": 0.726}
PUBLISHED_MACE = {"ethanol": 0.048, "aspirin": 0.152}   # kcal/mol/Å (2.1 and 6.6 meV/Å, Batatia 2022)
QUICK = {"arch": {"channels": 4, "max_L": 1, "l_max": 1, "layers": 1, "n_bessel": 4, "radial_mlp": (8,),
                  "readout_mlp": 4}, "n": (20,), "n_test": 50, "epochs": 3}
OUT = Path(__file__).parent / "results"


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_mace(data, split, arch: dict, recipe: dict, epochs: int, run_dir: Path, resume: bool, guard_min: float) -> dict:
    """One MACE fit on `split` for `epochs` epochs (the lr decays to DECAY_TO x lr at the last epoch)."""
    steps = epochs * -(-len(split["train"]) // recipe["batch_size"])
    rec = {**recipe, "decay_steps": max(1, int(steps / -np.log10(DECAY_TO)))}
    c0 = cpu_s()
    res = nn_peer.run_jaxqc(data, split, arch, rec, guard_min, "energy", True, run_dir, epochs=epochs,
                            resume=resume, kind="mace")
    res["cpu_s"] = cpu_s() - c0
    res["cpu_core_hours"] = res["cpu_s"] / 3600.0
    res["recipe"] = rec
    return res


def run_sgdml(data, split) -> dict:
    """jaxqc's sGDML on the same training and validation frames (sigma chosen on validation)."""
    import jax

    from jaxqc.benchmark.runner import resolve
    from jaxqc.models import saved

    spec, config, budget = resolve("sgdml", "frames", "quick", data)
    budget = budget.replace(options={**budget.options, "sigmas": SGDML_SIGMAS})
    t0 = time.perf_counter()
    fitted = spec.fit(config, data, split, jax.random.PRNGKey(SEED), budget, progress=False, target="energy")
    model = saved.from_fit(spec, config, fitted, "energy")
    fit_s = time.perf_counter() - t0
    test = data.subset(split["test"])
    E, F = model.predictor(forces=True)(test)
    out = nn_peer._errors(E, test.E, F, test.F, test.Z > 0)
    return {**out, "fit_s": fit_s, "sigma": fitted.info.get("sigma")}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", default="ethanol", choices=sorted(SGDML_950))
    p.add_argument("--n", type=int, nargs="+", default=[950], help="training sizes (each + 50 validation frames)")
    p.add_argument("--epochs", type=int, help="epochs per run (default: --epochs-steps / steps per epoch)")
    p.add_argument("--epochs-steps", type=int, default=40_000, help="optimiser steps per run when --epochs is not given")
    p.add_argument("--channels", type=int, help="override ARCH's channels")
    p.add_argument("--l-max", type=int, help="override ARCH's l_max (spherical harmonics and messages)")
    p.add_argument("--batch", type=int, help="override RECIPE's batch size")
    p.add_argument("--guard-min", type=float, default=180.0, help="wall-clock guard per run (min)")
    p.add_argument("--no-sgdml", action="store_true", help="skip the sGDML fits on the same frames")
    p.add_argument("--resume", action="store_true", help="continue the run directories' checkpoints")
    p.add_argument("--run-root", help="run directories (default ~/.cache/jaxqc/runs/mace_rmd17)")
    p.add_argument("--out", help="JSON path (default results/mace_rmd17_<molecule>.json)")
    p.add_argument("--quick", action="store_true", help="CI-sized: a tiny MACE, 20 frames, 3 epochs")
    args = p.parse_args(argv)
    root = nn_peer.shared_root()
    if not (root / "rmd17").exists():
        raise SystemExit(f"no rMD17 data under {root} (set JAXQC_SHARED_DATA)")
    arch = dict(QUICK["arch"] if args.quick else ARCH)
    if args.channels:
        arch["channels"] = args.channels
    if args.l_max is not None:
        arch["l_max"] = args.l_max
    recipe = {**RECIPE, **({"batch_size": args.batch} if args.batch else {})}
    sizes = QUICK["n"] if args.quick else args.n
    out = Path(args.out or OUT / f"mace_rmd17_{args.molecule}{'_quick' if args.quick else ''}.json")
    run_root = Path(args.run_root or Path.home() / ".cache" / "jaxqc" / "runs" / "mace_rmd17")
    t0 = time.perf_counter()
    runs = []
    for n in sizes:
        data, split = nn_peer.rmd17_data(root, args.molecule, SPLIT, n, N_VALID,
                                         QUICK["n_test"] if args.quick else None, SEED)
        epochs = QUICK["epochs"] if args.quick else (
            args.epochs or max(1, round(args.epochs_steps / -(-n // recipe["batch_size"]))))
        mace = run_mace(data, split, arch, recipe, epochs, run_root / f"{args.molecule}_n{n}", args.resume, args.guard_min)
        row = {"n_train": n, "n_valid": N_VALID, "n_test": len(split["test"]), "epochs": epochs, "mace": mace}
        if not args.no_sgdml and (n < 950 or args.quick):
            row["sgdml"] = run_sgdml(data, split)
        elif n == 950:
            row["sgdml"] = {"forces_mae": SGDML_950[args.molecule], "source": "experiments/md17_sgdml.py (split 01)"}
        row["time_to_sgdml_s"] = nn_peer.time_to(mace["curve"], "valid_forces_mae",
                                                 row.get("sgdml", {}).get("forces_mae", -1.0))
        runs.append(row)
        write(out, args, arch, runs, t0, plot_it=False)   # each finished N is kept, whatever happens later
        print(f"{args.molecule} N={n}: MACE {mace['epochs']} epochs, {mace['cpu_core_hours']:.2f} core-h; test F MAE "
              f"{mace['test']['forces_mae']:.3f}, E MAE {mace['test']['energy_mae']:.3f}"
              + (f"; sGDML F {row['sgdml']['forces_mae']:.3f}" if "sgdml" in row else ""), flush=True)
    return write(out, args, arch, runs, t0, plot_it=True)


def write(out: Path, args, arch: dict, runs: list, t0: float, plot_it: bool) -> dict:
    """The results so far, written atomically to `out` (and the plot at the end)."""
    from jaxqc.data.io import atomic_write_text

    results = {"experiment": "mace_rmd17", "molecule": args.molecule, "split": SPLIT, "quick": args.quick,
               "arch": arch, "published_mace_forces_mae": PUBLISHED_MACE[args.molecule],
               "resources": "one process, one thread, pinned by the caller (taskset) or not",
               "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
               "runs": runs}
    if plot_it:
        results["plot"] = plot(results, out.with_suffix(".png"))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    return results


def plot(results: dict, path: Path):
    """Validation force MAE against CPU time for each N (time to accuracy), and test MAE against N."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    for row in results["runs"]:
        c = row["mace"]["curve"]
        a.loglog([max(r["time_s"], 1e-3) / 60 for r in c], [r["valid_forces_mae"] for r in c], label=f"N={row['n_train']}")
    a.axhline(SGDML_950[results["molecule"]], color="k", ls=":", lw=1, label="sGDML N=950")
    a.set(xlabel="training time (min, one core)", ylabel="valid force MAE (kcal/mol/Å)", title=f"MACE, {results['molecule']}")
    a.legend(fontsize=7)
    n = [r["n_train"] for r in results["runs"]]
    b.loglog(n, [r["mace"]["test"]["forces_mae"] for r in results["runs"]], "o-", label="MACE (jaxqc)")
    ns = [(r["n_train"], r["sgdml"]["forces_mae"]) for r in results["runs"] if "sgdml" in r]
    if ns:
        b.loglog(*zip(*ns), "s--", label="sGDML (jaxqc)")
    b.axhline(results["published_mace_forces_mae"], color="gray", ls=":", lw=1, label="MACE published (N=950)")
    b.set(xlabel="training frames N", ylabel="test force MAE (kcal/mol/Å)", title="learning curve")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


if __name__ == "__main__":
    main()
