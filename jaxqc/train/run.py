"""Train and evaluate a network on a data source: thin helpers over the model registry for experiment
scripts (the CLI and the benchmark call jaxqc.models directly).

The split is jaxqc.data.splits.for_network: QM9 (a data set with QM9 properties) the fixed protocol
(10k test, 2k validation, train[:N]); any other data a seeded random train/validation split of the file,
the test frames being the rest of the file (or a separate file given to evaluate).
"""
from __future__ import annotations

import jax
import numpy as np

from ..data import splits
from ..data.molecules import Dataset
from ..errors import JaxqcError
from ..models import registry
from ..models.predict import predictor
from . import loop


def make_split(data: Dataset, n_train: int, n_valid: int | None, seed: int = 0) -> dict:
    return splits.for_network(data, n_train, n_valid, seed)


def train_network(kind: str, data: Dataset, target: str, use_forces: bool, n_train: int, n_valid: int | None,
                  train_cfg: loop.TrainConfig, run_dir, model_overrides: dict | None = None, resume: bool = False,
                  n_devices: int | None = None, seed: int = 0, progress: bool = True, split: dict | None = None) -> dict:
    """Train a registered network `kind` on `data` and write the run directory (the spec's fit with a
    budget made from `train_cfg`); `split` ({"train", "valid", "test"} index arrays) overrides make_split.
    Returns the loop's summary (epochs, best_epoch, best_valid, stop_reason, steps, time_s, run_dir)."""
    import dataclasses

    spec = registry.get(kind)
    config = spec.make_config(**(model_overrides or {}))
    if split is None:
        split = make_split(data, n_train, n_valid, seed)
    train = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in ("epochs", "time_budget_min", "seed")}
    budget = registry.Budget(epochs=train_cfg.epochs, max_minutes=train_cfg.time_budget_min,
                             options={"train": train, "forces": use_forces})
    fitted = spec.fit(config, data, split, jax.random.PRNGKey(train_cfg.seed), budget, out=run_dir, resume=resume,
                      progress=progress, n_devices=n_devices, target=target, seed=train_cfg.seed)
    return dict(fitted.info)


def load_network(path):
    """(kind, config, energy, params, header) of a network model file or run directory."""
    import jax.numpy as jnp

    from ..models import load

    model = load(path)
    if not (isinstance(model.params, dict) and "net" in model.params):  # {"net", "stats"}: a network
        raise JaxqcError(f"{path}: a {model.kind} model, not a network")
    params = jax.tree_util.tree_map(jnp.asarray, model.params)
    return model.kind, model.config, model.energy_fn, params, model.header


def network_predictor(energy, forces: bool, batch_size: int = 64):
    """predict(params, data, idx) -> (E [n], F [n, A, 3] or None): the one prediction path."""
    return predictor(energy, forces, batch_size)


def predict_network(energy, params, data: Dataset, idx, forces: bool, batch_size: int = 64):
    """(E [n], F [n, A, 3] or None) for the molecules idx (one call of network_predictor)."""
    return network_predictor(energy, forces, batch_size)(params, data, np.asarray(idx))
