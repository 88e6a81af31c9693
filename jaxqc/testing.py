"""Physics checks for any jaxqc `energy(params, molecules) -> [batch]` (kcal/mol): the tests a new model
must pass, shipped so that model authors run the same checks as jaxqc's own conformance test.

    from jaxqc import testing
    testing.assert_invariant(energy, params, molecules)         # rotation with inversion, translation, permutation
    testing.assert_forces_match_fd(energy, params, molecules)   # forces_fn(energy) == central differences
    testing.assert_conserves_energy(energy, params, Z, R)       # velocity-Verlet NVE keeps the total energy

`molecules` is a `Molecules` batch or a `Dataset` (only real molecules and atoms are used). Every check
evaluates in float64 inside `jax.enable_x64` (global JAX settings untouched), raises AssertionError with
what broke, where and by how much, and returns the numbers it measured.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from .data.molecules import Dataset, Molecules
from .models.predict import cast_params
from .potential import forces_fn

BATCH = 64  # geometries per energy call: every check of one model compiles one [BATCH, atoms] shape


# ---- batches and evaluation ---------------------------------------------------------------------
def _real(molecules) -> tuple[np.ndarray, np.ndarray]:
    """(Z [n, A] int32, R [n, A, 3] float64) of the real molecules of a Molecules batch or a Dataset."""
    if isinstance(molecules, Dataset):
        return np.asarray(molecules.Z, np.int32), np.asarray(molecules.R, np.float64)
    if not isinstance(molecules, Molecules):
        raise TypeError(f"expected a jaxqc Molecules batch or Dataset, got {type(molecules).__name__}")
    keep = np.asarray(molecules.mol_mask, bool)
    return np.asarray(molecules.Z, np.int32)[keep], np.asarray(molecules.R, np.float64)[keep]


def _batch(Z, R) -> Molecules:
    """A float64 Molecules batch of Z [n, A], R [n, A, 3] (call inside jax.enable_x64)."""
    Z = jnp.asarray(Z, jnp.int32)
    return Molecules(Z=Z, R=jnp.asarray(R, jnp.float64), mask=Z > 0, mol_mask=jnp.ones(Z.shape[0], bool))


def energies(energy, params, Z, R, batch_size: int = BATCH) -> np.ndarray:
    """[n] float64 energies of Z [n, A], R [n, A, 3], evaluated in float64 batches of `batch_size`
    (the last batch padded with copies of the first geometry, so each call has one shape)."""
    Z, R = np.asarray(Z, np.int32), np.asarray(R, np.float64)
    n = len(Z)
    if n == 0:
        raise ValueError("no molecules to evaluate")
    pad = -n % batch_size
    Z = np.concatenate([Z, np.repeat(Z[:1], pad, 0)])
    R = np.concatenate([R, np.repeat(R[:1], pad, 0)])
    fn = jax.jit(energy)  # compiled once per function and shape (jax caches by identity)
    out = []
    with jax.enable_x64(True):
        p = cast_params(params, jnp.float64)
        for s in range(0, len(Z), batch_size):
            out.append(np.asarray(fn(p, _batch(Z[s:s + batch_size], R[s:s + batch_size])), np.float64))
    E = np.concatenate(out)[:n]
    if E.ndim != 1:
        raise AssertionError(f"energy(params, molecules) must return [batch], got shape {E.shape[1:]} per molecule")
    return E


# ---- symmetry -------------------------------------------------------------------------------------
def improper_rotation(rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal 3x3 matrix with determinant -1 (a rotation combined with the inversion)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) < 0 else -q


def element_permutation(rng: np.random.Generator, Z) -> np.ndarray:
    """[A] a random permutation of the real atoms of Z [A] among atoms of the same element (padding fixed)."""
    Z = np.asarray(Z)
    perm = np.arange(len(Z))
    for z in np.unique(Z[Z > 0]):
        idx = np.flatnonzero(Z == z)
        perm[idx] = rng.permutation(idx)
    return perm


def _group_permutation(rng, group) -> np.ndarray:
    """A random element of a permutation group [P, A], other than the identity when there is one."""
    group = np.asarray(group)
    others = [p for p in group if not np.array_equal(p, np.arange(group.shape[1]))]
    return others[rng.integers(len(others))] if others else np.arange(group.shape[1])


def _transform(Z, R, rng, permutations, rotate: bool, translate: bool, permute: bool):
    """One molecule Z [A], R [A, 3] moved by a random improper rotation / translation / permutation."""
    real = Z > 0
    R = R.copy()
    if rotate:
        R[real] = R[real] @ improper_rotation(rng).T
    if translate:
        R[real] = R[real] + 5.0 * rng.normal(size=3)
    if permute and permutations is not None:
        if isinstance(permutations, str):
            if permutations != "elements":
                raise ValueError(f"permutations: 'elements', an int array [P, A] or None, not {permutations!r}")
            perm = element_permutation(rng, Z)
        else:  # the group acts on the first P atoms (the molecule); padding stays
            p = _group_permutation(rng, permutations)
            perm = np.concatenate([p, np.arange(len(p), len(Z))])
        if not np.array_equal(Z[perm], Z):
            raise ValueError("a permutation that changes the elements of the atoms")
        Z, R = Z[perm], R[perm]
    return Z, R


def assert_invariant(energy, params, molecules, *, rtol: float = 1e-8, atol: float = 1e-6, seed: int = 0,
                     permutations="elements") -> dict:
    """Energies equal (|dE| <= atol + rtol |E|, kcal/mol) after a random rotation with inversion
    (an improper orthogonal matrix), a translation, a permutation of like atoms, and all three at once.

    permutations: "elements" (any permutation of same-element atoms: models of any atom order);
    an int array [P, A] (a model of fixed atom order: one of its own symmetry group, e.g. sGDML's);
    None (no permutation). Each transformation is checked separately, so the message names the one broken.
    Returns {transformation: largest |dE|}."""
    Z, R = _real(molecules)
    rng = np.random.default_rng(seed)
    cases = {"rotation with inversion": (True, False, False), "translation": (False, True, False)}
    if permutations is not None:
        cases["permutation of like atoms"] = (False, False, True)
    cases["all at once"] = (True, True, True)
    Zs, Rs = [Z], [R]
    for rotate, translate, permute in cases.values():
        moved = [_transform(Z[k], R[k], rng, permutations, rotate, translate, permute) for k in range(len(Z))]
        Zs.append(np.stack([m[0] for m in moved]))
        Rs.append(np.stack([m[1] for m in moved]))
    E = energies(energy, params, np.concatenate(Zs), np.concatenate(Rs)).reshape(len(Zs), len(Z))
    worst = {}
    for c, name in enumerate(cases, start=1):
        dE = np.abs(E[c] - E[0])
        worst[name] = float(dE.max())
        bad = dE > atol + rtol * np.abs(E[0])
        if not np.all(np.isfinite(E[c])) or bad.any():
            k = int(np.argmax(np.where(np.isfinite(dE), dE, np.inf)))
            raise AssertionError(
                f"energy not invariant under {name}: molecule {k}: {E[0, k]:.12g} -> {E[c, k]:.12g} kcal/mol "
                f"(|dE| {dE[k]:.3g} > atol {atol:g} + rtol {rtol:g} |E|; {int(bad.sum())}/{len(Z)} molecules)")
    return worst


# ---- forces ---------------------------------------------------------------------------------------
def fd_forces(energy, params, Z, R, eps: float = 1e-4) -> np.ndarray:
    """[n, A, 3] kcal/mol/Å: -(E(R + eps e) - E(R - eps e)) / (2 eps) for every real atom and component,
    in float64 (padding atoms get 0)."""
    Z, R = np.asarray(Z, np.int32), np.asarray(R, np.float64)
    n, A = Z.shape
    rows = [(k, a, c) for k in range(n) for a in range(A) if Z[k, a] > 0 for c in range(3)]
    Rd = np.repeat(R[[k for k, _, _ in rows]][:, None], 2, 1)  # [rows, 2, A, 3]: +eps, -eps
    for r, (_, a, c) in enumerate(rows):
        Rd[r, 0, a, c] += eps
        Rd[r, 1, a, c] -= eps
    Zd = np.repeat(Z[[k for k, _, _ in rows]], 2, 0)
    E = energies(energy, params, Zd, Rd.reshape(-1, A, 3)).reshape(-1, 2)
    F = np.zeros((n, A, 3))
    for r, (k, a, c) in enumerate(rows):
        F[k, a, c] = -(E[r, 0] - E[r, 1]) / (2 * eps)
    return F


def assert_forces_match_fd(energy, params, molecules, *, eps: float = 1e-4, rtol: float = 1e-4, atol: float = 1e-4,
                           forces=None) -> float:
    """Forces (default `potential.forces_fn(energy)`, the one force path of jaxqc; or a given
    forces(params, molecules) -> [B, A, 3]) equal central finite differences of the energy in float64:
    |F - F_fd| <= atol + rtol |F_fd| (kcal/mol/Å) for every real atom and component.
    eps (Å) trades truncation error (eps²) against round-off (1e-16 |E| / eps). Returns the largest error."""
    Z, R = _real(molecules)
    F_fd = fd_forces(energy, params, Z, R, eps)
    fn = jax.jit(forces if forces is not None else _forces_of(energy))
    with jax.enable_x64(True):
        F = np.asarray(fn(cast_params(params, jnp.float64), _batch(Z, R)), np.float64)
    if F.shape != F_fd.shape:
        raise AssertionError(f"forces have shape {F.shape}, expected {F_fd.shape} ([batch, atoms, 3])")
    real = (Z > 0)[..., None]
    err = np.where(real, np.abs(F - F_fd), 0.0)
    bad = err > atol + rtol * np.abs(F_fd)
    if not np.all(np.isfinite(F[np.broadcast_to(real, F.shape)])) or bad.any():
        k, a, c = np.unravel_index(int(np.argmax(np.where(np.isfinite(err), err, np.inf))), err.shape)
        raise AssertionError(
            f"forces do not match central differences of the energy (eps {eps:g} Å): molecule {k}, atom {a} "
            f"(Z={Z[k, a]}), component {'xyz'[c]}: F {F[k, a, c]:.8g} vs -dE/dR {F_fd[k, a, c]:.8g} kcal/mol/Å "
            f"(|error| {err[k, a, c]:.3g} > atol {atol:g} + rtol {rtol:g} |F|; {int(bad.sum())} components)")
    return float(err.max())


@functools.lru_cache(maxsize=16)
def _forces_of(energy):
    """forces_fn(energy), one per energy function: jax.jit caches compilations by function identity, so
    repeated checks of one model compile once."""
    return forces_fn(energy)


# ---- dynamics -------------------------------------------------------------------------------------
def assert_conserves_energy(energy, params, Z, R, *, steps: int = 200, dt_fs: float = 0.5,
                            temperature_k: float = 300.0, tol: float = 0.05, seed: int = 0) -> dict:
    """A velocity-Verlet NVE run (jaxqc.md.run_md, float64) of the molecule Z [A], R [A, 3] Å from
    Maxwell–Boltzmann velocities keeps its total energy: max_t |E_tot(t) - E_tot(0)| <= tol * <E_kin>.

    The error is relative to the mean kinetic energy, not to E_tot (which holds an arbitrary constant):
    tol 0.05 allows 5 % of the thermal energy, far above velocity Verlet's O(dt²) error at a stable time
    step and far below what an unstable step or a non-conservative force gives. A run that produced
    non-finite positions fails. Returns the error, the drift (kcal/mol/ps) and the mean kinetic energy."""
    from .md.run import MDConfig, drift_and_fluctuation, run_md

    Z = np.asarray(Z, np.int32)
    real = Z > 0
    if temperature_k <= 0:
        raise ValueError("temperature_k must be positive: the error is relative to the kinetic energy")
    # the sanity guards off: this checks conservation (an untrained, nearly flat model lets atoms fly apart)
    cfg = MDConfig(steps=steps, dt_fs=dt_fs, temperature_k=temperature_k, ensemble="nve", seed=seed,
                   write_every=1, float64=True, max_temperature_k=None, max_drift_kcal_mol_atom=None,
                   bond_range_ang=None)
    with jax.debug_nans(False):  # a run that blows up is a failed check, not a FloatingPointError
        result = run_md(energy, params, Z[real], np.asarray(R, np.float64)[real], cfg)
    where = f"{steps} NVE steps of {dt_fs:g} fs at {temperature_k:g} K"
    if result.stopped is not None:
        raise AssertionError(f"energy not conserved: {where}: {result.stopped}")
    E_tot, E_kin = result.log["total_kcal_mol"], result.log["kinetic_kcal_mol"]
    kin = float(np.mean(E_kin))
    err = float(np.max(np.abs(E_tot - E_tot[0])))
    stats = drift_and_fluctuation(result.log, int(real.sum()), temperature_k)
    out = {"max_error_kcal_mol": err, "relative_error": err / kin, "mean_kinetic_kcal_mol": kin,
           "drift_kcal_mol_ps": stats.get("drift_kcal_mol_ps")}
    if not np.isfinite(err) or err > tol * kin:
        raise AssertionError(
            f"energy not conserved: {where}: max |E_tot - E_tot(0)| = {err:.4g} kcal/mol = {err / kin:.3g} of the "
            f"mean kinetic energy {kin:.4g} kcal/mol (tol {tol:g}); drift {out['drift_kcal_mol_ps']:.4g} kcal/mol/ps")
    return out
