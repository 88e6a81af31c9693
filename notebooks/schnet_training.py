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
# # Training SchNet and Cormorant on energies and forces
#
# SchNet (Schütt 2018) learns atom-wise energy contributions with continuous-filter convolutions over
# interatomic distances; the molecule's energy is their sum, and the forces are its negative gradient
# (`jaxqc.forces_fn`), so the learned force field conserves energy. This notebook trains a small SchNet on
# the GFN2-xTB ethanol frames that ship with jaxqc (`ethanol-xtb`), on energies and forces together,
#
# 1. follows the training (loss and validation MAE against time),
# 2. evaluates the best model on held-out frames (energy and force MAE, parity plot),
# 3. draws a learning curve (test MAE against the number of training frames),
# 4. trains Cormorant (covariant Clebsch–Gordan network) on the same frames and checks that its features
#    rotate with the Wigner-D matrices.
#
# Runs are short here (CPU minutes); `jaxqc train schnet ... --time-budget MIN` runs longer ones and
# `jaxqc compare` puts SchNet beside GDML/sGDML and DTNN on the same frames. Set `JAXQC_FAST=1` for a run of
# seconds (the test suite does).

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib

if os.environ.get("JAXQC_FAST"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

import jaxqc
from jaxqc.train.loop import TrainConfig
from jaxqc.train.run import load_network, predict_network, train_network

FAST = bool(os.environ.get("JAXQC_FAST"))
OUT = Path(os.environ.get("JAXQC_NOTEBOOK_OUT", "notebook_output"))
OUT.mkdir(parents=True, exist_ok=True)
RUNS = Path(tempfile.mkdtemp(prefix="schnet_notebook_"))  # run directories (checkpoints, model.npz)

SIZES = (20, 40) if FAST else (100, 300, 1000)  # training frames for the learning curve
MODEL = dict(features=16, interactions=1, n_rbf=10) if FAST else dict(features=64, interactions=3)
CORMORANT = (dict(channels=4, cg_levels=1, l_max=1, n_rbf=8, radial_hidden=8, readout_hidden=8) if FAST
             else dict(channels=8, cg_levels=3))
TRAIN = dict(epochs=1, batch_size=20) if FAST else dict(epochs=10**9, time_budget_min=2.0)
N_VALID, N_TEST = (10, 40) if FAST else (50, 1000)

# %% [markdown]
# ## Data and split
# A seeded permutation of the 3,000 frames: test frames first, validation frames last, and nested
# training sets from what lies between (the protocol of `jaxqc compare`).

# %%
data = jaxqc.read("ethanol-xtb")
order = np.random.default_rng(0).permutation(len(data))
test_idx, valid_idx, pool = order[:N_TEST], order[len(data) - N_VALID:], order[N_TEST:len(data) - N_VALID]
print(f"{len(data)} frames of {data.n_atoms[0]} atoms ({data.meta.get('theory')}); "
      f"test {len(test_idx)}, validation {len(valid_idx)}, pool {len(pool)}")
print(f"energy std {data.E.std():.2f} kcal/mol, force rms {np.sqrt((data.F ** 2).mean()):.2f} kcal/mol/Å")

# %% [markdown]
# ## Train
# `train_network` runs the shared optax loop: Adam, plateau learning-rate decay, an exponential moving
# average of the parameters for validation, checkpoints (a killed run continues with `resume=True`) and
# the best model on validation in `RUN_DIR/model.npz`. With forces the loss weights forces 1 and energies
# 0.01 (per squared label scale), as SchNet's MD17 protocol does.

# %%
results = {}
for n_train in SIZES:
    run_dir = RUNS / f"schnet_{n_train}"
    split = {"train": pool[:n_train], "valid": valid_idx, "test": test_idx}
    t0 = time.perf_counter()
    out = train_network("schnet", data, "energy", True, n_train, N_VALID, TrainConfig(**TRAIN), run_dir,
                        MODEL, split=split, progress=not FAST)
    kind, config, energy, params, header = load_network(run_dir)
    E, F = predict_network(energy, params, data, test_idx, forces=True)
    results[n_train] = {"energy_mae": float(np.abs(E - data.E[test_idx]).mean()),
                        "forces_mae": float(np.abs(F - data.F[test_idx]).mean()),
                        "train_s": time.perf_counter() - t0, "epochs": out["epochs"], "run_dir": run_dir,
                        "E": E, "F": F}
    print(f"N={n_train}: {out['epochs']} epochs in {out['time_s']:.0f} s ({out['stop_reason']}); test MAE "
          f"energy {results[n_train]['energy_mae']:.3f} kcal/mol, forces {results[n_train]['forces_mae']:.3f} "
          f"kcal/mol/Å")

# %% [markdown]
# ## The training run
# Every epoch appends a row to `metrics.jsonl` in the run directory (the loop also draws
# `learning_curve.png` there). Here is the largest run:

# %%
best = results[max(SIZES)]
rows = [json.loads(line) for line in (best["run_dir"] / "metrics.jsonl").read_text().splitlines()]
t = [r["time_s"] / 60 for r in rows]
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
a1.semilogy(t, [r["train_loss"] for r in rows], "o-")
a1.set(xlabel="training time (min)", ylabel="training loss")
a2.semilogy(t, [r["valid_forces_mae"] for r in rows], "o-", label="forces (kcal/mol/Å)")
a2.semilogy(t, [r["valid_energy_mae"] for r in rows], "s-", label="energy (kcal/mol)")
a2.set(xlabel="training time (min)", ylabel="validation MAE")
a2.legend()
fig.tight_layout()
fig.savefig(OUT / "schnet_training_run.png", dpi=100)
plt.show()

# %% [markdown]
# ## Evaluate: parity of the best model on the test frames

# %%
fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 4))
ref_E, ref_F = data.E[test_idx], data.F[test_idx].ravel()
a1.plot(ref_E, best["E"], ".", ms=3)
a1.plot([ref_E.min(), ref_E.max()], [ref_E.min(), ref_E.max()], "k-", lw=0.8)
a1.set(xlabel="reference energy (kcal/mol)", ylabel="SchNet energy (kcal/mol)",
       title=f"energy MAE {best['energy_mae']:.2f}")
