"""The one interface every jaxqc model satisfies, and model files with provenance.

A model provides `energy(params, molecules) -> [batch]` in kcal/mol, a pure function of a padded
`Molecules` batch. Forces come from one helper, `forces_fn`, as -dE/dR: there is no second code path,
so every force field conserves energy and can be differentiated through.

A saved model is one npz file: parameters as arrays (`param/<path>`), plus a JSON header with the model
kind, its config, units, the dataset md5, split indices and the jaxqc version. Writes are atomic; a
corrupt or foreign file gives a clear error.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from . import __version__
from .errors import FormatError, JaxqcError

FORMAT = "jaxqc-model-v1"


def forces_fn(energy: Callable) -> Callable:
    """forces(params, molecules) = -dE/dR [batch, atoms, 3] in kcal/mol/Å, from energy [batch]."""

    def forces(params, molecules):
        def total_energy(R):
            e = energy(params, molecules.replace(R=R))
            return jnp.sum(jnp.where(molecules.mol_mask, e, 0.0))

        F = -jax.grad(total_energy)(molecules.R)
        return jnp.where(molecules.mask[..., None], F, 0.0)

    return forces


def energy_and_forces_fn(energy: Callable) -> Callable:
    """(E [batch], F [batch, atoms, 3]) in one pass: value_and_grad of the summed energy."""

    def energy_and_forces(params, molecules):
        def total_energy(R):
            e = energy(params, molecules.replace(R=R))
            return jnp.sum(jnp.where(molecules.mol_mask, e, 0.0)), e

        (_, e), g = jax.value_and_grad(total_energy, has_aux=True)(molecules.R)
        return e, jnp.where(molecules.mask[..., None], -g, 0.0)

    return energy_and_forces


# ---- model files --------------------------------------------------------------------------------
def _flatten(tree, prefix="") -> dict:
    out = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if "/" in str(k):
                raise ValueError(f"parameter name {k!r} may not contain '/'")
            out.update(_flatten(v, f"{prefix}{k}/"))
    else:
        out[prefix[:-1]] = np.asarray(tree)
    return out


def _unflatten(flat: dict) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save_model(path, kind: str, params: dict, config: dict, provenance: dict, units: dict) -> None:
    """Write a model file atomically. `params` is a nested dict of arrays; `config`, `provenance`
    (dataset md5, split indices as lists or arrays, ...) and `units` must be JSON-able (arrays in
    provenance are stored as arrays)."""
    from .data.io import atomic_savez

    arrays = {f"param/{k}": v for k, v in _flatten(params).items()}
    prov = {}
    for k, v in provenance.items():
        if isinstance(v, np.ndarray):
            arrays[f"prov/{k}"] = v
        else:
            prov[k] = v
    header = {"format": FORMAT, "kind": kind, "config": config, "provenance": prov, "units": units,
              "jaxqc_version": __version__}
    arrays["header"] = np.array(json.dumps(header))
    atomic_savez(path, **arrays)


def load_model(path) -> tuple[str, dict, dict]:
    """(kind, params, header) of a saved model; clear errors for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.exists():
        raise JaxqcError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "header" not in npz.files:
                raise FormatError(f"{path}: not a jaxqc model file (no header)")
            header = json.loads(str(npz["header"]))
            flat = {k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")}
            for k in npz.files:
                if k.startswith("prov/"):
                    header["provenance"][k[len("prov/"):]] = npz[k]
    except FormatError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        from .data.io import npz_problem

        raise FormatError(f"{path}: corrupt or truncated model file ({type(err).__name__}: {npz_problem(err)})") \
            from None
    if header.get("format") != FORMAT:
        raise FormatError(f"{path}: unsupported model format {header.get('format')!r}; expected {FORMAT}")
    return header["kind"], _unflatten(flat), header
