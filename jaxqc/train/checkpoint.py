"""Checkpoints of a training state: every leaf of a pytree as an npz array, plus a JSON header.

Restoring needs a template state of the same structure (built from the same config): leaves are put
back in order and their count, shapes and dtypes are checked, so a file from another configuration, or
a truncated one, is a clear error rather than a silent mismatch. Writes are atomic (io.atomic_savez).
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import jax
import numpy as np

from ..data.io import atomic_savez
from ..errors import FormatError, JaxqcError

FORMAT = "jaxqc-checkpoint-v1"


def save_checkpoint(path, state, meta: dict) -> None:
    leaves = jax.tree_util.tree_leaves(state)
    arrays = {f"leaf_{k:05d}": np.asarray(v) for k, v in enumerate(leaves)}
    arrays["header"] = np.array(json.dumps({"format": FORMAT, "n_leaves": len(leaves), **meta}))
    atomic_savez(path, **arrays)


def read_checkpoint_meta(path) -> dict:
    """The JSON header of a checkpoint alone (what a resume checks before building anything)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["header"]))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise FormatError(f"{path}: corrupt or truncated checkpoint ({type(err).__name__}: {err})") from None


def load_checkpoint(path, template):
    """(state, meta): the arrays of `path` in the structure of `template`."""
    path = Path(path)
    if not path.exists():
        raise JaxqcError(f"{path}: no such checkpoint")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["header"]))
            leaves = [npz[f"leaf_{k:05d}"] for k in range(meta["n_leaves"])]
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as err:
        raise FormatError(f"{path}: corrupt or truncated checkpoint ({type(err).__name__}: {err})") from None
    if meta.get("format") != FORMAT:
        raise FormatError(f"{path}: not a jaxqc checkpoint (format {meta.get('format')!r})")
    t_leaves, treedef = jax.tree_util.tree_flatten(template)
    if len(t_leaves) != len(leaves):
        raise FormatError(f"{path}: checkpoint has {len(leaves)} arrays, this configuration needs {len(t_leaves)}")
    for k, (a, b) in enumerate(zip(leaves, t_leaves)):
        if a.shape != np.shape(b):
            raise FormatError(f"{path}: array {k} has shape {a.shape}, this configuration needs {np.shape(b)}")
    restored = [np.asarray(a, dtype=np.asarray(b).dtype) for a, b in zip(leaves, t_leaves)]
    return jax.tree_util.tree_unflatten(treedef, restored), meta
