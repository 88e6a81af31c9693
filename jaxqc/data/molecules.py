"""Molecules (a padded device batch) and Dataset (a host-side collection with units and provenance).

A Dataset keeps every molecule padded to the data set's largest atom count (`Z == 0` marks padding).
Batches handed to jitted code are `Molecules` padded to one of a few fixed atom-count buckets and a
fixed batch size, so a jitted function compiles once per bucket and never again. With an edge cutoff,
a batch also carries its edge list (graph.EdgeList) padded to a per-bucket edge budget taken from the
data (`edge_budgets`): still one shape per bucket, and a molecule over the budget raises EdgeOverflow.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Iterator, Optional

import flax.struct
import jax.numpy as jnp
import numpy as np

from ..elements import MAX_Z, SYMBOLS
from ..errors import DataError, ElementError
from .graph import EdgeList, edge_list, molecule_edge_budget, pairs_within_cutoff

MIN_DISTANCE_ANG = 0.1  # two atoms closer than this are an error, not a molecule

# units of the per-atom / per-frame labels, fixed inside jaxqc
UNITS = {"R": "Å", "E": "kcal/mol", "F": "kcal/mol/Å"}


@flax.struct.dataclass
class Molecules:
    """A padded batch of molecules: a pytree that jitted functions take.

    Z    [batch, n_atoms] int32      atomic numbers, 0 for padding atoms
    R    [batch, n_atoms, 3]         positions in Å (padding atoms at the origin)
    mask [batch, n_atoms] bool       True for real atoms
    mol_mask [batch] bool            True for real molecules (False for batch padding)
    E    [batch] or None             energies in kcal/mol
    F    [batch, n_atoms, 3] or None forces in kcal/mol/Å
    props dict name -> [batch]       per-molecule properties (units in Dataset.units)
    edges EdgeList or None           edges within a cutoff, [batch, edge budget] (graph.EdgeList)
    """

    Z: jnp.ndarray
    R: jnp.ndarray
    mask: jnp.ndarray
    mol_mask: jnp.ndarray
    E: Optional[jnp.ndarray] = None
    F: Optional[jnp.ndarray] = None
    props: dict = flax.struct.field(default_factory=dict)
    edges: Optional[EdgeList] = None

    @property
    def n_atoms(self):
        return self.mask.sum(-1)


@dataclasses.dataclass
class Dataset:
    """Host-side molecules with labels, units and provenance.

    Z [M, A] int, R [M, A, 3] Å (float64), optional E [M] kcal/mol, F [M, A, 3] kcal/mol/Å,
    props {name: [M]} with units[name]; meta holds name, theory, source, generator command, ...
    """

    Z: np.ndarray
    R: np.ndarray
    E: Optional[np.ndarray] = None
    F: Optional[np.ndarray] = None
    props: dict = dataclasses.field(default_factory=dict)
    units: dict = dataclasses.field(default_factory=dict)
    meta: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.Z = np.asarray(self.Z).astype(np.int32)
        self.R = np.asarray(self.R, dtype=np.float64)
        if self.E is not None:
            self.E = np.asarray(self.E, dtype=np.float64).reshape(-1)
        if self.F is not None:
            self.F = np.asarray(self.F, dtype=np.float64)
        self.props = {k: np.asarray(v) for k, v in self.props.items()}
        self.units = {**UNITS, **self.units}

    # ---- basic facts -------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.R.shape[0]

    @property
    def n_atoms(self) -> np.ndarray:
        """[M] number of real atoms per molecule."""
        return (self.Z > 0).sum(-1)

    @property
    def max_atoms(self) -> int:
        return self.Z.shape[1]

    @property
    def elements(self) -> list[str]:
        return [SYMBOLS[z] for z in np.unique(self.Z) if z > 0]

    @property
    def labels(self) -> list[str]:
        out = [k for k in ("E", "F") if getattr(self, k) is not None]
        return out + sorted(k for k in self.props if k != "index")

    @property
    def md5(self) -> str:
        """Content hash of the arrays (Z, R, E, F, props), independent of the file format."""
        h = hashlib.md5()
        for arr in (self.Z, self.R, self.E, self.F):
            if arr is not None:
                h.update(np.ascontiguousarray(arr).tobytes())
        for k in sorted(self.props):
            h.update(k.encode())
            h.update(np.ascontiguousarray(self.props[k]).tobytes())
        return h.hexdigest()

    def subset(self, idx) -> "Dataset":
        idx = np.asarray(idx)
        return Dataset(
            Z=self.Z[idx], R=self.R[idx],
            E=None if self.E is None else self.E[idx],
            F=None if self.F is None else self.F[idx],
            props={k: v[idx] for k, v in self.props.items()},
            units=dict(self.units),
            meta={**{k: v for k, v in self.meta.items() if k != "md5"},
                  "parent_md5": self.meta.get("md5") or self.md5},
        )

    def summary(self) -> dict:
        """Plain-JSON description: counts, elements, labels with units, theory, md5."""
        n = self.n_atoms
        return {
            "name": self.meta.get("name"),
            "source": self.meta.get("source"),
            "n_molecules": int(len(self)),
            "n_atoms": {"min": int(n.min()), "max": int(n.max())} if len(self) else None,
            "elements": self.elements,
            "labels": {k: self.units.get(k, "") for k in self.labels},
            "units": {k: self.units[k] for k in ["R", *self.labels] if k in self.units},
            "n_frames": int(len(self)) if len(self) and np.all(self.Z == self.Z[:1]) else None,
            "theory": self.meta.get("theory"),
            "md5": self.meta.get("md5") or self.md5,
            "statistics": self.statistics(),
            **{k: self.meta[k] for k in ("temperature_k", "dt_fs", "seed", "command", "engine", "protocol")
               if k in self.meta},
        }

    def statistics(self) -> dict:
        """Mean, std, min, max of the energies, and the RMS force component (kcal/mol, kcal/mol/Å)."""
        out = {}
        if self.E is not None and len(self):
            out["E"] = {"mean": float(self.E.mean()), "std": float(self.E.std()), "min": float(self.E.min()),
                        "max": float(self.E.max())}
        if self.F is not None and len(self):
            real = self.Z > 0
            out["F"] = {"rms": float(np.sqrt(np.mean(self.F[real] ** 2))), "max_abs": float(np.abs(self.F[real]).max())}
        return out

    def validate(self, source: str = "") -> "Dataset":
        validate_arrays(self.Z, self.R, self.E, self.F, source=source)
        return self

    # ---- device batches ----------------------------------------------------------------------
    def molecules(self, idx=None, n_atoms_pad: Optional[int] = None, batch_pad: Optional[int] = None,
                  dtype=jnp.float32) -> Molecules:
        """A padded `Molecules` batch of the molecules `idx` (all by default)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx)
        b = len(idx)
        b_pad = b if batch_pad is None else batch_pad
        a = int(self.n_atoms[idx].max()) if b else 1
        a_pad = a if n_atoms_pad is None else n_atoms_pad
        if b_pad < b or a_pad < a:
            raise DataError(f"padding ({b_pad} molecules x {a_pad} atoms) smaller than the batch ({b} x {a})")
        a_keep = min(a_pad, self.max_atoms)
        Z = np.zeros((b_pad, a_pad), np.int32)
        R = np.zeros((b_pad, a_pad, 3))
        Z[:b, :a_keep] = self.Z[idx, :a_keep]
        R[:b, :a_keep] = self.R[idx, :a_keep]
        mol_mask = np.arange(b_pad) < b
        E = F = None
        if self.E is not None:
            E = np.zeros(b_pad)
            E[:b] = self.E[idx]
        if self.F is not None:
            F = np.zeros((b_pad, a_pad, 3))
            F[:b, :a_keep] = self.F[idx, :a_keep]
        props = {}
        for k, v in self.props.items():
            p = np.zeros((b_pad,) + v.shape[1:], v.dtype)
            p[:b] = v[idx]
            props[k] = jnp.asarray(p, dtype if np.issubdtype(v.dtype, np.floating) else None)
        cast = lambda x: None if x is None else jnp.asarray(x, dtype)  # noqa: E731
        return Molecules(Z=jnp.asarray(Z), R=cast(R), mask=jnp.asarray(Z > 0), mol_mask=jnp.asarray(mol_mask),
                         E=cast(E), F=cast(F), props=props)


