"""SchNOrb's use in real quantum chemistry: the predicted density as PySCF's initial guess.

For each test frame of a Hamiltonian data set, PySCF runs the same Kohn-Sham calculation as the data (its
functional, basis and grid, from the file's meta) twice: from PySCF's default guess (minao) and from the
density matrix of a trained model's predicted H (occupied orbitals of H C = S C eps with the exact S, doubly
occupied). Reported: SCF iterations and CPU time of each, and the difference of the converged energies (must be
below 1e-8 Ha: the guess changes the path, not the answer).

When the data carries H0 (the Kohn-Sham matrix of the minao guess), a third start is measured: the density of
H0 itself (one Fock build past PySCF's default: the physics-only competitor of a learned guess). A model with
baseline="sad" needs H0 too. Each start is timed as a real workflow runs it: the guess is built on the SCF's own
solver (H0's Fock build shares the DFT grid with the SCF) and its CPU time is counted, and the learned start
also pays the model's prediction time (per frame, after compilation). Every speed-up is against the full cost.

    python experiments/schnorb_scf.py --model RUN_DIR --data FILE --n 100
    python experiments/schnorb_scf.py --quick        # CI-sized: a tiny model on the shipped water set
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"


def solver(Z, R, meta: dict):
    """(mol, mf): PySCF's Kohn-Sham solver for one frame at the data's level of theory (functional, basis, grid)."""
    from jaxqc.data.generate import _pyscf, _pyscf_molecule, _pyscf_solver, parse_dft_spec

    mods = _pyscf()
    spec = f"{meta['xc']}/{meta['basis']}"
    xc, basis = parse_dft_spec(spec)
    mol = _pyscf_molecule(mods[0], Z, R, basis, int(meta.get("charge", 0)), spec)
    mf = _pyscf_solver(mods, mol, xc, spec)
    if hasattr(mf, "grids"):
        mf.grids.level = int(meta.get("grid_level", 3))
    return mol, mf


def scf(Z, R, meta: dict, guess=None) -> dict:
    """One PySCF SCF of the data's level of theory from the density guess(mol, mf) (None: PySCF's default
    guess). The CPU time counts the guess too: it runs on the same solver, so a Fock build inside it shares the
    DFT grid with the SCF, as it would in a real workflow."""
    mol, mf = solver(Z, R, meta)
    cycles = []
    mf.callback = lambda env: cycles.append(env.get("cycle"))
    t = time.process_time()
    dm0 = None if guess is None else guess(mol, mf)
    e = mf.kernel(dm0=dm0)
    return {"energy_ha": float(e), "cycles": len(cycles), "cpu_s": time.process_time() - t,
            "converged": bool(mf.converged)}


def guess_fock(mol, mf):
    """H0: the Kohn-Sham matrix of PySCF's minao guess density (as `jaxqc data label --hamiltonian` stores it)."""
    return mf.get_fock(dm=mf.get_init_guess(mol, "minao"))


def density(H, S, Z, charge: int):
    """2 C_occ C_occ^T of H C = S C eps."""
    import scipy.linalg

    from jaxqc import orbitals as orb

    _, C = scipy.linalg.eigh(H, S)
    k = orb.n_occupied(Z, charge)
    return 2.0 * C[:, :k] @ C[:, :k].T