a2.plot(ref_F, best["F"].ravel(), ".", ms=2, alpha=0.5)
a2.plot([ref_F.min(), ref_F.max()], [ref_F.min(), ref_F.max()], "k-", lw=0.8)
a2.set(xlabel="reference force component (kcal/mol/Å)", ylabel="SchNet (kcal/mol/Å)",
       title=f"force MAE {best['forces_mae']:.2f}")
fig.tight_layout()
fig.savefig(OUT / "schnet_parity.png", dpi=100)
plt.show()

# %% [markdown]
# ## Learning curve
# Test MAE against training-set size, log-log. With a fixed training time per run the larger sets see
# fewer epochs, so this curve mixes data and optimisation; train to convergence (a larger
# `time_budget_min`, or a GPU) for the published behaviour.

# %%
fig, ax = plt.subplots(figsize=(5, 4))
ax.loglog(SIZES, [results[n]["forces_mae"] for n in SIZES], "o-", label="forces (kcal/mol/Å)")
ax.loglog(SIZES, [results[n]["energy_mae"] for n in SIZES], "s-", label="energy (kcal/mol)")
ax.set(xlabel="N training frames", ylabel="test MAE", title="SchNet on ethanol-xtb")
ax.grid(True, which="both", alpha=0.3)
ax.legend()
fig.tight_layout()
fig.savefig(OUT / "schnet_learning_curve.png", dpi=100)
plt.show()

# %% [markdown]
# The trained run directory is a jaxqc force field: `jaxqc evaluate RUN_DIR --data ethanol-xtb --json` gives
# the same numbers, and `jaxqc md RUN_DIR --start ethanol-xtb --steps 1000` runs dynamics with it.

# %% [markdown]
# ## Cormorant on the same frames
# Cormorant's atoms carry spherical tensors (l = 0, 1, 2: like multipoles) and its only non-linearity is the
# Clebsch–Gordan product, so every hidden feature rotates with the molecule. The same training call, the
# same split and budget as the largest SchNet run:

# %%
n_train = max(SIZES)
split = {"train": pool[:n_train], "valid": valid_idx, "test": test_idx}
out = train_network("cormorant", data, "energy", True, n_train, N_VALID, TrainConfig(**TRAIN), RUNS / "cormorant",
                    CORMORANT, split=split, progress=not FAST)
kind, config, c_energy, c_params, header = load_network(RUNS / "cormorant")
E, F = predict_network(c_energy, c_params, data, test_idx, forces=True)
cormorant_scores = {"energy_mae": float(np.abs(E - data.E[test_idx]).mean()),
                    "forces_mae": float(np.abs(F - data.F[test_idx]).mean()), "epochs": out["epochs"]}
print(f"Cormorant N={n_train}: {out['epochs']} epochs; test MAE energy {cormorant_scores['energy_mae']:.3f}, "
      f"forces {cormorant_scores['forces_mae']:.3f}  (SchNet: {best['energy_mae']:.3f}, {best['forces_mae']:.3f})")

# %% [markdown]
# Covariance, checked: rotate the molecule by a random rotation Q; every level's features F must equal
# D(Q) F, with D the Wigner-D matrices of each irrep (e3nn's `transform_by_matrix`).

# %%
import e3nn_jax as e3nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from jaxqc.nn.cormorant import Cormorant  # noqa: E402

mol = data.molecules(test_idx[:1])
Q = np.asarray(e3nn.rand_matrix(jax.random.PRNGKey(0)))
net = Cormorant(config)
levels = net.apply({"params": c_params["net"]}, mol.Z, mol.R, mol.mask, return_features=True)[1]
levels_rot = net.apply({"params": c_params["net"]}, mol.Z, mol.R @ jnp.asarray(Q.T), mol.mask,
                       return_features=True)[1]
covariance_error = [float(jnp.linalg.norm(Fr.array - F.transform_by_matrix(Q).array) / jnp.linalg.norm(F.array))
                    for F, Fr in zip(levels, levels_rot)]
print("irreps of the last level:", levels[-1].irreps)
print("relative error |F(QR) - D(Q) F(R)| / |F| per level (float32):", [f"{e:.1e}" for e in covariance_error])
