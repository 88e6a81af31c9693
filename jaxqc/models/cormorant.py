"""Cormorant (Anderson et al. 2019) registered as a model family: jaxqc.nn.cormorant's covariant
Clebsch–Gordan network (e3nn-jax), the optax loop. The CLI's --features are its channels per irrep,
--interactions its CG levels, --l-max its largest l.

Budgets (compare): quick = 8 channels, 3 CG levels, a fixed number of epochs; paper = the published
sizes, trained to early stopping (patience 100) with a 24 h (frames) / 48 h (QM9) wall-clock guard.
"""
from ..nn.cormorant import Cormorant, CormorantConfig
from .network import network_spec
from .registry import Budget, register

TINY = {"model": {"channels": 3, "cg_levels": 1, "l_max": 1, "n_rbf": 8, "radial_hidden": 8, "readout_hidden": 8},
        "train": {"batch_size": 20, "n_buckets": 1}}
# frames: at lr 2e-3, 25 epochs reach validation force MAE 0.98 kcal/mol/Å on 50 ethanol-xtb frames; lr 5e-4
# (the default) reached 1.36 in 35; 30 steps/epoch
QUICK_EPOCHS, QUICK_LR = 25, 2e-3
QUICK_EPOCHS_QM9 = 5

SPEC = register(network_spec(
    "cormorant", CormorantConfig, Cormorant, "Cormorant covariant Clebsch–Gordan network (Anderson 2019)",
    sizes=(("channels", "channels"), ("cg_levels", "CG levels"), ("l_max", "l_max")),
    flag_fields={"features": "channels", "interactions": "cg_levels", "cutoff": "cutoff_ang", "l_max": "l_max"},
    budgets={
        ("frames", "tiny"): Budget((40,), epochs=1, options=TINY),
        ("property", "tiny"): Budget((40,), epochs=1, options=TINY),
        ("frames", "quick"): Budget((1000,), epochs=QUICK_EPOCHS, max_minutes=30.0,
                                    options={"model": {"channels": 8, "cg_levels": 3}, "train": {"lr": QUICK_LR}}),
        ("property", "quick"): Budget((5000,), epochs=QUICK_EPOCHS_QM9, max_minutes=30.0,
                                      options={"model": {"channels": 8, "cg_levels": 3}, "train": {"n_buckets": 4}}),
        ("frames", "paper"): Budget((1000,), epochs=100_000, max_minutes=24 * 60.0,
                                    options={"train": {"patience": 100}}),
        ("property", "paper"): Budget((110_000,), epochs=100_000, max_minutes=48 * 60.0,
                                      options={"train": {"patience": 100}}),
    }))
