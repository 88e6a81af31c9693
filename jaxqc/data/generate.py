"""Generate labelled molecular-dynamics data sets: Langevin MD with GFN-xTB (tblite), optional DFT relabelling.

`generate_md_dataset` samples geometries of one molecule by Langevin dynamics (BAOAB splitting) on the
GFN2-xTB potential energy surface and labels every recorded frame with the xTB energy and forces.
`relabel_pyscf` recomputes the labels of an existing data set with PySCF DFT.

Units: tblite and PySCF work in bohr and Hartree; they are converted once, here, to jaxqc's Å, kcal/mol
and kcal/mol/Å. MD time is in fs, masses in amu, velocities in Å/fs.
"""
from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import numpy as np

from .. import __version__
from .. import units as U
from ..elements import atomic_number, masses_amu, symbol
from ..errors import DataError, JaxqcError
from .io import _check_exists, _check_xyz_text
from .molecules import MIN_DISTANCE_ANG, UNITS, Dataset, closest_pair

# tblite SCF accuracy (1.0 is tblite's default; smaller is tighter). Tight SCF makes the stored forces the
# negative gradient of the stored energies to ~1e-4 kcal/mol/Å, for ~15 % more time per step.
TBLITE_ACCURACY = 0.01
HA_BOHR_KCAL_MOL_ANG = U.HARTREE_KCAL_MOL / U.BOHR_ANG  # 1 Ha/bohr in kcal/mol/Å


# ---- start geometry ---------------------------------------------------------------------------
def read_xyz_geometry(path) -> tuple[np.ndarray, np.ndarray]:
    """(Z [n] int, R [n, 3] Å) of the first frame of a plain XYZ file.

    Malformed lines and unknown elements are reported as `file:line:` by io's XYZ checker; overlapping
    atoms (closer than MIN_DISTANCE_ANG) are reported with the lines of both atoms.
    """
    path = Path(path)
    _check_exists(path)
    _check_xyz_text(path)  # raises FormatError / DataError with file:line
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    first = next(k for k, line in enumerate(lines) if line.strip())  # the checker guarantees one exists
    n = int(lines[first].split()[0])
    if n < 1:
        raise DataError(f"{path}:{first + 1}: a start geometry needs at least one atom")
    atom_lines = lines[first + 2:first + 2 + n]
    Z = np.array([atomic_number(p.split()[0]) for p in atom_lines], np.int32)
    R = np.array([[float(v) for v in p.split()[1:4]] for p in atom_lines])
    if n > 1:
        _, i, j, d = closest_pair(Z[None], R[None])
        if d < MIN_DISTANCE_ANG:
            li, lj = first + 3 + i, first + 3 + j  # 1-based line numbers of the two atoms
            raise DataError(f"{path}:{lj}: atom {j} is {d:.3g} Å from atom {i} (line {li}); closer than "
                            f"{MIN_DISTANCE_ANG} Å: overlapping atoms or coordinates not in Å")
    return Z, R


# ---- Langevin dynamics (BAOAB) ------------------------------------------------------------------
class XtbPotential:
    """Energy (kcal/mol) and forces (kcal/mol/Å) of one molecule from tblite, reusing the wavefunction
    of the previous call as the SCF guess (consecutive MD steps differ little)."""

    def __init__(self, Z, R_ang, method: str = "GFN2-xTB", charge: int = 0,
                 accuracy: float = TBLITE_ACCURACY):
        interface = _tblite()
        self.method = method
        try:
            self.calc = interface.Calculator(method, np.asarray(Z), np.asarray(R_ang) / U.BOHR_ANG,
                                             charge=float(charge))
            self.calc.set("verbosity", 0)
            self.calc.set("accuracy", accuracy)
        except Exception as err:  # tblite raises its own error types (bad method, unsupported element)
            raise DataError(f"tblite could not set up {method} for this molecule: {err}") from None
        self.result = None

    def __call__(self, R_ang, step: int | None = None) -> tuple[float, np.ndarray]:
        where = f" at MD step {step}" if step is not None else ""
        try:
            self.calc.update(np.ascontiguousarray(R_ang / U.BOHR_ANG))
            self.result = self.calc.singlepoint(self.result)
            e_ha = float(self.result.get("energy"))
            g_ha_bohr = np.array(self.result.get("gradient"), dtype=np.float64)
        except Exception as err:
            raise DataError(f"{self.method} calculation failed{where} (SCF not converged or the molecule "
                            f"fell apart; try a smaller --dt-fs or a lower temperature): {err}") from None
        if not (np.isfinite(e_ha) and np.all(np.isfinite(g_ha_bohr))):
            raise DataError(f"{self.method} gave a non-finite energy or gradient{where}; "
                            f"try a smaller --dt-fs or a lower temperature")
        return e_ha * U.HARTREE_KCAL_MOL, -g_ha_bohr * HA_BOHR_KCAL_MOL_ANG