def validate_arrays(Z, R, E=None, F=None, source: str = "") -> None:
    """Check shapes, elements and geometry; raise DataError with `source` in the message."""
    pre = f"{source}: " if source else ""
    Z, R = np.asarray(Z), np.asarray(R)
    if Z.ndim != 2 or R.ndim != 3 or R.shape[-1] != 3:
        raise DataError(f"{pre}expected Z [molecules, atoms] and R [molecules, atoms, 3], got Z{Z.shape} R{R.shape}")
    if R.shape[:2] != Z.shape:
        raise DataError(f"{pre}shape mismatch: R{R.shape} does not match Z{Z.shape}")
    if E is not None and np.asarray(E).reshape(-1).shape[0] != R.shape[0]:
        raise DataError(f"{pre}shape mismatch: {np.asarray(E).size} energies for {R.shape[0]} geometries")
    if F is not None and np.asarray(F).shape != R.shape:
        raise DataError(f"{pre}shape mismatch: forces {np.asarray(F).shape} do not match positions {R.shape}")
    check_real_atoms(Z, pre)
    real = Z > 0
    if not np.all(np.isfinite(R[real])):
        m = int(np.argwhere(~np.isfinite(R) & real[..., None])[0, 0])
        raise DataError(f"{pre}non-finite (NaN/inf) coordinates in molecule {m}")
    for name, arr in (("energies", E), ("forces", F)):
        if arr is not None and not np.all(np.isfinite(np.asarray(arr)[real] if name == "forces" else arr)):
            raise DataError(f"{pre}non-finite (NaN/inf) {name}")
    m, i, j, d = closest_pair(Z, R)
    if d < MIN_DISTANCE_ANG:
        raise DataError(f"{pre}atoms {i} and {j} of molecule {m} are {d:.3g} Å apart "
                        f"(closer than {MIN_DISTANCE_ANG} Å: overlapping atoms or wrong length unit)")


