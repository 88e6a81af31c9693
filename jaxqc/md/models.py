"""Load any saved jaxqc force field as `energy(params, molecules)`, for the CLI (md, evaluate), the ASE
calculator and the experiments: through the model registry (jaxqc.models), so every registered family
whose fitted model is a potential energy surface runs here, with no family named in this file.

Models of one molecule in a fixed atom order (spec.atom_order, e.g. sGDML) check the order of a start
geometry; the others check that its elements are ones the model embeds and was trained on. Property
models (KRR, networks trained on a QM9 property) are refused with a clear error.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from ..elements import SYMBOLS
from ..errors import DataError, ElementError, JaxqcError
from ..models.predict import cast_params  # noqa: F401  (re-exported: md.run, the calculator, notebooks)


def model_kind(path) -> str:
    """The kind recorded in a model file or a run directory's model.npz ('sgdml', 'schnet', 'krr', ...)."""
    from ..models.saved import model_file
    from ..potential import load_model

    return load_model(model_file(path))[0]


def formula(Z) -> str:
    """'C2H6O'-style element counts of atomic numbers Z (0 = padding ignored), in order of first appearance."""
    Z = [int(z) for z in np.asarray(Z).ravel() if z > 0]
    counts = {z: Z.count(z) for z in dict.fromkeys(Z)}
    return "".join(f"{SYMBOLS[z]}{n if n > 1 else ''}" for z, n in counts.items())


def force_fields() -> list[str]:
    """Names of the registered families whose models can be potential energy surfaces."""
    from .. import models

    return [n for n in models.names() if "forces" in models.get(n).outputs]


def load_potential(path):
    """(energy, params, info) of a saved force field.

    energy(params, molecules) -> [batch] kcal/mol; params a pytree of arrays (numpy; cast with
    `cast_params`); info a dict: kind, path, z (the model's atomic numbers in order for models of one
    molecule, else None), elements (sorted atomic numbers the model may see, or None when the file does
    not record them), max_z, description, provenance, float64 (the family evaluates in float64).
    """
    from .. import models

    path = Path(path)
    if not path.exists():
        raise JaxqcError(f"{path}: no such model file or run directory")
    model = models.load(path)
    if not model.is_force_field:
        if model.target != "energy":
            what = f"a {model.kind} model of the property {model.target!r}, not a potential energy"
        elif "forces" in model.spec.outputs:
            what = f"a {model.kind} model whose energy output was not fitted to energies or forces"
        else:
            what = f"a {model.kind.upper()} property model (no energy surface, no forces)"
        raise JaxqcError(f"{path}: {what}: molecular dynamics needs a force field trained on energies (and "
                         f"forces): one of {', '.join(force_fields())}")
    params = jax.tree_util.tree_map(np.asarray, model.prepared_params())
    z = model.spec.atom_order(model.config, model.params)
    elements = sorted(set(int(a) for a in z)) if z is not None else training_elements(model.provenance)
    max_z = int(getattr(model.config, "max_z", 0) or (max(elements) if elements else 118))
    info = {"z": z, "elements": None if elements is None else sorted(int(e) for e in elements), "max_z": max_z,
            "description": model.describe() if z is None else f"{model.describe()}, {formula(z)}",
            "provenance": model.provenance, "kind": model.kind, "path": str(path), "float64": model.spec.float64,
            "R_ref": model.spec.reference_geometry(model.config, model.params)}
    return model.energy_fn, params, info


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
