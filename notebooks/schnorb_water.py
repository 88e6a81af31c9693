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
# # SchNOrb: learning the Kohn–Sham Hamiltonian of water
#
# A forward model learns one property at a time. SchNOrb (Schütt 2019) learns the electronic structure itself:
# the Kohn–Sham matrix H in an atomic-orbital basis. Orbital energies, HOMO, LUMO, the gap, the density and the
# dipole then follow from H and the overlap S with no further learning (`jaxqc.orbitals`).
#
# This notebook uses `water-dft-hamiltonian`, which ships with jaxqc. It holds 100 water frames from GFN2-xTB
# Langevin MD at 500 K, labelled by PySCF with PBE/def2-SVP: 24 basis functions and 5 occupied orbitals. The
# notebook
#
# 1. checks that H rotates with the molecule, H' = D H Dᵀ, in PySCF's AO order;
# 2. trains jaxqc's covariant SchNOrb variant (MACE features with Clebsch–Gordan blocks; covariant by
#    construction) on 60 frames;
# 3. plots the predicted orbital energies of held-out frames against DFT's.
#
# Set `JAXQC_FAST=1` for a run of seconds; the test suite does.

# %%
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402

from jaxqc import orbitals as orb  # noqa: E402
from jaxqc.data import hamiltonian  # noqa: E402
from jaxqc.data import registry as data_registry  # noqa: E402
from jaxqc.models import registry, schnorb  # noqa: E402

FAST = os.environ.get("JAXQC_FAST") == "1"
OUT = Path(os.environ.get("JAXQC_NOTEBOOK_OUT", "."))
EPOCHS = 20 if FAST else 600

data = data_registry.load("water-dft-hamiltonian")
layout = hamiltonian.check(data)
print(data.meta["theory"], "|", layout.basis, dict(layout.shells), "|", data.props["H"].shape[-1], "AOs")

# %% [markdown]
# ## 1. The Hamiltonian of a rotated molecule
# If the molecule is rotated by Q, with or without inversion, its AO functions mix within each shell through
# the Wigner-D blocks D^l(Q). That gives H' = D H Dᵀ. Here PySCF recomputes the matrices on the rotated
# geometry. Hartree–Fock is used because it has no integration grid that could break the symmetry.

# %%
Q = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))[0]
Q = -Q * np.sign(np.linalg.det(Q))                # a rotation with inversion
ref = hamiltonian.label_frame(data.Z[0], data.R[0], "HF/def2-SVP", forces=False)
rot = hamiltonian.label_frame(data.Z[0], data.R[0] @ Q.T, "HF/def2-SVP", forces=False)
D = np.asarray(orb.ao_rotation(layout.molecule_shells(data.Z[0]), jnp.asarray(Q, jnp.float32)), np.float64)
rotation_error_ha = float(np.abs(D @ ref["H"] @ D.T - rot["H"]).max())
print(f"max |D H D^T - H(rotated)| = {rotation_error_ha:.1e} Ha (D in float32)")

# %% [markdown]
# ## 2. Train the covariant variant
# The frames are split into 60 for training, 10 for validation and 30 for testing. The loss is the MSE of H,
# S and the energy.

# %%
spec = registry.get("schnorb")
size = spec.budget("frames", "tiny").options["model"] if FAST else {"channels": 8, "pair_channels": 4}
config = spec.make_config(covariant=True, **size)
split = {"train": np.arange(60), "valid": np.arange(60, 70), "test": np.arange(70, 100)}
budget = spec.budget("frames", "quick").replace(epochs=EPOCHS, max_minutes=None, options={
    "train": {"batch_size": 10, "n_buckets": 1, "lr": 5e-3, "schedule": "exponential",
              "decay_steps": max(1, EPOCHS * 6 // 2), "patience": 10**6}})
run_dir = Path(tempfile.mkdtemp(prefix="schnorb_water_"))
fitted = spec.fit(config, data, split, jax.random.PRNGKey(0), budget, out=run_dir, progress=False)
scores = schnorb.evaluate_more(fitted.config, fitted.params, data, split["test"])
for k, v in scores.items():
    if "unit" in v and "mae_list" not in v:   # (not_trained entries have no unit; per-orbital lists skipped)
        print(f"{k:18s}", {kk: round(vv, 4) for kk, vv in v.items() if kk != "unit"}, v["unit"])

# %% [markdown]
# ## 3. Predicted against DFT orbital energies
# The orbitals come from the predicted H with the exact overlap S (`schnorb.orbitals_fn`, jit-compiled).

# %%
batch_data = schnorb.with_ao_index(data, fitted.config)
eps, _ = jax.jit(schnorb.orbitals_fn(fitted.config))(fitted.params, batch_data.molecules(split["test"]))
eps = np.asarray(eps)
ref_eps = data.props["mo_energy"][split["test"]]
n_show = 8                                          # 5 occupied + 3 virtual orbitals
fig, ax = plt.subplots(figsize=(4.5, 4.2))
for k in range(n_show):
    ax.scatter(ref_eps[:, k], eps[:, k], s=8, label=f"orbital {k + 1}" + (" (HOMO)" if k == 4 else ""))
lim = [ref_eps[:, :n_show].min() - 0.2, ref_eps[:, :n_show].max() + 0.2]
ax.plot(lim, lim, "k:", lw=0.8)
ax.set(xlabel="DFT orbital energy (Ha)", ylabel="SchNOrb (covariant) orbital energy (Ha)",
       title=f"water, {len(split['test'])} test frames")
ax.legend(fontsize=6)
fig.tight_layout()
fig.savefig(OUT / "schnorb_water_orbitals.png", dpi=110)
