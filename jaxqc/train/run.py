"""Train and evaluate a network on a data source: splits, statistics, init, loop, model files.

QM9 (a data set with QM9 properties): the fixed protocol split (qm9.qm9_protocol_split: 10k test, 2k
validation, train[:N]). Any other data: a seeded random train/validation split of the file; the test
frames are the rest of the file (or a separate file given to evaluate).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..data.molecules import Dataset, atom_buckets, batches, random_split
from ..errors import JaxqcError
from ..nn import model as nnmodel
from ..potential import load_model
from . import loop


def make_split(data: Dataset, n_train: int, n_valid: int | None, seed: int = 0) -> dict:
    if "U0" in data.props and len(data) == _qm9_size():
        from ..data.qm9 import qm9_protocol_split

        split = qm9_protocol_split(len(data))
        if n_train > len(split["train"]):
            raise JaxqcError(f"QM9 has {len(split['train'])} training molecules, asked for {n_train}")
        return {"train": split["train"][:n_train], "valid": split["valid"][: n_valid or len(split["valid"])],
                "test": split["test"], "protocol": "QM9 fixed split (seed 0): 10k test, 2k validation, train[:N]"}
    n_valid = min(1000, len(data) - n_train) if n_valid is None else n_valid
    split = random_split(len(data), {"train": n_train, "valid": n_valid}, seed=seed)
    used = np.concatenate([split["train"], split["valid"]])
    split["test"] = np.setdiff1d(np.arange(len(data)), used)
    split["protocol"] = f"random train/validation split of the file (seed {seed}); test = the other frames"
    return split


def _qm9_size() -> int:
    from ..data.qm9 import N_QM9

    return N_QM9


def train_network(kind: str, data: Dataset, target: str, use_forces: bool, n_train: int, n_valid: int | None,
                  train_cfg: loop.TrainConfig, run_dir, model_overrides: dict | None = None, resume: bool = False,
                  n_devices: int | None = None, seed: int = 0, progress: bool = True, split: dict | None = None) -> dict:
    """Train a `kind` network on `data` and write the run directory; `split` ({"train", "valid", "test"}
    index arrays) overrides the default split of make_split."""
    overrides = dict(model_overrides or {})
    if target in nnmodel.INTENSIVE:
        overrides.setdefault("readout", "mean")
    config = nnmodel.config_for(kind, **overrides)
    if use_forces and data.F is None:
        raise JaxqcError("--forces: the data set has no forces")
    if use_forces and target != "energy":
        raise JaxqcError("--forces trains energies and forces; use --target energy (the default for MD data)")
    nnmodel.label_of(data, target)  # a clear error for an unknown target
    if split is None:
        split = make_split(data, n_train, n_valid, seed)
    split.setdefault("protocol", "split given by the caller")
    ref = nnmodel.atom_reference(data, target, config.max_z)
    stats = nnmodel.fit_stats(data, split["train"], target, ref, use_forces, config.readout)
    example = data.molecules(split["train"][:2])
    params = nnmodel.init_params(kind, config, jax.random.PRNGKey(train_cfg.seed), example, stats)
    if use_forces and train_cfg.force_weight == 0:
        train_cfg = dataclasses.replace(train_cfg, force_weight=1.0, energy_weight=0.01)
    prov = {"dataset_md5": data.md5, "dataset_name": data.meta.get("name"), "protocol": split["protocol"],
            "test_idx": np.asarray(split["test"]), "target": target,
            "elements": sorted(int(z) for z in np.unique(data.Z[np.asarray(split["train"])]) if z > 0)}
    return loop.train(kind, config, nnmodel.make_energy(kind, config), params, data, split, train_cfg, run_dir,
                      target=target, resume=resume, n_devices=n_devices, provenance=prov, progress=progress)


def load_network(path):
    """(kind, config, energy, params, header) of a network model file or run directory."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    kind, params, header = load_model(path)
    if kind not in nnmodel.NETWORKS:
        raise JaxqcError(f"{path}: a {kind} model, not a network")
    config = nnmodel.config_from_dict(kind, header["config"]["model"])
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return kind, config, nnmodel.make_energy(kind, config), params, header


def network_predictor(energy, forces: bool, batch_size: int = 64):
    """predict(params, data, idx) -> (E [n], F [n, A, 3] or None), batched in fixed atom-count buckets;
    one jitted function for every call, so a later call on the same bucket shapes does not compile."""
    from ..data.molecules import bucket_of
    from ..potential import energy_and_forces_fn

    fn = jax.jit(energy_and_forces_fn(energy) if forces else energy)

    def predict(params, data: Dataset, idx):
        idx = np.asarray(idx)
        buckets = atom_buckets(data.n_atoms[idx])
        which = bucket_of(data.n_atoms[idx], buckets)
        E = np.zeros(len(idx))
        F = np.zeros((len(idx), data.max_atoms, 3)) if forces else None
        for b, size in enumerate(buckets):
            rows = np.flatnonzero(which == b)
            for s in range(0, len(rows), batch_size):
                r = rows[s:s + batch_size]
                out = fn(params, data.molecules(idx[r], n_atoms_pad=size, batch_pad=batch_size))
                E[r] = np.asarray(out[0] if forces else out)[: len(r)]
                if forces:
                    a = min(size, data.max_atoms)
                    F[r, :a] = np.asarray(out[1])[: len(r), :a]
        return E, F

    return predict


def predict_network(energy, params, data: Dataset, idx, forces: bool, batch_size: int = 64):
    """(E [n], F [n, A, 3] or None) for the molecules idx (one call of network_predictor)."""
    return network_predictor(energy, forces, batch_size)(params, data, idx)