def _tblite():
    try:
        import tblite.interface
    except ImportError:
        raise JaxqcError("generating xTB data needs tblite: pip install 'jaxqc[xtb]'") from None
    return tblite.interface


def tblite_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("tblite")
    except PackageNotFoundError:
        return "unknown"


def maxwell_boltzmann_velocities(masses_amu_, temperature_k: float, rng) -> np.ndarray:
    """Velocities [n, 3] in Å/fs drawn at `temperature_k`, with the centre-of-mass velocity removed."""
    sigma = np.sqrt(U.KB_KCAL_MOL_K * temperature_k / (masses_amu_ * U.AMU_ANG2_FS2_KCAL_MOL))
    v = rng.standard_normal((len(masses_amu_), 3)) * sigma[:, None]
    return remove_com_velocity(v, masses_amu_)


def remove_com_velocity(v, masses_amu_) -> np.ndarray:
    """v minus the centre-of-mass velocity (Å/fs): keeps the molecule from drifting away."""
    return v - (masses_amu_[:, None] * v).sum(0) / masses_amu_.sum()


def kinetic_temperature_k(v, masses_amu_) -> float:
    """Instantaneous temperature (K) from velocities, with 3n - 3 degrees of freedom (no COM motion)."""
    ke_kcal_mol = 0.5 * U.AMU_ANG2_FS2_KCAL_MOL * float((masses_amu_[:, None] * v * v).sum())
    dof = max(3 * len(masses_amu_) - 3, 1)
    return 2.0 * ke_kcal_mol / (dof * U.KB_KCAL_MOL_K)


class BAOAB:
    """Langevin integrator, BAOAB splitting (Leimkuhler & Matthews 2013): half kick (B), half drift (A),
    exact Ornstein-Uhlenbeck velocity update (O), half drift, new forces, half kick.

    The O-step noise is projected onto zero total momentum, so the centre of mass stays at rest and the
    thermostat samples the 3n - 3 internal and rotational degrees of freedom exactly.
    """

    def __init__(self, potential, masses_amu_, dt_fs: float, temperature_k: float, friction_per_fs: float, rng):
        self.potential, self.m, self.dt_fs, self.rng = potential, np.asarray(masses_amu_), dt_fs, rng
        self.inv_m = 1.0 / (self.m[:, None] * U.AMU_ANG2_FS2_KCAL_MOL)  # (kcal/mol/Å) -> Å/fs^2
        self.c1 = np.exp(-friction_per_fs * dt_fs)
        self.c2 = np.sqrt(1.0 - self.c1 ** 2)
        self.sigma = np.sqrt(U.KB_KCAL_MOL_K * temperature_k * self.inv_m)  # Å/fs, per atom

    def step(self, R, v, F, step: int):
        """One time step from (R Å, v Å/fs, F kcal/mol/Å); returns (R, v, E, F) at the new time."""
        h = 0.5 * self.dt_fs
        v = v + h * F * self.inv_m
        R = R + h * v
        noise = remove_com_velocity(self.sigma * self.rng.standard_normal(R.shape), self.m)
        v = self.c1 * v + self.c2 * noise
        R = R + h * v
        E, F = self.potential(R, step)
        v = v + h * F * self.inv_m
        return R, v, E, F


class _Progress:
    """A progress line on stderr at most every `every_s` seconds: step, steps/s, ETA, temperature."""

    def __init__(self, total: int, enabled: bool, every_s: float = 5.0, what: str = "MD"):
        self.total, self.enabled, self.every_s, self.what = total, enabled, every_s, what
        self.t0 = self.last = time.perf_counter()

    def __call__(self, done: int, extra: str = "", force: bool = False):
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last < self.every_s:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(f"{self.what}: {done}/{self.total} ({rate:.1f}/s, ETA {eta:.0f} s){extra}", file=sys.stderr,
              flush=True)