def check_real_atoms(Z, pre: str = "") -> None:
    """DataError unless Z [molecules, atoms] is real elements (1..118) followed only by padding zeros, with at
    least one atom per molecule: a 0 before a real atom would silently drop that atom (0 marks padding)."""
    Z = np.asarray(Z)
    if Z.shape[0] == 0:
        raise DataError(f"{pre}no molecules (0 frames)")
    if Z.shape[1] == 0:
        raise DataError(f"{pre}molecules with no atoms (0 atoms per frame)")
    bad = np.argwhere((Z < 0) | (Z > MAX_Z))
    if len(bad):
        m, i = bad[0]
        raise ElementError(f"{pre}atom {i} of molecule {m} has unknown atomic number {int(Z[m, i])}; "
                           f"expected 1..{MAX_Z}")
    real = Z > 0
    empty = np.flatnonzero(~real.any(1))
    if len(empty):
        raise DataError(f"{pre}molecule {empty[0]} has no atoms (every atomic number is 0)")
    later_real = np.logical_or.accumulate(real[:, ::-1], axis=1)[:, ::-1]  # a real atom at or after (m, i)
    hole = np.argwhere(~real & later_real)
    if len(hole):
        m, i = hole[0]
        raise ElementError(f"{pre}atom {i} of molecule {m} has atomic number 0 (not an element; 0 marks padding "
                           f"after the last atom, so it would be dropped)")


DENSE_PAIRS = 1 << 20  # pair distances computed at once by closest_pair (~40 MB of temporaries)
DENSE_MAX_ATOMS = 64  # above this, one k-d tree per molecule is quicker than all pairs (A^2 vs A log A)


