"""NVE energy conservation of ethanol on an sGDML and a SchNet force field, and MD speed against the peer route.

For each model and time step dt in {0.1, 0.2, 0.5} fs: velocity-Verlet NVE (float64, jaxqc's lax.scan
driver `jaxqc.md.run.run_md`) for 10 ps from one held-out rMD17 geometry with Maxwell–Boltzmann
velocities at 300 K (the same velocities for every dt). Reported per run: total-energy drift (least-squares
slope, kcal/mol/ps and kcal/mol/ps/atom, and |drift| per atom per ns in units of kT), fluctuation (std of
the total energy; velocity Verlet's is O(dt^2)), mean temperature, steps/s.

Speed against the peer route, in the same process, as steps/s ratios (dt 0.5 fs, float64): the same model
through ASE's VelocityVerlet with jaxqc's ASE calculator, and — sGDML only — the `sgdml` package's own ASE
calculator (`sgdml.intf.ase_calc.SGDMLCalculator`) on the identical model written in sgdml's file format
(predictions checked equal first). The ASE routes run PEER_STEPS steps after a warm-up (not 10 ps; the
JSON says so). Without sgdml (run outside the peer venv) its rows say why they are missing.

    # the real run (peer venv: torch, sgdml 1.0.3, ase; sees jaxqc from /work/main)
    /tmp/venv-peers/bin/python experiments/md_energy_conservation.py --schnet-model RUN_DIR
    # CI size: ethanol-xtb, sGDML N=50, an untrained tiny SchNet, 0.5 ps, 30 peer steps
    python experiments/md_energy_conservation.py --quick

Writes results/md_energy_conservation.json and .png (total energy vs time per dt; fluctuation vs dt,
log-log, with a slope-2 guide).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxqc.data import io
from jaxqc.data.registry import shared_data_dir
from jaxqc.elements import masses_amu
from jaxqc.kernels import gdml
from jaxqc.md import integrators as md
from jaxqc.md.models import check_geometry, load_potential
from jaxqc.md.run import MDConfig, drift_and_fluctuation, run_md
from jaxqc.units import EV_KCAL_MOL, KB_KCAL_MOL_K

# ---- configuration (edit here) --------------------------------------------------------------------
DATA = ("rmd17", "rmd17_ethanol_train_01.npz")   # under ../shared/data (or --data FILE)
N_TRAIN, N_VALID, SIGMA, LAM, SEED = 950, 50, 22.0, 1e-10, 0  # rMD17 protocol; sigma of md17_sgdml's speed section
DTS_FS = (0.1, 0.2, 0.5)
DURATION_PS = 10.0
TEMPERATURE_K = 300.0                            # initial Maxwell–Boltzmann velocities
SAMPLE_FS = 1.0                                  # log the energies every 1 fs
PEER_DT_FS, PEER_STEPS, PEER_WARMUP = 0.5, 300, 5
QUICK = dict(data="ethanol-xtb", n_train=50, n_valid=50, sigma=10.0, lam=1e-6, duration_ps=0.5, peer_steps=30)
OUT = Path(__file__).parent / "results" / "md_energy_conservation"


# ---- models -----------------------------------------------------------------------------------------
def train_sgdml(data, n_train, n_valid, sigma, lam, path) -> dict:
    config = gdml.GDMLConfig(symmetric=True, sigmas=(sigma,), lam=lam)
    t = time.perf_counter()
    model = gdml.train_gdml(data, config, n_train=n_train, n_valid=n_valid, seed=SEED, progress=True)
    gdml.save_gdml(model, path)
    return {"train_s": time.perf_counter() - t, "validation": model["validation"], "n_train": n_train,
            "sigma": sigma, "lam": lam, "valid_idx": np.asarray(model["split"]["valid"])}


def tiny_schnet(data, path: Path) -> Path:
    """An untrained SchNet (16 features, 2 interactions; statistics of 50 frames) as a run directory:
    --quick only, to exercise the code path when no trained model is given."""
    from jaxqc.nn import model as nnmodel
    from jaxqc.potential import save_model

    config = nnmodel.config_for("schnet", features=16, interactions=2, n_rbf=12)
    idx = np.arange(50)
    stats = nnmodel.fit_stats(data, idx, "energy", nnmodel.atom_reference(data, "energy", config.max_z), True, "sum")
    params = nnmodel.init_params("schnet", config, jax.random.PRNGKey(SEED), data.molecules(idx[:2]), stats)
    path.mkdir(parents=True, exist_ok=True)
    save_model(path / "model.npz", "schnet", jax.device_get(params),
               {"kind": "schnet", "target": "energy", "model": dataclasses.asdict(config)},
               {"dataset_md5": data.md5, "dataset_name": data.meta.get("name"), "train_idx": idx,
                "note": "untrained (md_energy_conservation --quick)"}, {"E": "kcal/mol"})
    return path


def sgdml_model_dict(path) -> dict:
    """The jaxqc sGDML model at `path` in the `sgdml` package's model format (the inverse of
    gdml.params_from_sgdml): training descriptors R_desc [D, M] and R_d_desc_alpha [M, D] in sgdml's
    lower-triangle pair order, its permutations, sigma, c, std = 1."""
    from sgdml import __version__ as sgdml_version
    from sgdml.utils.desc import Desc

    model = gdml.load_gdml(path)
    z = np.asarray(model["z"])
    n = len(z)
    x, J = gdml.descriptors(model["R_train"])  # [M, D] in jaxqc's pair order (i < j)
    beta = gdml.descriptor_coefficients(J, np.asarray(model["alpha"]).reshape(len(x), -1))
    li, lj = np.tril_indices(n, -1)
    tril_index = np.zeros((n, n), np.int64)
    tril_index[li, lj] = tril_index[lj, li] = np.arange(len(li))
    i, j = gdml.pair_indices(n)
    to_sgdml = tril_index[i, j]  # jaxqc pair k is sgdml pair to_sgdml[k]
    R_desc, R_d_desc_alpha = np.zeros_like(x), np.zeros_like(beta)
    R_desc[:, to_sgdml], R_d_desc_alpha[:, to_sgdml] = x, beta
    perms = np.asarray(model["perms"])
    dim_d = x.shape[1]
    tril_perms = np.array([Desc.perm(p) for p in perms])
    tril_perms_lin = (tril_perms + np.arange(len(perms))[:, None] * dim_d).flatten("F")
    return {"type": "m", "code_version": sgdml_version, "z": z, "R_desc": R_desc.T, "R_d_desc_alpha": R_d_desc_alpha,
            "perms": perms, "tril_perms_lin": tril_perms_lin, "sig": model["sigma"], "c": model["c"], "std": 1.0,
            "lam": model["lam"], "use_E": True, "r_unit": "Ang", "e_unit": "kcal/mol"}


# ---- runs ---------------------------------------------------------------------------------------------
def nve_runs(name, potential, Z, R0, v0, duration_ps) -> list:
    energy, params, info = potential
    rows = []
    for dt in DTS_FS:
        steps = int(round(duration_ps * 1000 / dt))
        cfg = MDConfig(steps=steps, dt_fs=dt, write_every=max(1, int(round(SAMPLE_FS / dt))), ensemble="nve",
                       temperature_k=TEMPERATURE_K, seed=SEED,  # guards off: the drift is what is measured
                       max_temperature_k=None, max_drift_kcal_mol_atom=None, bond_range_ang=None)
        r = run_md(energy, params, Z, R0, cfg, v0=v0)
        e = drift_and_fluctuation(r.log, len(Z), TEMPERATURE_K)
        change = r.log["total_kcal_mol"] - r.log["total_kcal_mol"][0]  # [frames] kcal/mol
        every = max(1, len(change) // 2000)  # at most ~2000 points of the trace in the JSON
        rows.append({"model": name, "dt_fs": dt, "steps": r.steps_done, "duration_ps": r.steps_done * dt / 1000,
                     "stopped": r.stopped, "steps_per_s": r.steps_per_s, "run_s": r.run_s, "compile_s": r.compile_s,
                     **e, "max_abs_total_change_kcal_mol": float(np.abs(change).max()),
                     "trace": {"time_fs": r.log["time_fs"][::every].tolist(),
                               "total_minus_initial_kcal_mol": change[::every].tolist()}})
        print(f"  {name} dt {dt:g} fs: {r.steps_done} steps, {r.steps_per_s:.0f} steps/s, drift "
              f"{e.get('drift_kcal_mol_ps_atom', float('nan')):.2e} kcal/mol/ps/atom, fluctuation "
              f"{e.get('fluctuation_std_kcal_mol', float('nan')):.2e} kcal/mol, "
              f"mean T {e.get('mean_temperature_K', 0):.0f} K"
              + (f" STOPPED: {r.stopped}" if r.stopped else ""), flush=True)
    fl = {row["dt_fs"]: row.get("fluctuation_std_kcal_mol") for row in rows}
    if all(fl.values()):
        slope = np.polyfit(np.log(list(fl)), np.log(list(fl.values())), 1)[0]
        for row in rows:
            row["fluctuation_loglog_slope"] = float(slope)
    return rows


def ase_steps_per_s(calc, Z, R0, v0, masses, n_steps) -> dict:
    """steps/s of ASE's VelocityVerlet (PEER_DT_FS) with `calc`, after PEER_WARMUP steps."""
    from ase import Atoms
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    atoms = Atoms(numbers=Z, positions=R0, masses=masses)
    atoms.calc = calc
    atoms.set_velocities(v0 / fs)
    dyn = VelocityVerlet(atoms, timestep=PEER_DT_FS * fs)
    dyn.run(PEER_WARMUP)
    e0 = float(np.squeeze(atoms.get_total_energy()))  # sgdml's calculator gives energies of shape (1,)
    t = time.perf_counter()
    dyn.run(n_steps)
    wall = time.perf_counter() - t
    return {"steps": n_steps, "warmup_steps": PEER_WARMUP, "dt_fs": PEER_DT_FS, "wall_s": wall,
            "steps_per_s": n_steps / wall,
            "total_energy_change_kcal_mol": (float(np.squeeze(atoms.get_total_energy())) - e0) * EV_KCAL_MOL}


