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
# # Differentiating through a molecular dynamics simulation
#
# In jaxqc a trajectory is a pure function: `simulate` runs the integrator's `step_fn(params, state)`
# inside `lax.scan`, with the force field's parameters an argument of every step. So `jax.grad` goes
# through the whole simulation, and the derivative of anything computed from a trajectory with respect to
# the model parameters or the initial positions costs one backward pass (about the price of a few forward
# runs), however many parameters there are. This notebook
#
# 1. trains a small sGDML force field of ethanol (`ethanol-xtb`) and defines an observable of a
#    trajectory: the **mean C–O bond length** over a velocity-Verlet NVE run;
# 2. takes its gradient with respect to every model parameter and the initial positions, and checks each
#    against a central finite difference (float64);
# 3. uses the gradient: a few Newton steps on the initial positions that lengthen the mean C–O bond of
#    the trajectory by a chosen amount.
#
# `experiments/md_differentiable.py` runs the same check as a script (its helpers live in
# `jaxqc.md.differentiable`). Set `JAXQC_FAST=1` for a run of seconds (the test suite does).

# %%
import os
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
from jaxqc.elements import SYMBOLS, masses_amu
from jaxqc.kernels import gdml
from jaxqc.md import integrators as md
from jaxqc.md.differentiable import bond_length, directional_checks, trajectory_average

FAST = bool(os.environ.get("JAXQC_FAST"))
OUT = Path(os.environ.get("JAXQC_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)

N_TRAIN, STEPS = (30, 50) if FAST else (200, 200)  # training frames; MD steps of the observed trajectory
SIGMA, LAM = 10.0, 1e-6     # a smooth, well-conditioned model (as experiments/md_differentiable.py)
DT_FS, TEMPERATURE_K, SEED = 0.5, 300.0, 0
BOND = (1, 2)               # ethanol-xtb atom order: C, C, O, H...; atoms 1 and 2 are the C-O bond
TARGET_CHANGE = 0.01        # Å: lengthen the trajectory's mean C-O bond by this much
N_NEWTON = 4

# %% [markdown]
# ## A force field and its parameters
# `gdml.model_params` gives the prediction parameters of a trained model as a dict of arrays: the
# (symmetrised) training descriptors `centres`, their coefficients `beta`, the kernel width `sigma` and the
# energy offset `c`. `gdml.energy(params, molecules)` is the energy; nothing else is needed for dynamics.

# %%
data = io.read("ethanol-xtb")
model = gdml.train_gdml(data, gdml.GDMLConfig(symmetric=True, sigmas=(SIGMA,), lam=LAM), n_train=N_TRAIN,
                        n_valid=50, seed=SEED)
params = gdml.model_params(model)
print(f"sGDML on {N_TRAIN} frames: validation force MAE {model['validation']['forces_mae']:.2f} kcal/mol/Å")
print({k: np.shape(v) for k, v in params.items()})
Z = data.Z[0]
print("atoms:", " ".join(f"{k}:{SYMBOLS[z]}" for k, z in enumerate(Z)))

# %% [markdown]
# ## The observable as a function of (params, R0)
# `trajectory_average(init_fn, step_fn, v0, steps, observable)` is the jitted function
# $f(\theta, R_0) = \frac{1}{T}\sum_{t=1}^{T} r_{\rm CO}(t)$ of the mean C–O distance over `STEPS` steps
# of velocity Verlet, started at $R_0$ with fixed Maxwell–Boltzmann velocities $v_0$ at 300 K. Everything
# runs in float64 inside `jax.enable_x64`, so that finite differences can check the gradient to many digits.

# %%
m = masses_amu(Z)
with jax.enable_x64(True):  # float64 inside; the global setting is left alone (each cell below does the same)
    p = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float64), params)
    R0 = jnp.asarray(data.R[0], jnp.float64)
    v0 = md.maxwell_boltzmann(jax.random.PRNGKey(SEED), m, TEMPERATURE_K, jnp.float64)
    init_fn, step_fn = md.nve(md.molecule_force_field(gdml.energy, Z), m, DT_FS)
    mean_co = trajectory_average(init_fn, step_fn, v0, STEPS, bond_length(*BOND))

    t0 = time.perf_counter()
    value = float(mean_co(p, R0))
    t_forward = time.perf_counter() - t0
    grad = jax.jit(jax.value_and_grad(mean_co, argnums=(0, 1)))
    t0 = time.perf_counter()
    _, (g_params, g_R0) = jax.block_until_ready(grad(p, R0))
    t_grad_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(grad(p, R0))
    t_grad = time.perf_counter() - t0
print(f"<r_CO> over {STEPS} steps ({STEPS * DT_FS:g} fs) = {value:.6f} Å")
print(f"forward incl. compilation {t_forward:.2f} s; value and gradient {t_grad:.3f} s "
      f"(first call, with compilation, {t_grad_first:.1f} s)")
print(f"d<r_CO>/dsigma = {float(g_params['sigma']):+.3e} Å per 1/Å, d<r_CO>/dc = {float(g_params['c']):+.1e} "
      f"(a constant energy shift moves nothing)")