def closest_pair(Z, R):
    """(molecule, i, j, distance in Å) of the closest pair of real atoms over all molecules.

    Memory is O(atoms) per molecule, never O(molecules x atoms^2): small molecules in chunks of dense pair
    distances (at most DENSE_PAIRS at a time, quick for QM9's 130k), large ones by a k-d tree each."""
    Z, R = np.asarray(Z), np.asarray(R)
    best = (0, 0, 0, np.inf)
    if Z.ndim != 2 or Z.shape[1] < 2:
        return best
    a = Z.shape[1]
    if a <= DENSE_MAX_ATOMS:
        chunk = max(1, DENSE_PAIRS // (a * a))
        for s in range(0, len(R), chunk):
            m, i, j, d = _closest_dense(Z[s:s + chunk] > 0, R[s:s + chunk])
            if d < best[3]:
                best = (s + m, i, j, d)
        return best
    for m in range(len(R)):
        real = np.flatnonzero(Z[m] > 0)
        i, j, d = _closest_tree(R[m, real])
        if d < best[3]:
            best = (m, int(real[i]), int(real[j]), d)
    return best


def _closest_dense(real, R):
    """(molecule, i, j, distance) of the closest real pair in a chunk [c, A] / [c, A, 3], all pairs at once."""
    diff = R[:, :, None] - R[:, None]
    d2 = np.einsum("mijk,mijk->mij", diff, diff)
    del diff
    ok = real[:, :, None] & real[:, None, :]
    ok[:, np.arange(real.shape[1]), np.arange(real.shape[1])] = False
    d2[~ok] = np.inf
    k = int(np.argmin(d2))
    m, i, j = np.unravel_index(k, d2.shape)
    return int(m), int(i), int(j), float(np.sqrt(d2.flat[k]))


def _closest_tree(r):
    """(i, j, distance) of the closest pair of points r [n, 3], by a k-d tree: O(n) memory."""
    from scipy.spatial import cKDTree

    if len(r) < 2:
        return 0, 0, np.inf
    dist, nb = cKDTree(r).query(r, k=2)
    i = int(np.argmin(dist[:, 1]))
    j = int(nb[i, 1]) if nb[i, 1] != i else int(nb[i, 0])  # exact duplicates: either column may be self
    return i, j, float(dist[i, 1])


# ---- splits ----------------------------------------------------------------------------------
# The policy lives in splits.py (the one place that decides splits); `random_split` is its old name.
from .splits import seeded as random_split  # noqa: E402, F401


# ---- fixed padding buckets ---------------------------------------------------------------------
def atom_buckets(n_atoms, n_buckets: int = 3, multiple: int = 4) -> tuple:
    """A few atom-count bucket sizes covering `n_atoms`: quantiles rounded up to `multiple`."""
    n_atoms = np.asarray(n_atoms)
    qs = np.quantile(n_atoms, np.linspace(0, 1, n_buckets + 1)[1:], method="higher")
    sizes = sorted({int(-(-q // multiple) * multiple) for q in qs})
    return tuple(sizes)


def bucket_of(n_atoms, buckets) -> np.ndarray:
    """Index of the smallest bucket that holds each molecule."""
    b = np.searchsorted(np.asarray(buckets), np.asarray(n_atoms), side="left")
    if np.any(b >= len(buckets)):
        raise DataError(f"molecule with {int(np.max(n_atoms))} atoms does not fit the largest bucket {buckets[-1]}")
    return b


def with_edges(molecules: Molecules, cutoff_ang: Optional[float], budget: int) -> Molecules:
    """`molecules` with its edge list within cutoff_ang (None: every pair), `budget` edges per molecule
    (host-side numpy; raises graph.EdgeOverflow rather than dropping an edge)."""
    edges = edge_list(np.asarray(molecules.R), np.asarray(molecules.mask), cutoff_ang, budget)
    return molecules.replace(edges=edges)


def edge_counts(data: Dataset, idx, cutoff_ang: Optional[float], chunk: int = 4096) -> np.ndarray:
    """[len(idx)] directed edges within cutoff_ang of each molecule (float64 positions, as edge_list)."""
    idx = np.asarray(idx)
    out = np.zeros(len(idx), np.int64)
    for s in range(0, len(idx), chunk):
        sel = idx[s:s + chunk]
        out[s:s + chunk] = pairs_within_cutoff(data.R[sel], data.Z[sel] > 0, cutoff_ang).sum((1, 2))
    return out


def edge_budgets(data: Dataset, idx, buckets, cutoff_ang: Optional[float], multiple: int = 8) -> tuple:
    """Per-molecule edge budget of each atom-count bucket: the most edges any molecule of data[idx] in that
    bucket has, rounded up to `multiple` (at most A(A - 1)). Built from every molecule a run will batch
    (train + valid), so no batch of them can overflow; other data that does raises EdgeOverflow."""
    idx = np.asarray(idx)
    which = bucket_of(data.n_atoms[idx], buckets)
    counts = edge_counts(data, idx, cutoff_ang)
    return tuple(molecule_edge_budget(int(counts[which == b].max(initial=0)), a, multiple)
                 for b, a in enumerate(buckets))


def edge_options(model_config, data: Dataset, idx, buckets) -> dict:
    """Keyword arguments of `batches` for a network config: {} for dense pairs; for config.pair_list ==
    "edges", its cutoff and the edge budgets of `buckets` from data[idx] (every molecule that will be batched)."""
    if getattr(model_config, "pair_list", "dense") != "edges":
        return {}
    cutoff = model_config.cutoff_ang
    return {"edge_cutoff_ang": cutoff, "budgets": edge_budgets(data, idx, buckets, cutoff)}


def batches(data: Dataset, idx, batch_size: int, buckets=None, shuffle: bool = False, seed: int = 0,
            dtype=jnp.float32, edge_cutoff_ang: Optional[float] = None, budgets=None) -> Iterator[Molecules]:
    """Yield `Molecules` batches of exactly `batch_size` (last ones padded, mol_mask False) whose atom
    dimension is one of `buckets`; molecules are grouped by bucket so padding stays small. With
    `budgets` (one per bucket, from edge_budgets) every batch carries its edges within edge_cutoff_ang
    (None: all pairs), padded to its bucket's budget."""
    idx = np.asarray(idx)
    buckets = atom_buckets(data.n_atoms[idx]) if buckets is None else tuple(buckets)
    which = bucket_of(data.n_atoms[idx], buckets)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(idx)) if shuffle else np.arange(len(idx))
    chunks = []
    for b in range(len(buckets)):
        members = idx[order][which[order] == b]
        chunks += [(b, members[s:s + batch_size]) for s in range(0, len(members), batch_size)]
    if shuffle:
        chunks = [chunks[k] for k in rng.permutation(len(chunks))]
    if budgets is not None and len(budgets) != len(buckets):
        raise DataError(f"{len(budgets)} edge budgets for {len(buckets)} buckets")
    for b, members in chunks:
        mol = data.molecules(members, n_atoms_pad=buckets[b], batch_pad=batch_size, dtype=dtype)
        if budgets is not None:  # from the float64 host positions, as edge_budgets counted them
            R, real = _host_positions(data, members, buckets[b], batch_size)
            mol = mol.replace(edges=edge_list(R, real, edge_cutoff_ang, budgets[b]))
        yield mol


def _host_positions(data: Dataset, members, n_atoms_pad: int, batch_pad: int):
    """(R [batch_pad, n_atoms_pad, 3] float64 Å, mask) of data[members], zero-padded as Dataset.molecules."""
    a = min(n_atoms_pad, data.max_atoms)
    R = np.zeros((batch_pad, n_atoms_pad, 3))
    real = np.zeros((batch_pad, n_atoms_pad), bool)
    R[:len(members), :a] = data.R[members, :a]
    real[:len(members), :a] = data.Z[members, :a] > 0
    return R, real