def learned_matrices(model, data, idx, predict) -> list:
    """[n_ao, n_ao] per frame: what the model itself predicts, H - H0 for a baseline='sad' model (H0 is then
    rebuilt by the SCF's own solver, guess_fock), else H. predict: jax.jit(schnorb.predict_fn(model.config))."""
    from jaxqc.models import schnorb

    config, params = model.config, model.params
    data = schnorb.with_ao_index(data, config)
    sad = getattr(config, "baseline", "none") == "sad"
    out = []
    for s in range(0, len(idx), 16):
        rows = idx[s:s + 16]
        _, H, _ = predict(params, data.molecules(rows))
        for b, m in enumerate(rows):
            n = int(data.props["ao_mask"][m].sum())
            dH = np.asarray(H[b, :n, :n], np.float64)
            out.append(dH - data.props["H0"][m, :n, :n] if sad else dH)
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a trained schnorb run directory or model file")
    p.add_argument("--data", default=str(Path.home() / ".cache/jaxqc/hamiltonian/ethanol_pbe_def2svp.npz"),
                   help="the Hamiltonian data set the model was trained on (its test frames are used)")
    p.add_argument("--n", type=int, default=100, help="test frames")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="JSON path (default results/schnorb_scf[_quick].json)")
    args = p.parse_args(argv)
    from jaxqc import models
    from jaxqc.data import io

    if args.quick:
        import jax

        from jaxqc.data import registry as data_registry
        from jaxqc.models import registry

        data = data_registry.load("water-dft-hamiltonian")
        spec = registry.get("schnorb")
        tiny = spec.budget("frames", "tiny")
        split = {"train": np.arange(30), "valid": np.arange(30, 35), "test": np.arange(35, 100)}
        run = Path(tempfile.mkdtemp(prefix="schnorb_scf_"))
        spec.fit(spec.make_config(**tiny.options["model"]), data, split, jax.random.PRNGKey(0),
                 tiny.replace(epochs=30), out=run, progress=False)
        model, idx = models.load(run), split["test"][:3]
    else:
        if not args.model:
            raise SystemExit("--model RUN_DIR is needed (or --quick)")
        model = models.load(args.model)
        data = io.read(args.data)
        if model.provenance.get("dataset_md5") not in (None, data.md5):
            raise SystemExit(f"{args.data}: not the data set the model was trained on (md5 differs); its test "
                             f"frames would be wrong")
        test = np.asarray(model.provenance.get("test_idx", []))
        idx = (test if len(test) else np.arange(len(data)))[:args.n]
    t0 = time.perf_counter()
    import jax

    from jaxqc.models import schnorb

    sub = data.subset(np.asarray(idx))
    predict = jax.jit(schnorb.predict_fn(model.config))
    learned_matrices(model, sub, np.arange(len(idx)), predict)   # compiles; the timed call below does not
    c0 = time.process_time()
    learned = learned_matrices(model, sub, np.arange(len(idx)), predict)
    ml_cpu_s = (time.process_time() - c0) / len(idx)        # the model's own cost per frame, added to its start
    rows = []
    has_h0 = "H0" in data.props
    needs_h0 = getattr(model.config, "baseline", "none") == "sad"
    charge = int(data.meta.get("charge", 0))
    for k, m in enumerate(idx):
        Z = data.Z[m]
        ml = lambda mol, mf: density(learned[k] + (guess_fock(mol, mf) if needs_h0 else 0.0),  # noqa: E731
                                     mf.get_ovlp(), Z, charge)
        base = scf(Z, data.R[m], data.meta)
        guess = scf(Z, data.R[m], data.meta, ml)
        guess["cpu_s"] += ml_cpu_s
        row = {"frame": int(m), "default": base, "schnorb": guess,
               "energy_diff_ha": abs(base["energy_ha"] - guess["energy_ha"])}
        if has_h0:
            sad = scf(Z, data.R[m], data.meta, lambda mol, mf: density(guess_fock(mol, mf), mf.get_ovlp(), Z, charge))
            row["sad_fock"] = sad
            row["energy_diff_ha"] = max(row["energy_diff_ha"], abs(base["energy_ha"] - sad["energy_ha"]))
        rows.append(row)
        print(f"frame {m}: cycles {base['cycles']} -> {guess['cycles']}, CPU {base['cpu_s']:.2f} -> "
              f"{guess['cpu_s']:.2f} s, |dE| {rows[-1]['energy_diff_ha']:.1e} Ha", flush=True)
    tot = lambda who, key: float(np.sum([r[who][key] for r in rows]))  # noqa: E731
    summary = {"frames": len(rows), "mean_cycles_default": tot("default", "cycles") / len(rows),
               "mean_cycles_schnorb": tot("schnorb", "cycles") / len(rows),
               "cpu_s_default": tot("default", "cpu_s"), "cpu_s_schnorb": tot("schnorb", "cpu_s"),
               "speedup_cpu": tot("default", "cpu_s") / tot("schnorb", "cpu_s"),
               "max_energy_diff_ha": float(max(r["energy_diff_ha"] for r in rows)),
               "h0_cost_included_in_schnorb": needs_h0 and has_h0, "ml_cpu_s_per_frame_included": ml_cpu_s,
               "all_converged": all(r["default"]["converged"] and r["schnorb"]["converged"] for r in rows)}
    if has_h0:
        summary.update(mean_cycles_sad_fock=tot("sad_fock", "cycles") / len(rows), cpu_s_sad_fock=tot("sad_fock", "cpu_s"),
                       speedup_cpu_sad_fock=tot("default", "cpu_s") / tot("sad_fock", "cpu_s"))
        summary["all_converged"] = summary["all_converged"] and all(r["sad_fock"]["converged"] for r in rows)
    results = {"experiment": "schnorb_scf", "quick": args.quick, "model": model.spec.describe(model.config),
               "theory": data.meta.get("theory"), "summary": summary, "rows": rows,
               "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}}
    out = Path(args.out or OUT / f"schnorb_scf{'_quick' if args.quick else ''}.json")
    from jaxqc.data.io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1))
    print(json.dumps(summary))
    return results


if __name__ == "__main__":
    main()
