"""SchNet force fields on rMD17: jaxqc against schnetpack, same frames, same recipe, same wall-clock budget.

Protocol (rMD17, Christensen & von Lilienfeld 2020): train on the 1000 frames of
rmd17_<molecule>_train_<k>.npz (950 training + 50 validation, seeded), report the MAE on the 1000 frames of
rmd17_<molecule>_test_<k>.npz. Energy + force loss (weights 0.01 / 0.99 as schnetpack's rMD17 config), Adam,
plateau decay, the model kept is the best on validation forces. Both codes train at the same time, each on
its own CPU core with one thread, for the same budget (jaxqc/benchmark/nn_peer.py); the JSON has each code's
validation curve against time (time to accuracy), its test MAE, and the published SchNet figure.

    python experiments/md17_nn.py --molecule ethanol --budget-min 40     # both codes, 40 min wall
    python experiments/md17_nn.py --quick --no-peer                       # CI-sized (tests run this)
Needs ../shared/data/rmd17 (or JAXQC_SHARED_DATA). Peer: schnetpack 2.1.1 (see experiments/README.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path


from jaxqc.benchmark import nn_peer as nn_compare  # noqa: E402

# ---- configuration (edit here) --------------------------------------------------------------
ARCH = nn_compare.MD17_ARCH      # SchNet as in schnetpack's rMD17 config (jaxqc.benchmark.nn_peer)
RECIPE = nn_compare.MD17_RECIPE
N_TRAIN, N_VALID = 950, 50
SEED = 0
PUBLISHED = nn_compare.MD17_PUBLISHED
QUICK = dict(arch=dict(features=32, interactions=2, cutoff_ang=5.0, n_rbf=16), n_train=20, n_valid=10, n_test=50,
             budget_min=30.0, epochs=100, batch=5)  # quick: the epochs are the budget, 30 min only a guard
OUT = Path(__file__).parent / "results"


shared_root = nn_compare.shared_root


def load(root: Path, molecule: str, k: str, quick: bool):
    """(data, split): the train_k file and the test_k file as one Dataset; split indices into it."""
    if quick:
        return nn_compare.rmd17_data(root, molecule, k, QUICK["n_train"], QUICK["n_valid"], QUICK["n_test"], SEED)
    return nn_compare.rmd17_data(root, molecule, k, N_TRAIN, N_VALID, None, SEED)


def worker(args) -> dict:
    """One code's run (called in its own process by run_both, or directly with --code)."""
    nn_compare.set_single_thread()
    arch = QUICK["arch"] if args.quick else ARCH
    rec = {**RECIPE, "batch_size": QUICK["batch"]} if args.quick else RECIPE
    if args.patience is not None:
        rec = {**rec, "plateau_patience": args.patience}
    data, split = load(shared_root(), args.molecule, args.split, args.quick)
    if args.code == "jaxqc":
        run_dir = Path(args.run_dir or Path.home() / ".cache" / "jaxqc" / "runs" / f"md17_nn_{args.molecule}_{args.split}")
        return nn_compare.run_jaxqc(data, split, arch, rec, args.budget_min, "energy", True, run_dir,
                                    resume=args.resume, **({"epochs": QUICK["epochs"]} if args.quick else {}))
    return nn_compare.run_schnetpack(data, split, arch, rec, args.budget_min, "energy", True, seed=SEED,
                                     **({"epochs": QUICK["epochs"]} if args.quick else {}))


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", default="ethanol", choices=sorted(PUBLISHED))
    p.add_argument("--split", default="01", help="rMD17 split 01..05")
    p.add_argument("--budget-min", type=float, default=40.0, help="training wall-clock budget per code (min)")
    p.add_argument("--quick", action="store_true", help="CI-sized: tiny network, 20 frames, 100 epochs")
    p.add_argument("--no-peer", action="store_true", help="jaxqc only")
    p.add_argument("--out", default=None, help="JSON path (default results/md17_nn_<molecule>.json)")
    p.add_argument("--resume", action="store_true",
                   help="jaxqc only: continue the run directory's checkpoint until --budget-min in all")
    p.add_argument("--patience", type=int, help="plateau patience in epochs (default 15; schnetpack's rMD17 "
                   "config uses 50, right for budgets of a thousand epochs or more)")
    p.add_argument("--run-dir", help="jaxqc's run directory (model.npz, metrics); default ~/.cache/jaxqc/runs/...")
    p.add_argument("--code", choices=["jaxqc", "schnetpack"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.budget_min = min(args.budget_min, QUICK["budget_min"])
    return args


def main(argv=None) -> dict:
    args = parse(argv)
    if args.code:  # a worker process
        res = worker(args)
        Path(args.worker_out).write_text(json.dumps(res, default=float))
        return res
    root = shared_root()
    if not (root / "rmd17").exists():
        raise SystemExit(f"no rMD17 data under {root} (set JAXQC_SHARED_DATA)")
    out = Path(args.out or OUT / f"md17_nn_{args.molecule}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    peer = not args.no_peer and not args.resume and importlib.util.find_spec("schnetpack") is not None
    codes = ("jaxqc", "schnetpack") if peer else ("jaxqc",)
    argv_w = ["--molecule", args.molecule, "--split", args.split, "--budget-min", str(args.budget_min)]
    argv_w += ["--quick"] if args.quick else []
    argv_w += ["--run-dir", args.run_dir] if args.run_dir else []
    argv_w += ["--resume"] if args.resume else []
    argv_w += ["--patience", str(args.patience)] if args.patience is not None else []
    t0 = time.perf_counter()
    runs = nn_compare.run_both(Path(__file__).resolve(), argv_w, out, codes)
    target = PUBLISHED[args.molecule]
    for res in runs.values():
        if "curve" in res:
            res["time_to_published_s"] = nn_compare.time_to(res["curve"], "valid_forces_mae", target)
            res["best_valid_forces_mae"] = min(r["valid_forces_mae"] for r in res["curve"])
    results = {"experiment": "md17_nn", "molecule": args.molecule, "split": args.split, "quick": args.quick,
               "arch": QUICK["arch"] if args.quick else ARCH,
               "recipe": {**RECIPE, **({"plateau_patience": args.patience} if args.patience is not None else {})},
               "budget_min": args.budget_min,
               "published_schnet_forces_mae": target, "resources": "each code on its own CPU core, one thread, "
               "both at the same time", "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
               "runs": runs}
    if all("test" in r for r in runs.values()) and len(runs) == 2:
        j, s = runs["jaxqc"], runs["schnetpack"]
        results["ratios_jaxqc_over_schnetpack"] = {
            "test_forces_mae": j["test"]["forces_mae"] / s["test"]["forces_mae"],
            "test_energy_mae": j["test"]["energy_mae"] / s["test"]["energy_mae"],
            "epochs_in_budget": j["epochs"] / s["epochs"]}
    results["plot"] = str(out.with_suffix(".png")) if nn_compare.plot_curves(
        runs, "valid_forces_mae", out.with_suffix(".png"), f"rMD17 {args.molecule}, SchNet, {N_TRAIN} frames",
        target) else None
    from jaxqc.data.io import atomic_write_text
    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    for code, r in runs.items():
        if "test" in r:
            print(f"{code}: {r['epochs']} epochs in {r['train_s']:.0f} s; test E MAE {r['test']['energy_mae']:.3f} "
                  f"kcal/mol, F MAE {r['test']['forces_mae']:.3f} kcal/mol/Å; time to {target}: "
                  f"{r['time_to_published_s']}", flush=True)
        else:
            print(f"{code}: {r.get('error')}", flush=True)
    return results


if __name__ == "__main__":
    main()
