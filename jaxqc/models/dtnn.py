"""DTNN (Schütt et al. 2017) registered as a model family: jaxqc.nn.dtnn's module, the optax loop.

Budgets (compare): quick = the published sizes, a fixed number of epochs; paper = trained to early
stopping (patience 100) with a 24 h (frames) / 48 h (QM9) wall-clock guard.
"""
from ..nn.dtnn import DTNN, DTNNConfig
from .network import network_spec
from .registry import Budget, register

TINY = {"model": {"features": 8, "factors": 8, "interactions": 1, "n_rbf": 10},
        "train": {"batch_size": 20, "n_buckets": 1}}
# frames: lr 2e-3 reaches in 100 epochs the validation force MAE that lr 5e-4 (the default) reaches in 400
# (0.755 kcal/mol/Å on 50 ethanol-xtb frames); 30 steps/epoch
QUICK_EPOCHS, QUICK_LR = 120, 2e-3
QUICK_EPOCHS_QM9 = 20

SPEC = register(network_spec(
    "dtnn", DTNNConfig, DTNN, "DTNN deep tensor neural network (Schütt 2017)",
    sizes=(("features", "features"), ("interactions", "interactions")),
    budgets={
        ("frames", "tiny"): Budget((40,), epochs=1, options=TINY),
        ("property", "tiny"): Budget((40,), epochs=1, options=TINY),
        ("frames", "quick"): Budget((1000,), epochs=QUICK_EPOCHS, max_minutes=30.0,
                                    options={"train": {"lr": QUICK_LR}}),
        ("property", "quick"): Budget((5000,), epochs=QUICK_EPOCHS_QM9, max_minutes=30.0,
                                      options={"train": {"n_buckets": 4}}),
        ("frames", "paper"): Budget((1000,), epochs=100_000, max_minutes=24 * 60.0,
                                    options={"train": {"patience": 100}}),
        ("property", "paper"): Budget((110_000,), epochs=100_000, max_minutes=48 * 60.0,
                                      options={"train": {"patience": 100}}),
    }))