def peer_speed(name, model_path, potential, Z, R0, v0, jaxqc_steps_per_s, n_steps, sgdml_ok) -> dict:
    from jaxqc.md.calculator import JaxqcCalculator

    m = masses_amu(Z)
    out = {"model": name, "note": f"ASE routes timed over {n_steps} steps (dt {PEER_DT_FS} fs) after "
                                  f"{PEER_WARMUP} warm-up steps; jaxqc lax.scan over the full {DURATION_PS:g} ps run "
                                  f"(compilation excluded)",
           "jaxqc_scan_steps_per_s": jaxqc_steps_per_s}
    out["ase_jaxqc_calculator"] = ase_steps_per_s(JaxqcCalculator(potential=potential), Z, R0, v0, m, n_steps)
    out["ratio_jaxqc_scan_over_ase_jaxqc"] = jaxqc_steps_per_s / out["ase_jaxqc_calculator"]["steps_per_s"]
    if not name.startswith("sgdml"):
        out["ase_sgdml_calculator"] = {"missing": "the sgdml package runs sGDML models only"}
    elif sgdml_ok is not True:
        out["ase_sgdml_calculator"] = {"missing": sgdml_ok}
    else:
        try:
            import logging

            from sgdml.intf.ase_calc import SGDMLCalculator

            logging.getLogger("sgdml").setLevel(logging.ERROR)
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "sgdml_model.npz"
                np.savez_compressed(path, **sgdml_model_dict(model_path))
                calc = SGDMLCalculator(str(path))
                parity = parity_check(calc, potential, Z, R0)
                row = ase_steps_per_s(calc, Z, R0, v0, m, n_steps)
            out["ase_sgdml_calculator"] = {**row, "parity_with_jaxqc": parity,
                                           "sgdml_version": importlib.import_module("sgdml").__version__}
            out["ratio_jaxqc_scan_over_ase_sgdml"] = jaxqc_steps_per_s / row["steps_per_s"]
            out["ratio_ase_jaxqc_over_ase_sgdml"] = out["ase_jaxqc_calculator"]["steps_per_s"] / row["steps_per_s"]
        except Exception as err:  # the peer's failure is a result, not a crash of the experiment
            out["ase_sgdml_calculator"] = {"missing": f"{type(err).__name__}: {err}"}
    print(f"  speed {name}: jaxqc scan {jaxqc_steps_per_s:.0f} steps/s, ASE+jaxqc "
          f"{out['ase_jaxqc_calculator']['steps_per_s']:.0f}"
          + (f", ASE+sgdml {out['ase_sgdml_calculator']['steps_per_s']:.0f}" if "steps_per_s" in
             out["ase_sgdml_calculator"] else f", ASE+sgdml missing ({out['ase_sgdml_calculator']['missing']})"),
          flush=True)
    return out


