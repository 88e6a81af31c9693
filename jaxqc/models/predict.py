"""One prediction path for every model: batched, bucketed, compiled once per bucket.

    predict = predictor(model.energy_fn, forces=True, float64=model.spec.float64)
    E, F = predict(model.params, data, idx)

Molecules are grouped into a few atom-count buckets (or one fixed width for models of a fixed atom
count, e.g. the sorted Coulomb matrix of KRR), padded to `batch_size`, and evaluated by one jitted
function: a later call with the same bucket shapes does not compile again (tested).
"""
from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from ..data.molecules import Dataset, atom_buckets, bucket_of, edge_options, with_edges
from ..errors import DataError
from ..potential import energy_and_forces_fn


def cast_params(params, dtype):
    """params with every floating-point leaf as a jnp array of `dtype` (integer leaves unchanged)."""
    def cast(a):
        a = jnp.asarray(a)
        return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree_util.tree_map(cast, params)


def precision(float64: bool):
    """A context that evaluates in float64 (without changing JAX's global setting), or nothing."""
    return jax.enable_x64(True) if float64 else contextlib.nullcontext()


def predictor(energy, forces: bool, batch_size: int = 64, float64: bool = False, n_atoms: int | None = None,
              n_buckets: int = 8, config=None):
    """predict(params, data, idx) -> (E [n] or [n, T], F [n, A, 3] or None).

    energy(params, molecules) -> [B] (or [B, T] for several targets); forces = -grad E (only for [B]).
    n_atoms: a fixed atom width for every batch (models whose input size is fixed), else atom-count
    buckets from the molecules predicted. Small calls use a batch of the next power of two, so one
    molecule is not padded to 64. config: a model config with pair_list == "edges" gets each batch's edge
    list within its cutoff (budgets from the molecules predicted: nothing can overflow)."""
    fn = jax.jit(energy_and_forces_fn(energy) if forces else energy)
    dtype = jnp.float64 if float64 else jnp.float32

    def predict(params, data: Dataset, idx=None):
        idx = np.arange(len(data)) if idx is None else np.asarray(idx)
        if len(idx) == 0:
            raise DataError("no molecules to predict")
        counts = data.n_atoms[idx]
        if n_atoms is not None:
            if counts.max() > n_atoms:
                raise DataError(f"a molecule with {int(counts.max())} atoms; this model takes at most {n_atoms}")
            buckets = (n_atoms,)
        else:
            buckets = atom_buckets(counts, n_buckets=n_buckets, multiple=1)
        which = bucket_of(counts, buckets)
        edges = edge_options(config, data, idx, buckets)  # {} unless the model runs on edge lists
        b_size = min(batch_size, 1 << max(0, len(idx) - 1).bit_length())
        E = None
        F = np.zeros((len(idx), data.max_atoms, 3)) if forces else None
        with precision(float64):
            p = cast_params(params, dtype)
            for b, size in enumerate(buckets):
                rows = np.flatnonzero(which == b)
                for s in range(0, len(rows), b_size):
                    r = rows[s:s + b_size]
                    mol = data.molecules(idx[r], n_atoms_pad=size, batch_pad=b_size, dtype=dtype)
                    if edges:
                        mol = with_edges(mol, edges["edge_cutoff_ang"], edges["budgets"][b])
                    out = fn(p, mol)
                    e = np.asarray(out[0] if forces else out, np.float64)[: len(r)]
                    if E is None:
                        E = np.zeros((len(idx),) + e.shape[1:])
                    E[r] = e
                    if forces:
                        a = min(size, data.max_atoms)
                        F[r, :a] = np.asarray(out[1], np.float64)[: len(r), :a]
        return E, F

    predict.jitted = fn  # for tests: fn._cache_size() counts the compiled shapes
    return predict
