"""SchNet (Schütt et al. 2018) registered as a model family: jaxqc.nn.schnet's module, the optax loop.

Budgets (compare): quick = 64 features, 3 interactions (smaller than published so that a CPU run
learns something in minutes), a fixed number of epochs; paper = the published sizes, trained to early
stopping (patience 100) with a 24 h (frames) / 48 h (QM9) wall-clock guard.
"""
from ..nn.schnet import SchNet, SchNetConfig
from .network import network_spec
from .registry import Budget, register

TINY_TRAIN = {"batch_size": 20, "n_buckets": 1}
# frames: at lr 2e-3, 120 epochs reach validation force MAE 0.60 kcal/mol/Å on 50 ethanol-xtb frames; lr 5e-4
# (the default) took 300 epochs to 0.64; 30 steps/epoch
QUICK_EPOCHS, QUICK_LR = 120, 2e-3
QUICK_EPOCHS_QM9 = 20  # QM9 5000 molecules

SPEC = register(network_spec(
    "schnet", SchNetConfig, SchNet, "SchNet continuous-filter network (Schütt 2018)",
    sizes=(("features", "features"), ("interactions", "interactions")),
    budgets={
        ("frames", "tiny"): Budget((40,), epochs=1, options={
            "model": {"features": 16, "interactions": 1, "n_rbf": 10}, "train": TINY_TRAIN}),
        ("property", "tiny"): Budget((40,), epochs=1, options={
            "model": {"features": 16, "interactions": 1, "n_rbf": 10}, "train": TINY_TRAIN}),
        ("frames", "quick"): Budget((1000,), epochs=QUICK_EPOCHS, max_minutes=30.0, options={
            "model": {"features": 64, "interactions": 3}, "train": {"lr": QUICK_LR}}),
        ("property", "quick"): Budget((5000,), epochs=QUICK_EPOCHS_QM9, max_minutes=30.0, options={
            "model": {"features": 64, "interactions": 3}, "train": {"n_buckets": 4}}),
        ("frames", "paper"): Budget((1000,), epochs=100_000, max_minutes=24 * 60.0, options={
            "train": {"patience": 100}}),
        ("property", "paper"): Budget((110_000,), epochs=100_000, max_minutes=48 * 60.0, options={
            "train": {"patience": 100}}),
    }))
