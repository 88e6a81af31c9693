"""Networks as jaxqc potentials: one registry, one energy function, statistics from the training data.

params = {"net": flax parameters (trained), "stats": {"scale", "shift", "atom_ref"} (fixed, from the
training data)}. energy(params, molecules) -> [B] kcal/mol (or the target's unit) is a pure function;
forces are potential.forces_fn(energy). For a QM9 property the "energy" is the property's prediction.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..data.molecules import Dataset, Molecules
from ..errors import JaxqcError
from . import NETWORK_KINDS
from .cormorant import Cormorant, CormorantConfig
from .dtnn import DTNN, DTNNConfig
from .layers import atomwise_mean, atomwise_sum
from .schnet import SchNet, SchNetConfig

NETWORKS = {"schnet": (SchNetConfig, SchNet), "dtnn": (DTNNConfig, DTNN), "cormorant": (CormorantConfig, Cormorant)}
assert tuple(NETWORKS) == NETWORK_KINDS
INTENSIVE = ("HOMO", "LUMO", "gap", "mu", "alpha", "R2", "Cv", "A", "B", "C")  # mean readout (mu, alpha: as SchNet does not use dipole heads)


def config_for(kind: str, **overrides):
    if kind not in NETWORKS:
        raise JaxqcError(f"unknown network {kind!r}; one of {', '.join(NETWORKS)}")
    return NETWORKS[kind][0](**overrides)


def config_from_dict(kind: str, d: dict):
    fields = {f.name for f in dataclasses.fields(NETWORKS[kind][0])}
    return NETWORKS[kind][0](**{k: v for k, v in d.items() if k in fields})


def describe(kind: str, config) -> str:
    """One line for logs and model info: 'schnet, 128 features, 6 interactions, cutoff 5 Å'."""
    sizes = {"cormorant": (("channels", "channels"), ("cg_levels", "CG levels"), ("l_max", "l_max"))}.get(
        kind, (("features", "features"), ("interactions", "interactions")))
    parts = [f"{getattr(config, name)} {label}" if label != "l_max" else f"l_max {config.l_max}" for name, label in sizes]
    cutoff = getattr(config, "cutoff_ang", None)
    parts.append("all pairs" if cutoff is None else f"cutoff {cutoff:g} Å")
    return ", ".join([kind, *parts])


def make_energy(kind: str, config):
    """energy(params, molecules) -> [B]: the network's atom outputs, scaled, shifted, referenced, summed
    (or averaged for config.readout == 'mean')."""
    net = NETWORKS[kind][1](config)

    def energy(params, molecules: Molecules):
        y = net.apply({"params": params["net"]}, molecules.Z, molecules.R, molecules.mask,
                      edges=molecules.edges)  # [B, A]; edges: used by config.pair_list == "edges"
        s = params["stats"]
        if config.readout == "mean":
            return atomwise_mean(y, molecules.mask, s["scale"], s["shift"])
        return atomwise_sum(y, molecules.mask, molecules.Z, s["scale"], s["shift"], s["atom_ref"])

    return energy


def init_params(kind: str, config, key, example: Molecules, stats: dict) -> dict:
    net = NETWORKS[kind][1](config)
    # one compilation, not one per op; the parameters do not depend on example.edges (same with or without)
    variables = jax.jit(net.init)(key, example.Z, example.R, example.mask, edges=example.edges)
    return {"net": variables["params"], "stats": {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}}


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
    the shift absorbs the mean)."""
    ref = np.zeros(max_z + 1)
    if target in ("U0", "U", "H", "G"):
        from ..elements import QM9_ATOM_REF_HA
        from ..units import HARTREE_KCAL_MOL
        for z, e in QM9_ATOM_REF_HA[target].items():
            ref[z] = e * HARTREE_KCAL_MOL
    return ref