# %% [markdown]
# ## Check against finite differences
# For each parameter array and for $R_0$: the gradient along a random direction $d$ (for parameters scaled
# by each entry's size) against $[f(x + h d) - f(x - h d)] / 2h$ with $h = 10^{-6}$.

# %%
rng = np.random.default_rng(SEED)
with jax.enable_x64(True):
    checks = directional_checks(lambda q: mean_co(q, R0), g_params, p, rng, relative=True)
    checks += [{**c, "leaf": "R0"} for c in directional_checks(lambda r: mean_co(p, r), g_R0, R0, rng,
                                                                 relative=False)]
for c in checks:
    print(f"  {c['leaf']:12s} grad.d {c['grad_dot_d']: .8e}  finite difference {c['finite_difference']: .8e}  "
          f"rel. error {c['rel_error']:.1e}")
max_rel_error = max(c["rel_error"] for c in checks)
print(f"largest relative error {max_rel_error:.1e}")

# %% [markdown]
# The gradient with respect to the start positions says which atoms, moved where, lengthen the average
# bond: mostly the bond's own atoms C1 and O, then the other carbon; the hydrogens matter much less.

# %%
g = np.asarray(g_R0)
with jax.enable_x64(True):
    r_co0 = np.asarray(bond_length(*BOND)(md.simulate(step_fn, p, init_fn(p, R0, v0), STEPS)[1].R))  # [STEPS]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6))
a1.plot(np.arange(1, STEPS + 1) * DT_FS, r_co0)
a1.axhline(value, color="k", lw=0.8, ls="--", label=f"mean {value:.4f} Å")
a1.set(xlabel="time (fs)", ylabel="C-O distance (Å)", title="the observed trajectory")
a1.legend()
a2.bar(range(len(Z)), np.linalg.norm(g, axis=1), tick_label=[f"{SYMBOLS[z]}{k}" for k, z in enumerate(Z)])
a2.set(ylabel="|d<r_CO>/dR0| per atom (Å/Å)", title="gradient with respect to the start")
fig.tight_layout()
fig.savefig(OUT / "differentiable_md_gradient.png", dpi=100)
plt.show()

# %% [markdown]
# ## Using the gradient: steer the start geometry
# Find start positions whose trajectory has a mean C–O bond `TARGET_CHANGE` longer, moving the atoms as
# little as possible: the smallest step that does it to first order is
# $\Delta R_0 = (f^\ast - f)\, \nabla_{R_0} f / |\nabla_{R_0} f|^2$, a Newton step on one equation; a few of
# them absorb the nonlinearity of the dynamics.

# %%
target = value + TARGET_CHANGE
history = []
with jax.enable_x64(True):
    value_and_grad_R0 = jax.jit(jax.value_and_grad(mean_co, argnums=1))
    R = R0
    for it in range(N_NEWTON + 1):
        f, g_R = value_and_grad_R0(p, R)
        history.append(float(f))
        print(f"step {it}: <r_CO> = {float(f):.6f} Å (target {target:.6f}), start moved by "
              f"{float(jnp.sqrt(jnp.mean(jnp.sum((R - R0) ** 2, -1)))):.4f} Å rms")
        if it < N_NEWTON:
            R = R + (target - f) * g_R / jnp.vdot(g_R, g_R)
    R_steered = R
    r_co1 = np.asarray(bond_length(*BOND)(md.simulate(step_fn, p, init_fn(p, R_steered, v0), STEPS)[1].R))
    dE = float(init_fn(p, R_steered, v0).E - init_fn(p, R0, v0).E)
print(f"potential energy of the start: {dE:+.3f} kcal/mol after steering")

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [2, 1]})
t = np.arange(1, STEPS + 1) * DT_FS
a1.plot(t, r_co0, label=f"start R0: mean {history[0]:.4f} Å")
a1.plot(t, r_co1, label=f"steered start: mean {history[-1]:.4f} Å")
a1.set(xlabel="time (fs)", ylabel="C-O distance (Å)", title="C-O bond along the trajectory, before and after")
a1.legend(fontsize=8)
a2.plot(history, "o-")
a2.axhline(target, color="k", lw=0.8, ls="--", label="target")
a2.set(xlabel="Newton step", ylabel="<r_CO> (Å)", title="the observable")
a2.legend(fontsize=8)
fig.tight_layout()
fig.savefig(OUT / "differentiable_md_steering.png", dpi=100)
plt.show()

# %% [markdown]
# The steered start stretches the C–O bond and so puts energy into its vibration (the start's potential
# energy rises); the bond is anharmonic, softer when stretched than when compressed, so a larger
# vibration has a longer mean length. Over a window of about one vibration period (25 fs in the fast mode)
# the steps also shift the vibration's phase, which moves a short average as much.
#
# The same machinery fits force-field parameters to dynamical observables (swap `R0` for `params` in
# `argnums`: e.g. adjust `sigma` or `beta` so that a trajectory reproduces a measured bond length or
# vibrational spectrum), or optimises initial conditions as here. Longer trajectories of a chaotic system
# make such gradients grow exponentially with time, so in practice one differentiates over windows of
# hundreds of femtoseconds, as here, not nanoseconds.
