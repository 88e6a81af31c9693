"""Do learned force fields keep molecules physical? Langevin dynamics at 500 K for 100 ps with trained
models (MACE, SchNet, sGDML, ...) of rMD17 molecules, and NVE energy conservation of the same models.

Stability: for each model, `--replicas` trajectories at once (jaxqc.md.replicas.langevin_replicas: one
vmapped, jitted BAOAB step; friction 0.01 / fs, dt 0.5 fs), started from frames 0, 250, 500, 750 of
rmd17_<molecule>_test_01.npz with Maxwell–Boltzmann velocities at 500 K (seeded). After every step every
covalent bond of the start geometry must lie within [0.7, 2.5] Å; a replica's first step outside is its
failure time (the replica stops there). Reported: the fraction of replicas that failed, their times, the
mean temperature, replica-steps/s. Networks run in float32, kernel models (sGDML) in float64, as their
model files ask (`jaxqc.md.models.load_potential`'s float64 flag).
NVE: velocity Verlet in float64 for `--nve-ps` ps at dt 0.5 fs from frame 0 with 300 K velocities; total
energy drift (slope) and fluctuation (jaxqc.md.run.drift_and_fluctuation).

    python experiments/md_stability.py --molecule ethanol --model mace=RUN_DIR --model sgdml=FILE.npz --model schnet=RUN_DIR
    python experiments/md_stability.py --quick          # CI: a small sGDML of ethanol-xtb, 2 replicas, 0.2 ps
Models are jaxqc model files or run directories (`jaxqc train ...`), trained on the molecule's frames.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from jaxqc.data import io
from jaxqc.md.models import check_geometry, load_potential
from jaxqc.md.replicas import langevin_replicas
from jaxqc.md.run import MDConfig, drift_and_fluctuation, run_md

# ---- configuration (edit here) --------------------------------------------------------------------
PS, TEMPERATURE_K, DT_FS, FRICTION_PER_FS = 100.0, 500.0, 0.5, 0.01
BOND_RANGE_ANG = (0.7, 2.5)
START_FRAMES = (0, 250, 500, 750)          # of the test file; replica k starts from START_FRAMES[k]
NVE_PS, NVE_T_K = 10.0, 300.0
BLOCK_STEPS = 10_000                        # 5 ps per compiled block (progress between blocks)
QUICK = dict(ps=0.2, nve_ps=0.1, replicas=2)
OUT = Path(__file__).parent / "results"


def start_geometries(molecule: str, quick: bool):
    """(Z [A], R [frames, A, 3]) the start frames: rMD17 test_01 (ethanol-xtb with --quick)."""
    if quick:
        data = io.read("ethanol-xtb")
    else:
        from jaxqc.benchmark.nn_peer import shared_root

        data = io.read(shared_root() / "rmd17" / f"rmd17_{molecule}_test_01.npz")
    return np.asarray(data.Z[0]), np.asarray(data.R[list(START_FRAMES)], np.float64)


def quick_model(path: Path) -> Path:
    """--quick: an sGDML force field of 30 ethanol-xtb frames (seconds)."""
    from jaxqc.kernels import gdml

    config = gdml.GDMLConfig(symmetric=True, sigmas=(10.0,), lam=1e-6)
    data = io.read("ethanol-xtb")
    gdml.save_gdml(gdml.train_gdml(data.subset(np.arange(300)), config, n_train=30, n_valid=50, seed=0), path)
    return path


def study(name: str, path, Z, R_starts, args) -> dict:
    energy, params, info = load_potential(path)
    check_geometry(info, Z)
    steps = int(round(args.ps * 1000 / DT_FS))
    print(f"{name}: {info['description']}; {args.replicas} replicas x {args.ps:g} ps at {TEMPERATURE_K:g} K", flush=True)
    t = time.perf_counter()
    float64 = bool(info.get("float64"))  # kernel models evaluate in float64 (their float32 forces are noise)
    lang = langevin_replicas(energy, params, Z, R_starts[:args.replicas], steps, dt_fs=DT_FS,
                             temperature_k=TEMPERATURE_K, friction_per_fs=FRICTION_PER_FS, seed=0,
                             bond_range_ang=BOND_RANGE_ANG, block_steps=min(BLOCK_STEPS, steps), float64=float64,
                             progress=True)
    lang["precision"] = "float64" if float64 else "float32"
    lang["wall_s"] = time.perf_counter() - t
    failed = [b >= 0 for b in lang["first_bad_step"]]
    lang["fraction_failed"] = sum(failed) / len(failed)
    cfg = MDConfig(steps=int(round(args.nve_ps * 1000 / DT_FS)), dt_fs=DT_FS, temperature_k=NVE_T_K,
                   ensemble="nve", write_every=10, seed=0)
    nve = run_md(energy, params, Z, R_starts[0], cfg)
    nve_out = {"steps": nve.steps_done, "stopped": nve.stopped, "steps_per_s": nve.steps_per_s,
               **drift_and_fluctuation(nve.log, len(Z), NVE_T_K)}
    print(f"  {name}: {sum(failed)}/{len(failed)} replicas left [{BOND_RANGE_ANG[0]}, {BOND_RANGE_ANG[1]}] Å "
          f"(at {[p for p in lang['first_bad_ps'] if p is not None]} ps); NVE drift "
          f"{nve_out.get('drift_kcal_mol_ps_atom', float('nan')):.2e} kcal/mol/ps/atom, fluctuation "
          f"{nve_out.get('fluctuation_std_kcal_mol', float('nan')):.3f} kcal/mol", flush=True)
    return {"path": str(path), "model": info["description"], "kind": info["kind"], "langevin": lang, "nve": nve_out}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", default="ethanol")
    p.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a model to study (repeat)")
    p.add_argument("--replicas", type=int, default=len(START_FRAMES), choices=range(1, len(START_FRAMES) + 1))
    p.add_argument("--ps", type=float, default=PS, help="Langevin length per replica (ps)")
    p.add_argument("--nve-ps", type=float, default=NVE_PS)
    p.add_argument("--quick", action="store_true", help="CI-sized: a small sGDML of ethanol-xtb, 2 replicas, 0.2 ps")
    p.add_argument("--out", help="JSON path (default results/md_stability_<molecule>.json)")
    p.add_argument("--update", action="store_true", help="keep the other models of an existing --out JSON")
    args = p.parse_args(argv)
    if args.quick:
        args.ps, args.nve_ps, args.replicas = QUICK["ps"], QUICK["nve_ps"], QUICK["replicas"]
    out = Path(args.out or OUT / f"md_stability_{args.molecule}{'_quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    models = dict(m.split("=", 1) for m in args.model)
    if args.quick and not models:
        models = {"sgdml": quick_model(out.with_suffix(".sgdml.npz"))}
    if not models:
        raise SystemExit("give at least one --model NAME=PATH")
    Z, R_starts = start_geometries(args.molecule, args.quick)
    t0 = time.perf_counter()
    results = {"experiment": "md_stability", "molecule": "ethanol-xtb" if args.quick else args.molecule,
               "quick": args.quick,
               "langevin": {"ps": args.ps, "temperature_K": TEMPERATURE_K, "dt_fs": DT_FS,
                            "friction_per_fs": FRICTION_PER_FS, "bond_range_ang": BOND_RANGE_ANG,
                            "start_frames": START_FRAMES[:args.replicas],
                            "precision": "float32 for networks, float64 for kernel models"},
               "nve": {"ps": args.nve_ps, "temperature_K": NVE_T_K, "dt_fs": DT_FS, "precision": "float64"},
               "date": time.strftime("%Y-%m-%d"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
               "models": {}}
    n_replicas = min(args.replicas, len(R_starts))
    studied = {name: {**study(name, path, Z, R_starts, args), "langevin_ps": args.ps, "replicas": n_replicas}
               for name, path in models.items()}
    if args.update and out.exists():  # read at the end: another run may have added its models meanwhile
        results["models"] = json.loads(out.read_text())["models"]
    results["models"].update(studied)
    results["wall_s"] = time.perf_counter() - t0
    from jaxqc.data.io import atomic_write_text

    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    print(f"wrote {out}", flush=True)
    return results


if __name__ == "__main__":
    main()