def generate_md_dataset(start, n_frames: int = 1000, interval: int = 20, equilibration_steps: int = 2000,
                        temperature_k: float = 500.0, dt_fs: float = 0.5, friction_per_fs: float = 0.01,
                        seed: int = 0, method: str = "GFN2-xTB", charge: int = 0,
                        progress: bool = False) -> Dataset:
    """Sample `n_frames` geometries of the molecule in the XYZ file `start` by Langevin MD on the `method`
    (tblite) surface at `temperature_k`, labelled with energy (kcal/mol) and forces (kcal/mol/Å).

    The run is `equilibration_steps` unrecorded steps, then a frame every `interval` steps (so frames are
    `interval * dt_fs` fs apart). Everything random comes from `np.random.default_rng(seed)`: the same
    arguments give identical arrays.
    """
    _check_md_args(n_frames, interval, equilibration_steps, temperature_k, dt_fs, friction_per_fs)
    Z, R = read_xyz_geometry(start)
    m = masses_amu(Z)
    rng = np.random.default_rng(seed)
    potential = XtbPotential(Z, R, method=method, charge=charge)
    E, F = potential(R, step=0)
    v = maxwell_boltzmann_velocities(m, temperature_k, rng)
    integrator = BAOAB(potential, m, dt_fs, temperature_k, friction_per_fs, rng)

    total = equilibration_steps + n_frames * interval
    report = _Progress(total, progress)
    Rs, Es, Fs = np.empty((n_frames, len(Z), 3)), np.empty(n_frames), np.empty((n_frames, len(Z), 3))
    temps = []  # instantaneous temperature (K) at every production step
    t0 = time.perf_counter()
    for step in range(1, total + 1):
        R, v, E, F = integrator.step(R, v, F, step)
        if step > equilibration_steps:
            temps.append(kinetic_temperature_k(v, m))
            k, rem = divmod(step - equilibration_steps, interval)
            if rem == 0:
                Rs[k - 1], Es[k - 1], Fs[k - 1] = R, E, F
        report(step, f", T {kinetic_temperature_k(v, m):.0f} K")
    report(total, force=True)
    temps = np.asarray(temps)
    meta = {
        "name": f"{Path(start).stem}-xtb",
        "theory": f"{method} (tblite {tblite_version()})",
        "engine": f"tblite {tblite_version()}",
        "method": method, "charge": int(charge), "tblite_accuracy": TBLITE_ACCURACY,
        "sampling": "Langevin MD, BAOAB splitting, centre of mass at rest",
        "temperature_k": float(temperature_k), "dt_fs": float(dt_fs), "friction_per_fs": float(friction_per_fs),
        "interval": int(interval), "frame_spacing_fs": float(interval * dt_fs),
        "equilibration_steps": int(equilibration_steps), "n_frames": int(n_frames), "seed": int(seed),
        "kinetic_temperature_k": {"mean": float(temps.mean()), "std": float(temps.std())},
        "md_seconds": round(time.perf_counter() - t0, 1),
        "units": dict(UNITS), "start": Path(start).name, "jaxqc_version": __version__,
    }
    data = Dataset(Z=np.broadcast_to(Z, (n_frames, len(Z))), R=Rs, E=Es, F=Fs, meta=meta)
    return data.validate(f"MD from {Path(start).name}")