def parity_check(calc, potential, Z, R0) -> dict:
    """Max |difference| of energy (kcal/mol) and forces (kcal/mol/Å) between the peer calculator and jaxqc."""
    from ase import Atoms

    from jaxqc.md.calculator import JaxqcCalculator

    diffs = {}
    for name, c in (("peer", calc), ("jaxqc", JaxqcCalculator(potential=potential))):
        atoms = Atoms(numbers=Z, positions=R0)
        atoms.calc = c
        diffs[name] = (float(np.squeeze(atoms.get_potential_energy())) * EV_KCAL_MOL, atoms.get_forces() * EV_KCAL_MOL)
    dE = abs(diffs["peer"][0] - diffs["jaxqc"][0])
    dF = float(np.abs(diffs["peer"][1] - diffs["jaxqc"][1]).max())
    if dF > 1e-4 * max(1.0, float(np.abs(diffs["jaxqc"][1]).max())):
        raise RuntimeError(f"sgdml and jaxqc disagree on the same model: max |dF| {dF:.3g} kcal/mol/Å")
    return {"energy_abs_diff_kcal_mol": float(dE), "forces_max_abs_diff_kcal_mol_ang": dF}


# ---- plot ---------------------------------------------------------------------------------------------
def plot(runs, path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    models = list(dict.fromkeys(r["model"] for r in runs))
    fig, axes = plt.subplots(1, len(models) + 1, figsize=(5 * (len(models) + 1), 4))
    for ax, name in zip(axes, models):
        for r in (r for r in runs if r["model"] == name):
            ax.plot(np.asarray(r["trace"]["time_fs"]) / 1000, r["trace"]["total_minus_initial_kcal_mol"],
                    lw=0.7, label=f"dt {r['dt_fs']:g} fs")
        ax.set(xlabel="time (ps)", ylabel="E_total - E_total(0) (kcal/mol)", title=f"{name}, NVE")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for k, name in enumerate(models):
        rows = [r for r in runs if r["model"] == name and r.get("fluctuation_std_kcal_mol")]
        if not rows:
            continue
        dt = np.array([r["dt_fs"] for r in rows])
        fl = np.array([r["fluctuation_std_kcal_mol"] for r in rows])
        ax.loglog(dt, fl, "o-", color=f"C{k}", label=name)
        ax.loglog(dt, fl[0] * (dt / dt[0]) ** 2, ":", color=f"C{k}", label="slope 2" if k == 0 else None)
    ax.set(xlabel="dt (fs)", ylabel="std of total energy (kcal/mol)", title="fluctuation vs time step")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ---- main ---------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None, help="frames of ethanol (rMD17 npz, a split file, any jaxqc source); "
                                                "default ../shared/data/rmd17/rmd17_ethanol_train_01.npz")
    p.add_argument("--sgdml-model", help="a saved jaxqc sGDML model of the molecule (default: train one here)")
    p.add_argument("--schnet-model", help="a SchNet run directory or model file trained on this molecule")
    p.add_argument("--duration-ps", type=float, default=None, help=f"NVE length per run (default {DURATION_PS:g})")
    p.add_argument("--peer-steps", type=int, default=None, help=f"steps timed on the ASE routes ({PEER_STEPS})")
    p.add_argument("--no-peer", action="store_true", help="skip the ASE / sgdml speed comparison")
    p.add_argument("--quick", action="store_true", help="CI size: ethanol-xtb, small models, 0.5 ps")
    p.add_argument("--out", default=str(OUT), help="output prefix (.json and .png are added)")
    args = p.parse_args(argv)
    q = QUICK if args.quick else {}
    duration = args.duration_ps or q.get("duration_ps", DURATION_PS)
    peer_steps = args.peer_steps or q.get("peer_steps", PEER_STEPS)
    source = args.data or q.get("data") or str(shared_data_dir().joinpath(*DATA))
    data = io.read(source)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sgdml_ok = True if importlib.util.find_spec("sgdml") else ("sgdml not importable in this Python; run in the "
                                                                 "peer venv /tmp/venv-peers")
    results = {"experiment": "md_energy_conservation", "quick": args.quick, "data": source, "dataset_md5": data.md5,
               "dts_fs": list(DTS_FS), "duration_ps": duration, "temperature_k_initial": TEMPERATURE_K,
               "kT_kcal_mol": KB_KCAL_MOL_K * TEMPERATURE_K, "precision": "float64", "seed": SEED,
               "date": time.strftime("%Y-%m-%d"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "jax": jax.__version__, "backend": jax.default_backend()},
               "runs": [], "speed": [], "models": {}}
    tmp = tempfile.TemporaryDirectory()
    if args.sgdml_model:
        sgdml_path = Path(args.sgdml_model)
        start_frame = len(data) - 1
        results["models"]["sgdml"] = {"path": str(sgdml_path)}
    else:
        sgdml_path = Path(tmp.name) / "sgdml.npz"
        n_train, n_valid = q.get("n_train", N_TRAIN), q.get("n_valid", N_VALID)
        info = train_sgdml(data, n_train, n_valid, q.get("sigma", SIGMA), q.get("lam", LAM), sgdml_path)
        start_frame = int(info.pop("valid_idx")[0])  # a held-out frame
        results["models"]["sgdml"] = {"trained_here": info}
        print(f"sGDML: {n_train} frames, sigma {info['sigma']:g}, {info['train_s']:.1f} s, validation force MAE "
              f"{info['validation']['forces_mae']:.3f} kcal/mol/Å", flush=True)
    Z, R0 = data.Z[start_frame, :data.n_atoms[start_frame]], data.R[start_frame, :data.n_atoms[start_frame]]
    results["start"] = {"frame": start_frame, "note": "a validation frame (not trained on)" if not args.sgdml_model
                        else "the last frame of --data"}
    m = masses_amu(Z)
    with jax.enable_x64(True):
        v0 = np.asarray(md.maxwell_boltzmann(jax.random.PRNGKey(SEED), m, TEMPERATURE_K, jax.numpy.float64))
    models = {"sgdml": sgdml_path}
    if args.schnet_model:
        models["schnet"] = Path(args.schnet_model)
    elif args.quick:
        models["schnet (untrained, quick)"] = tiny_schnet(data, Path(tmp.name) / "schnet")
    else:
        results["models"]["schnet"] = {"missing": "no --schnet-model given"}
    for name, path in models.items():
        potential = load_potential(path)
        check_geometry(potential[2], Z, where=f"{source} frame {start_frame}")
        results["models"].setdefault(name, {}).update(path=str(path), description=potential[2]["description"])
        print(f"{name}: {potential[2]['description']}", flush=True)
        rows = nve_runs(name, potential, Z, R0, v0, duration)
        results["runs"] += rows
        if not args.no_peer:
            jaxqc_rate = next(r["steps_per_s"] for r in rows if r["dt_fs"] == PEER_DT_FS)
            results["speed"].append(peer_speed(name, path, potential, Z, R0, v0, jaxqc_rate, peer_steps, sgdml_ok))
    tmp.cleanup()
    results["plot"] = str(out.with_suffix(".png")) if plot(results["runs"], out.with_suffix(".png")) else None
    path = out.with_suffix(".json")
    path.with_suffix(".json.tmp").write_text(json.dumps(results, indent=1, default=float))
    path.with_suffix(".json.tmp").replace(path)
    print(f"wrote {path}" + (f" and {results['plot']}" if results["plot"] else ""))
    return results


if __name__ == "__main__":
    main()
