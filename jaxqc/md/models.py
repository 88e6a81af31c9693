"""Load any saved jaxqc force field as `energy(params, molecules)`: the one place that maps a model file
(or a network run directory) to its energy function, for the CLI (md, evaluate), the ASE calculator and
the experiments.

Force fields: gdml / sgdml model files (one molecule, fixed atom order) and schnet / dtnn networks trained
on energies (any molecule made of the elements they were trained on). KRR models and networks trained on
a QM9 property predict properties, not a potential energy surface, and are refused with a clear error.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..elements import SYMBOLS
from ..errors import DataError, ElementError, JaxqcError
from ..nn import NETWORK_KINDS

FORCE_FIELDS = ("gdml", "sgdml", *NETWORK_KINDS)
SINGLE_CHUNK = 16_384  # gdml/sgdml centres evaluated in one step of the prediction scan


def model_kind(path) -> str:
    """The kind recorded in a model file or a run directory's model.npz ('sgdml', 'schnet', 'krr', ...)."""
    from ..potential import load_model

    path = Path(path)
    if path.is_dir():
        path = path / "model.npz"
    return load_model(path)[0]


def formula(Z) -> str:
    """'C2H6O'-style element counts of atomic numbers Z (0 = padding ignored), in order of first appearance."""
    Z = [int(z) for z in np.asarray(Z).ravel() if z > 0]
    counts = {z: Z.count(z) for z in dict.fromkeys(Z)}
    return "".join(f"{SYMBOLS[z]}{n if n > 1 else ''}" for z, n in counts.items())


def load_potential(path):
    """(energy, params, info) of a saved force field.

    energy(params, molecules) -> [batch] kcal/mol; params a pytree of arrays (numpy; cast with
    `cast_params`); info a dict: kind, path, z (gdml/sgdml: the model's atomic numbers in order, else
    None), elements (sorted atomic numbers the model may see, or None when the file does not record them),
    max_z, description, provenance.
    """
    path = Path(path)
    if not path.exists():
        raise JaxqcError(f"{path}: no such model file or run directory")
    kind = model_kind(path)
    if kind in ("gdml", "sgdml"):
        from ..kernels import gdml

        model = gdml.load_gdml(path)
        z = np.asarray(model["z"], np.int32)
        info = {"z": z, "elements": sorted(set(z.tolist())), "max_z": int(z.max()),
                "description": f"{kind} {formula(z)}, {len(model['R_train'])} training frames, "
                               f"{len(model['perms'])} permutation(s), sigma {model['sigma']:g}",
                "provenance": model["provenance"]}
        # one molecule at a time: all centres in one chunk (2.5-4x faster per MD step than 1024-centre chunks)
        config = dataclasses.replace(model["config"], centre_chunk=max(model["config"].centre_chunk, SINGLE_CHUNK))
        energy, params = gdml.energy, gdml.model_params({**model, "config": config})
    elif kind in NETWORK_KINDS:
        from ..nn import model as nnmodel
        from ..train.run import load_network

        kind, config, energy, params, header = load_network(path)
        target = header["config"].get("target", "energy")
        if target != "energy":
            raise JaxqcError(f"{path}: a {kind} model of the property {target!r}, not a potential energy: "
                             f"molecular dynamics needs a force field trained on energies (and forces)")
        elements = training_elements(header["provenance"])
        params = jax.tree_util.tree_map(np.asarray, params)
        info = {"z": None, "elements": None if elements is None else sorted(int(e) for e in elements),
                "max_z": int(config.max_z),
                "description": nnmodel.describe(kind, config),
                "provenance": header["provenance"]}
    elif kind == "krr":
        raise JaxqcError(f"{path}: a KRR property model (no energy surface, no forces); molecular dynamics "
                         f"needs a force field: one of {', '.join(FORCE_FIELDS)}")
    else:
        raise JaxqcError(f"{path}: a {kind!r} model is not a force field jaxqc can run; expected one of "
                         f"{', '.join(FORCE_FIELDS)}")
    info.update(kind=kind, path=str(path))
    return energy, params, info


def training_elements(provenance: dict):
    """Sorted atomic numbers a network was trained on: recorded in the provenance ('elements'), or read
    from its training frames when the data set is a registered one with the recorded md5; else None."""
    if provenance.get("elements") is not None:
        return sorted(int(e) for e in provenance["elements"])
    from ..data import registry

    name, idx = provenance.get("dataset_name"), provenance.get("train_idx")
    if not name or idx is None or not registry.is_registered(str(name)):
        return None
    data = registry.load(str(name))
    if provenance.get("dataset_md5") not in (data.md5, data.meta.get("md5")):
        return None
    return sorted(int(z) for z in np.unique(data.Z[np.asarray(idx)]) if z > 0)


def cast_params(params, dtype):
    """params with every floating-point leaf as a jnp array of `dtype` (integer leaves unchanged)."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree_util.tree_map(cast, params)


def check_geometry(info: dict, Z, where: str = "start geometry") -> None:
    """One-line DataError unless the molecule Z [A] is one the model can evaluate: gdml/sgdml need the
    model's atoms in its order; networks need elements they embed (<= max_z) and, where the model file
    records them, were trained on."""
    Z = np.asarray(Z, np.int32).ravel()
    if info["z"] is not None:
        z = info["z"]
        if len(Z) != len(z):
            raise DataError(f"{where}: {len(Z)} atoms ({formula(Z)}); the {info['kind']} model is for {len(z)} "
                            f"atoms ({formula(z)})")
        if np.any(Z != z):
            k = int(np.argmax(Z != z))
            raise DataError(f"{where}: atom {k} is {SYMBOLS[Z[k]]}, the {info['kind']} model has {SYMBOLS[z[k]]} "
                            f"there (it needs {' '.join(SYMBOLS[a] for a in z)} in this order)")
        return
    bad = sorted(set(int(a) for a in Z if a > info["max_z"]))
    if bad:
        raise ElementError(f"{where}: element(s) {', '.join(SYMBOLS[a] for a in bad)} beyond the model's largest "
                           f"atomic number {info['max_z']}")
    if info["elements"] is not None:
        unknown = sorted(set(Z.tolist()) - set(info["elements"]))
        if unknown:
            raise ElementError(f"{where}: element(s) {', '.join(SYMBOLS[a] for a in unknown)} not in the "
                               f"model's training data (elements {' '.join(SYMBOLS[a] for a in info['elements'])})")
