# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A force field with sGDML, and molecular dynamics on it
#
# The gradient-domain machine learning model GDML (Chmiela 2017) learns the forces of one molecule directly:
# a kernel model of $\partial E / \partial R$ whose integral, the energy, is known in closed form, so the
# forces are exactly the negative gradient of the energy and the force field conserves energy. sGDML
# (Chmiela 2018) symmetrises the kernel over the molecule's permutation symmetries (for ethanol: the
# methyl rotor and the two methylene hydrogens), which the data set would otherwise have to teach. The
# fit is one linear solve, so a few hundred training frames take seconds. This notebook
#
# 1. trains sGDML on the GFN2-xTB ethanol frames that ship with jaxqc (`ethanol-xtb`), with the kernel
#    width $\sigma$ chosen on validation frames;
# 2. evaluates energies and forces on held-out frames (MAE, parity plot);
# 3. saves the model, loads it back as an energy function and runs NVE molecular dynamics on it with
#    `jaxqc.md` (velocity Verlet inside `lax.scan`, float64), checking that the total energy is conserved.
#
# The same in the shell: `jaxqc train sgdml --data ethanol-xtb --n-train 200 --out sgdml.npz`, then
# `jaxqc md sgdml.npz --start ethanol-xtb --steps 10000`. Set `JAXQC_FAST=1` for a run of seconds (the
# test suite does).

# %%
import os
import tempfile
import time
from pathlib import Path

import matplotlib

if os.environ.get("JAXQC_FAST"):
    matplotlib.use("Agg")
import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

from jaxqc.data import io
from jaxqc.elements import masses_amu
from jaxqc.kernels import gdml
from jaxqc.md import integrators as md
from jaxqc.md.models import cast_params, check_geometry, load_potential
from jaxqc.md.run import drift_and_fluctuation, energy_log