def _check_md_args(n_frames, interval, equilibration_steps, temperature_k, dt_fs, friction_per_fs) -> None:
    checks = [
        (n_frames >= 1, f"n_frames must be >= 1, got {n_frames}"),
        (interval >= 1, f"interval must be >= 1, got {interval}"),
        (equilibration_steps >= 0, f"equilibration_steps must be >= 0, got {equilibration_steps}"),
        (temperature_k > 0, f"temperature_k must be > 0 K, got {temperature_k}"),
        (0 < dt_fs <= 5, f"dt_fs must be in (0, 5] fs, got {dt_fs}"),
        (friction_per_fs >= 0, f"friction_per_fs must be >= 0, got {friction_per_fs}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DataError(message)


# ---- DFT relabelling with PySCF --------------------------------------------------------------------
def _pyscf():
    try:
        import pyscf  # noqa: F401
        from pyscf import dft, gto, scf
    except ImportError:
        raise JaxqcError("relabelling with DFT needs PySCF: pip install 'jaxqc[dft]'") from None
    return gto, dft, scf


def parse_dft_spec(spec: str) -> tuple[str, str]:
    """'XC/BASIS' -> (xc, basis), e.g. 'PBE/6-31G*' -> ('PBE', '6-31G*'); 'HF/...' means Hartree-Fock."""
    xc, _, basis = str(spec).partition("/")
    if not xc.strip() or not basis.strip():
        raise DataError(f"DFT spec {spec!r}: expected 'XC/BASIS', e.g. 'PBE/6-31G*' or 'B3LYP/def2-SVP'")
    return xc.strip(), basis.strip()


def _pyscf_molecule(gto, Z, R_ang, basis: str, charge: int, spec: str):
    from pyscf.lib.exceptions import BasisNotFoundError

    atoms = [(symbol(z), tuple(r)) for z, r in zip(Z, R_ang) if z > 0]
    elements = " ".join(sorted({a[0] for a in atoms}))
    try:
        with warnings.catch_warnings():  # PySCF warns 'install basis-set-exchange' before raising
            warnings.simplefilter("ignore")
            return gto.M(atom=atoms, basis=basis, unit="Angstrom", charge=charge, spin=0, verbose=0)
    except (BasisNotFoundError, KeyError):
        raise DataError(f"DFT spec {spec!r}: unknown basis {basis!r} (or not defined for {elements})") from None
    except RuntimeError as err:  # e.g. an odd electron count: RKS needs a closed shell
        message = " ".join(str(err).split())
        raise DataError(f"DFT spec {spec!r}: PySCF could not build the molecule (charge {charge}, "
                        f"closed shell): {message}") from None


def _pyscf_solver(gto_dft_scf, mol, xc: str, spec: str):
    """Restricted Kohn-Sham (or Hartree-Fock for xc 'HF') with a tight SCF, so forces match energies."""
    _, dft, scf = gto_dft_scf
    if xc.upper() == "HF":
        mf = scf.RHF(mol)
    else:
        mf = dft.RKS(mol)
        try:
            mf.xc = xc
            dft.libxc.parse_xc(xc)
        except Exception:
            raise DataError(f"DFT spec {spec!r}: unknown exchange-correlation functional {xc!r}") from None
    mf.conv_tol = 1e-10
    mf.conv_tol_grad = 1e-6
    mf.verbose = 0
    return mf


def pyscf_energy_forces(Z, R_ang, spec: str = "PBE/6-31G*", charge: int = 0, dm0=None):
    """(energy kcal/mol, forces [n, 3] kcal/mol/Å, density matrix) of one geometry with PySCF.

    DFT forces include the integration-grid response, so they are the exact negative gradient of the
    (grid-dependent) energy.
    """
    mods = _pyscf()
    xc, basis = parse_dft_spec(spec)
    mol = _pyscf_molecule(mods[0], Z, R_ang, basis, charge, spec)
    mf = _pyscf_solver(mods, mol, xc, spec)
    e_ha = mf.kernel(dm0=dm0)
    if not mf.converged or not np.isfinite(e_ha):
        raise DataError(f"{spec}: SCF did not converge")
    grad = mf.nuc_grad_method()
    if hasattr(grad, "grid_response"):
        grad.grid_response = True
    grad.verbose = 0
    g_ha_bohr = np.asarray(grad.kernel())
    F = np.zeros_like(np.asarray(R_ang, dtype=np.float64))
    F[np.asarray(Z) > 0] = -g_ha_bohr * HA_BOHR_KCAL_MOL_ANG
    return e_ha * U.HARTREE_KCAL_MOL, F, mf.make_rdm1()


def relabel_pyscf(data: Dataset, spec: str = "PBE/6-31G*", progress: bool = False) -> Dataset:
    """A copy of `data` with E (kcal/mol) and F (kcal/mol/Å) recomputed by PySCF at `spec` ('XC/BASIS').

    meta['theory'] becomes the DFT level; the theory that sampled the geometries is kept as
    meta['sampling_theory']. The previous frame's density matrix seeds each SCF when the atoms match.
    """
    _pyscf()
    parse_dft_spec(spec)
    charge = int(data.meta.get("charge", 0))
    E = np.empty(len(data))
    F = np.zeros_like(data.R)
    dm, prev_Z = None, None
    report = _Progress(len(data), progress, what=f"{spec} relabel")
    for k in range(len(data)):
        same = prev_Z is not None and np.array_equal(prev_Z, data.Z[k])
        try:
            E[k], F[k], dm = pyscf_energy_forces(data.Z[k], data.R[k], spec, charge, dm0=dm if same else None)
        except DataError as err:
            raise DataError(f"frame {k}: {err}") from None
        prev_Z = data.Z[k]
        report(k + 1)
    import pyscf
    meta = {**data.meta, "theory": f"{spec} (PySCF {pyscf.__version__}, RKS, grid response)",
            "sampling_theory": data.meta.get("theory"), "relabel_engine": f"pyscf {pyscf.__version__}"}
    name = str(data.meta.get("name", "relabelled"))
    meta["name"] = (name[:-len("-xtb")] if name.endswith("-xtb") else name) + "-dft"
    if str(spec).upper().startswith("HF/"):
        meta["theory"] = f"{spec} (PySCF {pyscf.__version__}, RHF)"
    out = Dataset(Z=data.Z.copy(), R=data.R.copy(), E=E, F=F, props=dict(data.props), units=dict(data.units),
                  meta=meta)
    return out.validate("relabel")
