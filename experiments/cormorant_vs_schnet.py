"""Cormorant against SchNet: same data, same recipe, same wall-clock budget, in the same run.

Tasks (both networks get the same frames, the same label normalisation and the same optimiser recipe):
  md17  rMD17 ethanol split 01: 950 training + 50 validation frames of train_01, the 1000 frames of test_01;
        energy + force loss as experiments/md17_nn.py (lr 1e-3, batch 10, 0.01 E + 0.99 F, plateau decay).
  qm9   U0 on the fixed QM9 protocol, 10k training molecules, 2k validation, 10k test; the recipe of
        experiments/qm9_nn.py --accuracy (lr 5e-4, batch 32, plateau patience 5).
SchNet is the one of those experiments (md17: 128 features, 6 interactions; qm9: 64 features, 3
interactions); Cormorant is jaxqc.nn.cormorant's frozen config (4 CG levels, 10 channels, l_max 2).
The two run at the same time, each pinned to its own CPU core with one thread (jaxqc/benchmark/nn_peer.py),
for the same budget (compilation included). Reported per network: validation MAE against time, test MAE of
the best-on-validation model, epochs and optimiser steps per second, peak resident memory (VmHWM) of its
process; JSON + a plot per task.

    python experiments/cormorant_vs_schnet.py --task md17 --budget-min 30
    python experiments/cormorant_vs_schnet.py --task qm9 --budget-min 30
    python experiments/cormorant_vs_schnet.py --quick        # CI-sized: ethanol-xtb, tiny networks
Needs ../shared/data/rmd17 (or JAXQC_SHARED_DATA) for md17, and QM9 (`pip install jaxqc[qm9]`; cached on first use) for qm9.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from jaxqc.benchmark import nn_peer as nn_compare

# ---- configuration (edit here) --------------------------------------------------------------
CODES = ("cormorant", "schnet")
ARCH = {"md17": {"schnet": nn_compare.MD17_ARCH, "cormorant": {}},
        "qm9": {"schnet": nn_compare.QM9_ARCH, "cormorant": {}}}
RECIPE = {"md17": nn_compare.MD17_RECIPE, "qm9": nn_compare.QM9_RECIPE}
TARGET_LEVEL = {"md17": ("valid_forces_mae", nn_compare.MD17_PUBLISHED["ethanol"]),
                "qm9": ("valid_energy_mae", nn_compare.KRR_BOB_10K)}
QUICK = dict(arch={"schnet": dict(features=16, interactions=2, n_rbf=12),
                   "cormorant": dict(channels=8, cg_levels=2, l_max=1, n_rbf=8, radial_hidden=16, readout_hidden=16)},
             n_train=16, n_valid=8, n_test=32, epochs=40, batch=8, lr=5e-3,
             budget_min=30.0)  # quick: the epochs are the budget, 30 min only a guard
OUT = Path(__file__).parent / "results"


def load(task: str, quick: bool):
    """(data, split) of a task; --quick: frames of the embedded ethanol-xtb set (no shared data needed)."""
    if quick:
        from jaxqc.data import io

        data = io.read("ethanol-xtb")
        n, v, t = QUICK["n_train"], QUICK["n_valid"], QUICK["n_test"]
        return data, {"train": np.arange(n), "valid": np.arange(n, n + v), "test": np.arange(n + v, n + v + t),
                      "protocol": f"ethanol-xtb frames 0..{n - 1} train, next {v} validation, next {t} test"}
    if task == "md17":
        return nn_compare.rmd17_data(nn_compare.shared_root(), "ethanol", "01", 950, 50)
    data, split = nn_compare.qm9_data(False)
    return data, {"train": split["train"][:10_000], "valid": split["valid"], "test": split["test"],
                  "protocol": "QM9 fixed split (seed 0): 10k test, 2k validation, train[:10000]"}


def worker(args) -> dict:
    nn_compare.set_single_thread()
    data, split = load(args.task, args.quick)
    arch = QUICK["arch"][args.code] if args.quick else ARCH[args.task][args.code]
    rec = dict(RECIPE[args.task])
    extra = {}
    if args.quick:
        rec.update(batch_size=QUICK["batch"], lr=QUICK["lr"])
        extra = dict(epochs=QUICK["epochs"], n_buckets=1)
    forces = args.task == "md17"
    run_dir = Path(args.run_dir or Path.home() / ".cache" / "jaxqc" / "runs") / f"cormorant_vs_schnet_{args.task}_{args.code}"
    return nn_compare.run_jaxqc(data, split, arch, rec, args.budget_min, "energy" if forces else "U0", forces,
                                run_dir, kind=args.code, **extra)


def summarise(task: str, runs: dict) -> dict:
    key, level = TARGET_LEVEL[task]
    out = {}
    for code, r in runs.items():
        if "curve" in r:
            r["time_to_target_s"] = nn_compare.time_to(r["curve"], key, level)
            r[f"best_{key}"] = min(row[key] for row in r["curve"])
    if all("test" in r for r in runs.values()):
        c, s = runs["cormorant"], runs["schnet"]
        metric = "forces_mae" if task == "md17" else "energy_mae"
        out = {f"test_{metric}": c["test"][metric] / s["test"][metric],
               "steps_per_s": c["steps_per_s"] / s["steps_per_s"], "epochs_in_budget": c["epochs"] / max(s["epochs"], 1)}
        if c.get("peak_rss_mb") and s.get("peak_rss_mb"):
            out["peak_rss"] = c["peak_rss_mb"] / s["peak_rss_mb"]
    return out


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="md17", choices=["md17", "qm9"])
    p.add_argument("--budget-min", type=float, default=30.0, help="training wall-clock budget per network (min)")
    p.add_argument("--quick", action="store_true", help="CI-sized: ethanol-xtb, tiny networks, 40 epochs")
    p.add_argument("--out", default=None, help="JSON path (default results/cormorant_vs_schnet_<task>.json)")
    p.add_argument("--run-dir", help="parent folder of the two run directories (default ~/.cache/jaxqc/runs)")
    p.add_argument("--code", choices=CODES, help=argparse.SUPPRESS)
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
    if args.task == "md17" and not args.quick and not (nn_compare.shared_root() / "rmd17").exists():
        raise SystemExit(f"no rMD17 data under {nn_compare.shared_root()} (set JAXQC_SHARED_DATA)")
    name = f"cormorant_vs_schnet_{args.task}" + ("_quick" if args.quick else "")
    out = Path(args.out or OUT / f"{name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    argv_w = ["--task", args.task, "--budget-min", str(args.budget_min)] + (["--quick"] if args.quick else [])
    argv_w += ["--run-dir", args.run_dir] if args.run_dir else []
    t0 = time.perf_counter()
    runs = nn_compare.run_both(Path(__file__).resolve(), argv_w, out, CODES)
    key, level = TARGET_LEVEL[args.task]
    results = {"experiment": "cormorant_vs_schnet", "task": args.task, "quick": args.quick,
               "budget_min": args.budget_min, "recipe": RECIPE[args.task],
               "arch": QUICK["arch"] if args.quick else ARCH[args.task],
               "target_level": {"key": key, "value": level},
               "resources": "each network on its own CPU core, one thread, both at the same time",
               "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
               "runs": runs}
    results["ratios_cormorant_over_schnet"] = summarise(args.task, runs)
    title = "rMD17 ethanol, 950 frames, E + F" if args.task == "md17" else "QM9 U0, 10k molecules"
    results["plot"] = str(out.with_suffix(".png")) if nn_compare.plot_curves(
        runs, key, out.with_suffix(".png"), f"Cormorant vs SchNet: {title}", level) else None
    from jaxqc.data.io import atomic_write_text

    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    for code, r in runs.items():
        if "test" in r:
            print(f"{code:10s} epochs {r['epochs']:5d}  steps/s {r['steps_per_s']:.2f}  test E MAE "
                  f"{r['test']['energy_mae']:.3f}" + (f"  F MAE {r['test']['forces_mae']:.3f}" if "forces_mae" in r["test"] else "")
                  + f"  peak {r['peak_rss_mb']:.0f} MiB")
        else:
            print(f"{code:10s} {r.get('error')}")
    print(f"ratios (cormorant / schnet): {results['ratios_cormorant_over_schnet']}")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
