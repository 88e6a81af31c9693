"""Networks as jaxqc potentials: statistics from the training data, and the network helpers that
experiments and tests call by name (delegating to the model registry, jaxqc.models, which owns the
families: jaxqc/models/network.py builds every network's energy and init).

params = {"net": flax parameters (trained), "stats": {"scale", "shift", "atom_ref"} (fixed, from the
training data)}. energy(params, molecules) -> [B] kcal/mol (or the target's unit) is a pure function;
forces are potential.forces_fn(energy). For a QM9 property the "energy" is the property's prediction.
"""
from __future__ import annotations

import numpy as np

from ..data.molecules import Dataset, Molecules
from ..errors import JaxqcError

INTENSIVE = ("HOMO", "LUMO", "gap", "mu", "alpha", "R2", "Cv", "A", "B", "C")  # mean readout (mu, alpha: as SchNet does not use dipole heads)


def _spec(kind: str):
    from ..models import get

    spec = get(kind)
    if spec.init is None:
        raise JaxqcError(f"{kind!r} is not a network; trainable networks: "
                         f"{', '.join(n for n in _names() if get(n).init is not None)}")
    return spec


def _names():
    from ..models import names

    return names()


def config_for(kind: str, **overrides):
    """The config of the registered network `kind` with `overrides`."""
    return _spec(kind).make_config(**overrides)


def make_energy(kind: str, config):
    """energy(params, molecules) -> [B]: the network's atom outputs, scaled, shifted, referenced, summed
    (or averaged for config.readout == 'mean')."""
    return _spec(kind).energy(config)


def init_params(kind: str, config, key, example: Molecules, stats: dict) -> dict:
    """Untrained params {"net", "stats"} of the registered network `kind` (one compilation)."""
    return _spec(kind).init(config, key, example, stats)


def label_of(data: Dataset, target: str) -> np.ndarray:
    """[M] the training label: E for 'energy', else the property `target`."""
    if target == "energy":
        if data.E is None:
            raise JaxqcError("the data set has no energies")
        return np.asarray(data.E, np.float64)
    if target not in data.props:
        raise JaxqcError(f"unknown target {target!r}; the data set has {', '.join(['energy', *data.props])}")
    return np.asarray(data.props[target], np.float64)


def fit_stats(data: Dataset, idx, target: str, atom_ref: np.ndarray, use_forces: bool, readout: str) -> dict:
    """Scale and shift of the per-atom outputs from the training molecules `idx`: per-atom mean and std of
    (label - sum of element references) for extensive targets (forces RMS as the scale when forces are
    trained), mean and std of the label for intensive ones."""
    y = label_of(data, target)[idx]
    n = data.n_atoms[idx].astype(np.float64)
    if readout == "mean":
        return {"scale": float(np.std(y)) or 1.0, "shift": float(np.mean(y)), "atom_ref": np.zeros_like(atom_ref)}
    per_atom = (y - atom_ref[data.Z[idx]].sum(-1)) / n
    scale = float(np.std(per_atom))
    if use_forces and data.F is not None:
        F = data.F[idx]
        mask = data.Z[idx] > 0
        scale = float(np.sqrt(np.mean(F[mask] ** 2)))
    return {"scale": scale or 1.0, "shift": float(np.mean(per_atom)), "atom_ref": np.asarray(atom_ref, np.float64)}


def atom_reference(data: Dataset, target: str, max_z: int) -> np.ndarray:
    """[max_z + 1] per-element reference: QM9's free-atom energies for U0/U/H/G, else zeros (MD data:
    the shift absorbs the mean). Elements above max_z (a model that embeds only the training molecules'
    elements, e.g. MACE without fluorine) are left out: the model cannot see them."""
    ref = np.zeros(max_z + 1)
    if target in ("U0", "U", "H", "G"):
        from ..elements import QM9_ATOM_REF_HA
        from ..units import HARTREE_KCAL_MOL
        for z, e in QM9_ATOM_REF_HA[target].items():
            if z <= max_z:
                ref[z] = e * HARTREE_KCAL_MOL
    return ref