FAST = bool(os.environ.get("JAXQC_FAST"))
OUT = Path(os.environ.get("JAXQC_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
MODEL_PATH = Path(tempfile.mkdtemp(prefix="sgdml_notebook_")) / "sgdml_ethanol.npz"

N_TRAIN, N_VALID, N_TEST = (50, 50, 200) if FAST else (200, 200, 1000)
SIGMAS = (10.0, 20.0) if FAST else (12.0, 22.0, 32.0)  # kernel widths (1/Å) tried on the validation frames
STEPS, WRITE_EVERY = (400, 5) if FAST else (10_000, 10)  # MD steps, and steps between recorded frames
DT_FS, TEMPERATURE_K, SEED = 0.5, 300.0, 0

# %% [markdown]
# ## Data and split
# A seeded permutation of the 3,000 frames: the first `N_TEST` are test frames, never seen in training;
# `train_gdml` draws its disjoint training and validation frames (seeded) from the rest.

# %%
data = io.read("ethanol-xtb")
order = np.random.default_rng(SEED).permutation(len(data))
test, rest = data.subset(order[:N_TEST]), data.subset(order[N_TEST:])
print(f"{len(data)} frames of {data.n_atoms[0]} atoms ({data.meta.get('theory')}); test {len(test)}, "
      f"training and validation drawn from {len(rest)}")
print(f"energy std {data.E.std():.2f} kcal/mol, force rms {np.sqrt((data.F ** 2).mean()):.2f} kcal/mol/Å")

# %% [markdown]
# ## Train
# `GDMLConfig(symmetric=True)` is sGDML: the permutations are found by matching the training geometries
# (`jaxqc.kernels.gdml` detects them; the sGDML reference implementation does the same). For every
# $\sigma$ of the grid the fit solves $(K + \lambda I)\,\alpha = -F$ for the $3N \cdot M$ force labels
# (dense Cholesky at this size) and validates. Forces fix the energy up to a constant: the offset $c$ is
# the mean difference between the training energies and the integrated model (a large number, since the
# kernel energy is not centred).

# %%
config = gdml.GDMLConfig(symmetric=True, sigmas=SIGMAS)
t0 = time.perf_counter()
model = gdml.train_gdml(rest, config, n_train=N_TRAIN, n_valid=N_VALID, seed=SEED, progress=not FAST)
print(f"sGDML on {N_TRAIN} frames: {len(model['perms'])} permutations, {model['solver']} solver, "
      f"{time.perf_counter() - t0:.1f} s")
for row in model["grid"]:
    print(f"  sigma {row['sigma']:5g}: validation force MAE {row['forces_mae']:.3f} kcal/mol/Å, "
          f"energy MAE {row['energy_mae']:.3f} kcal/mol")
print(f"chosen sigma {model['sigma']:g} (lowest validation force MAE); offset c = {model['c']:.1f} kcal/mol")

# %% [markdown]
# ## Evaluate on the held-out frames

# %%
E_pred, F_pred = gdml.predict_dataset(model, test)
scores = gdml.metrics(E_pred, F_pred, test.E, test.F)
print(f"test ({len(test)} frames): energy MAE {scores['energy_mae']:.3f} kcal/mol, "
      f"force MAE {scores['forces_mae']:.3f} kcal/mol/Å (RMSE {scores['forces_rmse']:.3f})")

fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
E_mean = test.E.mean()  # energies relative to the mean test energy
lim = [test.E.min() - E_mean, test.E.max() - E_mean]
a1.plot(test.E - E_mean, E_pred - E_mean, ".", ms=3)
a1.plot(lim, lim, "k-", lw=0.8)
a1.set(xlabel="reference energy - mean (kcal/mol)", ylabel="sGDML energy - mean (kcal/mol)",
       title=f"energy MAE {scores['energy_mae']:.2f}")
ref_F = test.F.ravel()
a2.plot(ref_F, F_pred.ravel(), ".", ms=2, alpha=0.5)
a2.plot([ref_F.min(), ref_F.max()], [ref_F.min(), ref_F.max()], "k-", lw=0.8)
a2.set(xlabel="reference force component (kcal/mol/Å)", ylabel="sGDML (kcal/mol/Å)",
       title=f"force MAE {scores['forces_mae']:.2f}")
fig.tight_layout()
fig.savefig(OUT / "sgdml_parity.png", dpi=100)
plt.show()

# %% [markdown]
# ## Save, and load as a potential
# `save_gdml` writes the model file the CLI writes. `load_potential` turns any saved jaxqc force field
# (sGDML, GDML, or a SchNet/DTNN run directory) into `energy(params, molecules)` and its parameters, a
# pytree of arrays; `check_geometry` confirms that a start geometry has the model's atoms in its order.

# %%
gdml.save_gdml(model, MODEL_PATH)
energy, params, info = load_potential(MODEL_PATH)
print(info["description"])
print({k: np.shape(v) for k, v in params.items()})

# %% [markdown]
# ## NVE molecular dynamics
# `molecule_force_field` wraps the energy into `(E, F) = energy_and_forces(params, R)` for one molecule
# (forces by automatic differentiation), and `nve` gives velocity Verlet as an `(init_fn, step_fn)` pair.
# `simulate` runs `step_fn` inside `lax.scan`, recording the state every `WRITE_EVERY` steps. We start from
# a test frame with Maxwell–Boltzmann velocities at 300 K (no centre-of-mass motion) and integrate in
# float64 inside `jax.enable_x64` (global JAX settings are left alone), as `jaxqc md` does. The driver
# behind the CLI, `jaxqc.md.run.run_md`, does the same in blocks, with NaN checks and progress.

# %%
Z, R0 = test.Z[0], test.R[0]
check_geometry(info, Z, where="test frame 0")
m = masses_amu(Z)
with jax.enable_x64(True):
    p = cast_params(params, jnp.float64)
    init_fn, step_fn = md.nve(md.molecule_force_field(energy, Z), m, DT_FS)
    v0 = md.maxwell_boltzmann(jax.random.PRNGKey(SEED), m, TEMPERATURE_K, jnp.float64)
    state = init_fn(p, jnp.asarray(R0, jnp.float64), v0)
    t0 = time.perf_counter()
    run = md.simulate.lower(step_fn, p, state, n_frames=STEPS // WRITE_EVERY, write_every=WRITE_EVERY).compile()
    compile_s, t0 = time.perf_counter() - t0, time.perf_counter()
    final, traj = run(p, state)
    traj = jax.tree_util.tree_map(np.asarray, traj)  # waits for the run
    run_s = time.perf_counter() - t0
    first = jax.tree_util.tree_map(lambda a: np.asarray(a)[None], state)
frames = jax.tree_util.tree_map(lambda a, b: np.concatenate([a, b]), first, traj)  # the start state first
assert np.all(np.isfinite(frames.R)), "the trajectory left the model's domain"
log = energy_log(frames.step, frames.E, frames.v, m, DT_FS)
print(f"{STEPS} steps of {DT_FS} fs ({STEPS * DT_FS / 1000:g} ps) in {run_s:.2f} s ({STEPS / run_s:.0f} steps/s; "
      f"compiled in {compile_s:.1f} s); mean temperature {log['temperature_K'][1:].mean():.0f} K")

# %% [markdown]
# ## Is the total energy conserved?
# Velocity Verlet is symplectic: with forces that are the exact gradient of an energy (as sGDML's are),
# the total energy fluctuates by $O(\Delta t^2)$ around a constant and does not drift. Potential and
# kinetic energy trade places; their sum stays put. The drift is the least-squares slope of the total
# energy against time, the fluctuation its standard deviation.

# %%
stats = drift_and_fluctuation(log, len(Z), TEMPERATURE_K)
print(f"total energy: drift {stats['drift_kcal_mol_ps']:+.2e} kcal/mol/ps "
      f"({stats['drift_kcal_mol_ps_atom']:+.1e} per atom), fluctuation (std) {stats['fluctuation_std_kcal_mol']:.2e} "
      f"kcal/mol")
print(f"for scale: std of the potential energy {log['potential_kcal_mol'].std():.2f} kcal/mol, "
      f"kT = {stats['kT_kcal_mol']:.3f} kcal/mol")

t, E_tot0 = log["time_fs"], log["total_kcal_mol"][0]
fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
a1.plot(t, log["potential_kcal_mol"] - E_tot0, label="potential")
a1.plot(t, log["kinetic_kcal_mol"], label="kinetic")
a1.plot(t, log["total_kcal_mol"] - E_tot0, "k", label="total")
a1.set(ylabel="energy - E_total(0) (kcal/mol)", title=f"sGDML ethanol, NVE, dt {DT_FS:g} fs, float64")
a1.legend(fontsize=8)
dE = (log["total_kcal_mol"] - E_tot0) * 1000  # cal/mol
a2.plot(t, dE, "k", lw=0.8)
a2.plot(t, np.polyval(np.polyfit(t, dE, 1), t), "C3--", lw=1,
        label=f"drift {stats['drift_kcal_mol_ps']:+.1e} kcal/mol/ps")
a2.set(xlabel="time (fs)", ylabel="total - E_total(0) (cal/mol)")
a2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "sgdml_nve_energy.png", dpi=100)
plt.show()

# %% [markdown]
# The total energy fluctuates by some 0.01–0.02 kcal/mol (a few percent of kT) while potential and kinetic
# energy swing by several kcal/mol, and over 5 ps (the full run) it drifts by less than its fluctuation:
# the learned force field conserves energy. Halving `DT_FS` shrinks the fluctuation
# about four times (`experiments/md_energy_conservation.py` draws that); a force field whose forces are
# not the gradient of its energy would drift instead. Next: `notebooks/differentiable_md.py` takes
# gradients through this same simulation.
