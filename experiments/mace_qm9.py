"""MACE on QM9 U0 at N = 10,000 (the fixed protocol: 10,000 test molecules, 2,000 validation), against the
SchNet run of experiments/qm9_nn.py --accuracy at the same wall-clock budget (40 min, one core, one thread).

The recipe is SchNet's (jaxqc.benchmark.nn_peer.QM9_RECIPE: Adam lr 5e-4, batch 32, plateau decay, energy
loss only); the model is jaxqc's default MACE (32 channels, l_max 2, max_L 1, correlation 3, 2 layers,
r_max 5 Å), its elements and neighbour normalisation from the training molecules.

    python experiments/mace_qm9.py                      # 40 min, one core (pin it: taskset -c 1 ...)
    python experiments/mace_qm9.py --quick              # CI-sized (200 molecules, 3 epochs)
Needs QM9 (`jaxqc data fetch qm9` or the qm9pack cache).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from jaxqc.benchmark import nn_peer

ARCH = {"channels": 32, "max_L": 1, "l_max": 2, "correlation": 3, "layers": 2, "cutoff_ang": 5.0}
RECIPE = {**nn_peer.QM9_RECIPE, "n_buckets": 4}
BUDGET_MIN, N_TRAIN = 40.0, 10_000
SCHNET = {"jaxqc_schnet_U0_mae": 2.222, "schnetpack_U0_mae": 1.745, "source": "results/qm9_nn_U0_10000.json"}
QUICK = {"arch": {"channels": 4, "l_max": 1, "layers": 1, "n_bessel": 4, "radial_mlp": (8,), "readout_mlp": 4},
         "epochs": 3}
OUT = Path(__file__).parent / "results" / "mace_qm9_U0_10000.json"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-min", type=float, default=BUDGET_MIN)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--run-dir", default=str(Path.home() / ".cache" / "jaxqc" / "runs" / "mace_qm9_U0_10000"))
    p.add_argument("--resume", action="store_true")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    data, split = nn_peer.qm9_data(args.quick)
    if not args.quick:
        split = {**split, "train": split["train"][:N_TRAIN]}
    t0 = time.perf_counter()
    res = nn_peer.run_jaxqc(data, split, QUICK["arch"] if args.quick else ARCH, RECIPE, args.budget_min, "U0", False,
                            Path(args.run_dir), resume=args.resume, kind="mace",
                            **({"epochs": QUICK["epochs"]} if args.quick else {}))
    res["time_to_schnet_s"] = nn_peer.time_to(res["curve"], "valid_energy_mae", SCHNET["jaxqc_schnet_U0_mae"])
    results = {"experiment": "mace_qm9", "target": "U0", "n_train": len(split["train"]), "quick": args.quick,
               "arch": QUICK["arch"] if args.quick else ARCH, "recipe": RECIPE, "budget_min": args.budget_min,
               "schnet": SCHNET, "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
               "mace": res}
    from jaxqc.data.io import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(results, indent=1, default=float))
    print(f"MACE U0: {res['epochs']} epochs in {res['train_s']:.0f} s ({res['stop_reason']}); test MAE "
          f"{res['test']['energy_mae']:.3f} kcal/mol (SchNet {SCHNET['jaxqc_schnet_U0_mae']})", flush=True)
    return results


if __name__ == "__main__":
    main()
