"""Kohn-Sham Hamiltonian data made with PySCF: per frame the converged Kohn-Sham (Fock) matrix H, the overlap
S, the total energy and forces, the orbital energies and occupations, the AO dipole integrals and the dipole.

A Hamiltonian data set is an ordinary jaxqc Dataset (npz) whose props hold the matrices:
  H [M, n, n] Ha, S [M, n, n], mo_energy [M, n] Ha, mo_occ [M, n], ao_r [M, 3, n, n] bohr (origin 0),
  dipole [M, 3] Debye, scf_cycles [M], and H0 [M, n, n] Ha: the Kohn-Sham matrix of PySCF's 'minao' initial
  guess (a superposition of atomic densities, same functional, basis and grid): one Fock build, about 8% of
  the SCF's cost, the physical baseline a hybrid model can learn the rest from (schnorb's baseline="sad");
and whose meta records the basis, the AO shells per element in PySCF's AO order (jaxqc.orbitals.AOLayout),
the AO labels, the functional, the integration grid and the units. E (kcal/mol) and F (kcal/mol/Å) are the
usual labels, so every energy model trains on the same file.

Long runs keep what they did: every CHECKPOINT_EVERY frames the frames finished since the last save go to a
new shard OUT.partial/shard_*.npz (each frame is written once: the cost of checkpoints grows with the
frames, not with their square), and `--resume` continues from the shards; the final file is written
atomically. (An OUT.partial.npz of earlier versions is read too.)
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .. import units as U
from ..errors import DataError
from ..files import atomic_savez
from .molecules import Dataset

MATRIX_PROPS = ("H", "S", "mo_energy", "mo_occ", "ao_r", "dipole", "scf_cycles", "H0")
UNITS = {"H": "Ha", "H0": "Ha", "S": "", "mo_energy": "Ha", "mo_occ": "electrons", "ao_r": "bohr", "dipole": "Debye",
         "scf_cycles": ""}
CHECKPOINT_EVERY = 20
SYMMETRY_TOL = 1e-8          # |H - H^T| and |S - S^T| allowed in a file (Ha)


def _modules():
    from .generate import _pyscf
    return _pyscf()


def ao_shells(mol) -> dict:
    """{Z: [l of each shell, in AO order]} of a PySCF molecule (one entry per element; a contracted shell
    with several contractions counts once per contraction, PySCF's (contraction, m) AO order)."""
    from ..elements import atomic_number

    out = {}
    for i in range(mol.natm):
        z = atomic_number(mol.atom_pure_symbol(i))
        ls = [int(mol.bas_angular(b)) for b in mol.atom_shell_ids(i) for _ in range(mol.bas_nctr(b))]
        if z in out and out[z] != ls:
            raise DataError(f"element Z={z} has two different basis sets in one molecule")
        out[z] = ls
    return out


def label_frame(Z, R_ang, spec: str, grid_level: int | None = None, forces: bool = True, charge: int = 0) -> dict:
    """One geometry with PySCF at spec ('XC/BASIS'): H, S, E, F, orbitals, AO dipole integrals, dipole."""
    from .generate import HA_BOHR_KCAL_MOL_ANG, _pyscf_molecule, _pyscf_solver, parse_dft_spec

    mods = _modules()
    xc, basis = parse_dft_spec(spec)
    mol = _pyscf_molecule(mods[0], Z, R_ang, basis, charge, spec)
    mf = _pyscf_solver(mods, mol, xc, spec)
    if grid_level is not None and hasattr(mf, "grids"):
        mf.grids.level = int(grid_level)
    cycles = []
    mf.callback = lambda env: cycles.append(env.get("cycle"))
    e_ha = mf.kernel()
    if not mf.converged or not np.isfinite(e_ha):
        raise DataError(f"{spec}: SCF did not converge")
    dm = mf.make_rdm1()
    H, S = np.asarray(mf.get_fock(dm=dm)), np.asarray(mf.get_ovlp())
    H0 = np.asarray(mf.get_fock(dm=mf.get_init_guess(mol, "minao")))   # the guess's Kohn-Sham matrix
    mo_energy, _ = mf.eig(H, S)   # PySCF's orbital energies of the stored (final) Fock matrix
    out = {"E": e_ha * U.HARTREE_KCAL_MOL, "H": H, "H0": H0, "S": S, "mo_energy": np.asarray(mo_energy),
           "mo_occ": np.asarray(mf.mo_occ),
           "ao_r": np.asarray(mol.intor_symmetric("int1e_r", comp=3)),
           "dipole": np.asarray(mf.dip_moment(mol, dm, unit="Debye", verbose=0)),
           "scf_cycles": len(cycles), "shells": ao_shells(mol), "labels": mol.ao_labels(), "dm": dm}
    F = np.zeros_like(np.asarray(R_ang, np.float64))
    if forces:
        grad = mf.nuc_grad_method()
        if hasattr(grad, "grid_response"):
            grad.grid_response = True
        grad.verbose = 0
        F[np.asarray(Z) > 0] = -np.asarray(grad.kernel()) * HA_BOHR_KCAL_MOL_ANG
    out["F"] = F
    return out


def _worker(task):
    k, Z, R, spec, grid_level, forces, charge = task
    try:
        from pyscf import lib
        lib.num_threads(1)
        t = time.process_time()
        res = label_frame(Z, R, spec, grid_level, forces, charge)
        res.pop("dm")
        res["cpu_s"] = time.process_time() - t
        return k, res, None
    except DataError as err:
        return k, None, str(err)


def _partial_path(out) -> Path:
    """OUT.partial: the folder of shards of finished frames."""
    out = Path(out)
    return out.with_name(out.name + ".partial")


def _legacy_partial_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.npz")


def _save_partial(folder: Path, done: dict, saved: set) -> None:
    """Write the frames of `done` not in `saved` as one new shard (atomic), and add them to `saved`."""
    ks = sorted(set(done) - saved)
    if not ks:
        return
    arrays = {"frames": np.asarray(ks)}
    for key in ("E", "F", *MATRIX_PROPS, "cpu_s"):
        arrays[key] = np.stack([np.asarray(done[k][key]) for k in ks])
    arrays["shells"] = np.array(repr(done[ks[0]]["shells"]))
    arrays["labels"] = np.array("\n".join(done[ks[0]]["labels"]))
    folder.mkdir(parents=True, exist_ok=True)
    atomic_savez(folder / f"shard_{len(saved):06d}_{len(ks):04d}.npz", **arrays)
    saved.update(ks)


def _read_shard(path: Path, done: dict) -> None:
    import ast

    try:
        with np.load(path, allow_pickle=False) as f:
            shells = ast.literal_eval(str(f["shells"]))
            labels = str(f["labels"]).split("\n")
            for i, k in enumerate(f["frames"]):
                done[int(k)] = {key: f[key][i] for key in ("E", "F", *MATRIX_PROPS, "cpu_s") if key in f}
                done[int(k)].update(shells=shells, labels=labels)
    except Exception as err:  # a corrupt shard: say so, keep it
        raise DataError(f"{path}: unreadable partial results ({type(err).__name__}: {err}); move it away to "
                        f"start over") from None


def _load_partial(out) -> dict:
    """{frame: results} from OUT.partial/ shards (and an earlier version's OUT.partial.npz)."""
    done: dict = {}
    legacy, folder = _legacy_partial_path(out), _partial_path(out)
    if legacy.exists():
        _read_shard(legacy, done)
    for shard in sorted(folder.glob("shard_*.npz")) if folder.is_dir() else ():
        _read_shard(shard, done)
    return done


def label_hamiltonian(data: Dataset, spec: str = "PBE/def2-SVP", grid_level: int | None = None,
                      forces: bool = True, jobs: int = 1, out=None, resume: bool = False,
                      progress: bool = False) -> Dataset:
    """A copy of `data` labelled with PySCF at `spec`: E, F and the Hamiltonian props (module docstring).

    jobs: worker processes (one thread each). out: the final file's path, whose OUT.partial/ keeps
    finished frames (resume=True continues from it)."""
    from .generate import _Progress, parse_dft_spec

    _modules()
    xc, basis = parse_dft_spec(spec)
    charge = int(data.meta.get("charge", 0))
    partial = _partial_path(out) if out is not None else None
    done = {}
    for earlier in (partial, _legacy_partial_path(out)) if out is not None else ():
        if earlier.exists() and not resume:
            raise DataError(f"{earlier} holds frames of an earlier run: pass --resume to continue it, or move it "
                            "away")
    if out is not None and resume:
        done = _load_partial(out)
    saved = set(done)
    todo = [k for k in range(len(data)) if k not in done]
    tasks = [(k, data.Z[k], data.R[k], spec, grid_level, forces, charge) for k in todo]
    report = _Progress(len(data), progress, what=f"{spec} Hamiltonian labels")
    t0 = time.perf_counter()

    def keep(k, res, err):
        if err is not None:
            if partial is not None and done:
                _save_partial(partial, done, saved)
            raise DataError(f"frame {k}: {err}" + (f" ({len(done)} finished frames kept in {partial})" if done and
                                                   partial else ""))
        done[k] = res
        if partial is not None and len(done) - len(saved) >= CHECKPOINT_EVERY:
            _save_partial(partial, done, saved)
        report(len(done))

    if jobs > 1 and len(tasks) > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(jobs) as pool:
            for k, res, err in pool.imap(_worker, tasks, chunksize=1):
                keep(k, res, err)
    else:
        for task in tasks:
            keep(*_worker(task))
    wall = time.perf_counter() - t0
    ks = sorted(done)
    first = done[ks[0]]
    props = {key: _stack_padded([np.asarray(done[k][key]) for k in ks]) for key in MATRIX_PROPS
             if all(key in done[k] for k in ks)}   # H0 only when every frame has it (shards of earlier versions)
    import pyscf

    meta = {**data.meta, "name": _name(data), "theory": f"{spec} (PySCF {pyscf.__version__}, "
            f"{'RHF' if xc.upper() == 'HF' else 'RKS'}, grid level {grid_level if grid_level is not None else 3})",
            "sampling_theory": data.meta.get("theory"), "relabel_engine": f"pyscf {pyscf.__version__}",
            "basis": basis, "xc": xc, "grid_level": grid_level if grid_level is not None else 3,
            "ao_shells": {str(z): ls for z, ls in first["shells"].items()}, "ao_labels": list(first["labels"]),
            "ao_order": "PySCF real spherical: per atom, per shell; p (x, y, z); d (xy, yz, z^2, xz, x^2-y^2)",
            "charge": charge, "forces_computed": bool(forces),
            "hamiltonian_units": {"H": "Ha", "H0": "Ha (Kohn-Sham matrix of the 'minao' guess)", "S": "1", "mo_energy": "Ha", "ao_r": "bohr (origin 0)",
                                  "dipole": "Debye"},
            "label_cpu_s_per_frame": float(np.mean([done[k]["cpu_s"] for k in ks])),
            "label_wall_s": round(wall, 1), "label_jobs": int(jobs)}
    out_data = Dataset(Z=data.Z.copy(), R=data.R.copy(), E=np.array([done[k]["E"] for k in ks]),
                       F=np.stack([done[k]["F"] for k in ks]) if forces else None, props=props,
                       units={**data.units, **UNITS}, meta=meta)
    return out_data.validate("Hamiltonian labels")


def _stack_padded(arrays: list) -> np.ndarray:
    """Stack per-molecule arrays, zero-padded to the largest (molecules of different AO counts)."""
    shape = tuple(max(a.shape[d] for a in arrays) for d in range(arrays[0].ndim))
    out = np.zeros((len(arrays),) + shape, arrays[0].dtype)
    for i, a in enumerate(arrays):
        out[(i,) + tuple(slice(0, n) for n in a.shape)] = a
    return out


def finish(partial_of) -> None:
    """Remove OUT.partial/ (and an earlier version's OUT.partial.npz) once OUT is written."""
    import shutil

    folder, legacy = _partial_path(partial_of), _legacy_partial_path(partial_of)
    if folder.is_dir():
        shutil.rmtree(folder)
    if legacy.exists():
        os.remove(legacy)


def _name(data: Dataset) -> str:
    name = str(data.meta.get("name", "molecule"))
    return (name[:-len("-xtb")] if name.endswith("-xtb") else name) + "-dft-hamiltonian"


# ---- checks of a Hamiltonian data set -------------------------------------------------------------
def check(data: Dataset, source: str = "", layout=None):
    """The AOLayout of a Hamiltonian data set, after checking it: H and S present with one AO count per
    molecule equal to the basis's, symmetric, S positive definite; `layout` (a model's): the same basis."""
    from ..orbitals import AOLayout

    src = source or str(data.meta.get("name", "data"))
    have = AOLayout.from_meta(data.meta, src)
    for key in ("H", "S"):
        if key not in data.props:
            raise DataError(f"{src}: no '{key}' matrices: not a Hamiltonian data set")
    H, S = data.props["H"], data.props["S"]
    if H.ndim != 3 or H.shape != S.shape or H.shape[1] != H.shape[2] or H.shape[0] != len(data):
        raise DataError(f"{src}: H {H.shape} and S {S.shape} must both be [molecules, n_ao, n_ao]")
    n_ao = max(have.n_ao(z) for z in data.Z)
    if H.shape[1] != n_ao:
        raise DataError(f"{src}: matrices of size {H.shape[1]} but the basis {have.basis} gives {n_ao} AOs")
    if "H0" in data.props and data.props["H0"].shape != H.shape:
        raise DataError(f"{src}: H0 {data.props['H0'].shape} must have H's shape {H.shape}")
    for key, M in (("H", H), ("S", S), *((("H0", data.props["H0"]),) if "H0" in data.props else ())):
        asym = float(np.max(np.abs(M - np.swapaxes(M, 1, 2))))
        if not np.isfinite(asym):
            raise DataError(f"{src}: non-finite entries in {key}")
        if asym > SYMMETRY_TOL * max(1.0, float(np.max(np.abs(M)))):
            raise DataError(f"{src}: {key} is not symmetric (max |{key} - {key}^T| = {asym:.2e})")
    lowest = np.linalg.eigvalsh(S).min(axis=1)
    bad = np.nonzero(lowest <= 1e-10)[0]
    if bad.size:
        raise DataError(f"{src}: S of molecule {int(bad[0])} is not positive definite (lowest eigenvalue "
                        f"{lowest[bad[0]]:.2e})")
    if layout is not None and (layout.basis.lower() != have.basis.lower() or layout.shells != have.shells):
        raise DataError(f"{src}: basis {have.basis} ({dict(have.shells)}) is not the model's basis "
                        f"{layout.basis} ({dict(layout.shells)})")
    return have
