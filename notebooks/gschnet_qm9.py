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
# # G-SchNet: generating molecules in 3D
#
# Every other jaxqc model checks a configuration. G-SchNet (Gebauer, Gastegger & Schütt 2019) makes new ones:
# it places one atom at a time. Given the atoms placed so far, it predicts the next atom's type (or "stop"
# for the current focus atom) and a distribution of its distance to every placed atom. The new position is
# drawn on a 3D grid around the focus, where those distance distributions agree.
#
# This notebook
# 1. loads a G-SchNet trained on QM9 molecules with at most 7 heavy atoms (`experiments/gschnet_qm9.py`), or
#    trains a small one here when that run is absent;
# 2. generates molecules in one jitted, batched call;
# 3. checks them with RDKit (bonds and bond orders from the 3D coordinates) and draws them in 2D and 3D.
#
# Set `JAXQC_FAST=1` for a run of seconds; the test suite does. Fast mode trains a tiny model on the 17
# QM9 molecules with at most 3 heavy atoms, and validates on them too: it is meant to learn exactly those.

# %%
import os
from pathlib import Path

import jax
import matplotlib
import numpy as np

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402

from jaxqc import chem, models  # noqa: E402
from jaxqc.data import io  # noqa: E402
from jaxqc.elements import SYMBOLS  # noqa: E402
from jaxqc.models import gschnet, registry  # noqa: E402

FAST = os.environ.get("JAXQC_FAST") == "1"
OUT = Path(os.environ.get("JAXQC_NOTEBOOK_OUT", "."))
RUN = Path.home() / ".cache" / "jaxqc" / "runs" / "gschnet_qm9"
N_GENERATE = 24 if FAST else 200

# %% [markdown]
# ## 1. A trained model
# The experiment's run directory holds the best model of a run (`model.npz`). Without it (or in fast mode),
# a tiny model learns the smallest QM9 molecules here.

# %%
data = io.read("qm9")
if not FAST and (RUN / "model.npz").exists():
    model = models.load(RUN)
    config, params = model.config, model.params
    train_idx = np.asarray(model.provenance["train_idx"])
else:
    config = gschnet.GSchNetConfig(features=32, interactions=2, head_hidden=(32,), n_dist_bins=150, n_rbf=10,
                                   grid_spacing_ang=0.15, steps_per_molecule=16, max_heavy_atoms=3, max_atoms=14)
    pool = gschnet.pool(config, data)  # all of them: here the model is meant to learn these few molecules
    split = {"train": pool, "valid": pool}
    budget = registry.Budget(epochs=300 if FAST else 1000, options={"train": {
        "batch_size": len(pool), "lr": 3e-3, "ema_decay": 0.0, "patience": 1000, "schedule": "constant"}})
    fitted = gschnet.fit(config, data, split, jax.random.PRNGKey(0), budget, out=OUT / "gschnet_run", progress=False)
    config, params, train_idx = fitted.config, fitted.params, split["train"]
print(gschnet.describe(config), "|", len(train_idx), "training molecules")

# %% [markdown]
# ## 2. Generate
# One compiled function builds a whole batch of molecules; the temperature sharpens the position
# distributions (the paper's default is 0.1).

# %%
gen = gschnet.generate(config, params, N_GENERATE, jax.random.PRNGKey(1), temperature=0.1, batch=N_GENERATE)
checks = chem.check_many(gen["Z"], gen["R"])
train_smiles = {c.smiles for c in chem.check_many(data.Z[train_idx], data.R[train_idx]) if c.valid}
valid = [c for c in checks if c.valid]
summary = {"generated": N_GENERATE, "valid": len(valid) / N_GENERATE,
           "unique among valid": len({c.smiles for c in valid}) / max(len(valid), 1),
           "novel among valid": np.mean([c.smiles not in train_smiles for c in valid]) if valid else 0.0,
           "molecules/s": N_GENERATE / gen["seconds"]}
print({k: round(float(v), 3) for k, v in summary.items()})

# %% [markdown]
# ## 3. 2D depictions (RDKit, from the bonds perceived in 3D)

# %%
from rdkit import Chem  # noqa: E402
from rdkit.Chem import Draw  # noqa: E402

shown = [c.smiles for c in valid][:12]
if shown:
    img = Draw.MolsToGridImage([Chem.MolFromSmiles(s) for s in shown], molsPerRow=6, subImgSize=(180, 150),
                               legends=shown)
    img.save(str(OUT / "gschnet_2d.png"))
    img

# %% [markdown]
# ## 4. 3D structures
# The generated coordinates themselves, with the bonds RDKit perceived.

# %%
COLORS = {1: "0.85", 6: "0.3", 7: "tab:blue", 8: "tab:red", 9: "tab:green"}
picks = [k for k, c in enumerate(checks) if c.valid][:6] or list(range(min(6, N_GENERATE)))
fig = plt.figure(figsize=(12, 7))
for p, k in enumerate(picks):
    ax = fig.add_subplot(2, 3, p + 1, projection="3d")
    m = gen["Z"][k] > 0
    Z, R = gen["Z"][k][m], gen["R"][k][m]
    for i, j, _ in checks[k].bonds:
        ax.plot(*zip(R[i], R[j]), color="0.5", lw=2)
    ax.scatter(*R.T, c=[COLORS.get(int(z), "k") for z in Z], s=[60 if z == 1 else 160 for z in Z],
               edgecolors="k", depthshade=False)
    ax.set_title(checks[k].smiles or checks[k].reason[:30], fontsize=9)
    ax.set_axis_off()
    ax.set_box_aspect(np.ptp(R, axis=0) + 1.0)
fig.tight_layout()
fig.savefig(OUT / "gschnet_3d.png", dpi=100)
print("formulas:", [chem.formula(gen["Z"][k]) for k in picks], "| elements", [SYMBOLS[z] for z in config.elements])
