"""Run molecular dynamics on a jaxqc force field: the driver behind `jaxqc md`, its log, trajectory and plot.

`run_md` integrates in jitted blocks of `lax.scan` (`integrators.simulate`), records a frame every
`write_every` steps, checks between blocks that positions stayed finite (stopping at the first bad step,
keeping every good frame) and reports steps/s. Files written next to the trajectory TRAJ.extxyz
(eV, eV/Å and ASE velocities, as extended XYZ does; step and time_fs in each frame's comment):
TRAJ.csv (per frame: step, time_fs, potential / kinetic / total energy in kcal/mol, temperature_K),
TRAJ.json (the run: model, settings, units, speed, energy drift) and TRAJ.png (energies, temperature).
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import __version__
from ..elements import masses_amu
from ..errors import JaxqcError
from ..units import AMU_ANG2_FS2_KCAL_MOL, EV_KCAL_MOL, KB_KCAL_MOL_K
from . import integrators as md
from .models import cast_params

ENSEMBLES = ("nve", "nvt")
LOG_COLUMNS = ("step", "time_fs", "potential_kcal_mol", "kinetic_kcal_mol", "total_kcal_mol", "temperature_K")


@dataclasses.dataclass(frozen=True)
class MDConfig:
    steps: int
    dt_fs: float = 0.5
    temperature_k: float = 300.0          # initial Maxwell–Boltzmann velocities; NVT target
    ensemble: str = "nve"                 # nve (velocity Verlet) | nvt (Langevin, BAOAB)
    friction_per_fs: float = 0.01         # Langevin friction (1/fs)
    seed: int = 0                         # initial velocities and Langevin noise
    write_every: int = 10                 # steps between recorded frames
    float64: bool = True                  # positions, velocities, energies and forces in float64
    block_steps: int = 2000               # steps per jitted call: progress and guard checks in between
    # guards (checked on every recorded frame; the run stops at the first frame outside, keeping the ones
    # before): None turns one off
    max_temperature_k: float | None = -1.0    # -1: max(5000 K, 10 x temperature_k)
    max_drift_kcal_mol_atom: float | None = 1.0  # NVE: |E_total - E_total(0)| per atom
    bond_range_ang: tuple | None = (0.5, 3.0)    # bonds of the start geometry must stay within this range

    def temperature_limit_k(self) -> float | None:
        if self.max_temperature_k is None:
            return None
        return max(5000.0, 10.0 * self.temperature_k) if self.max_temperature_k < 0 else self.max_temperature_k

    def check(self) -> "MDConfig":
        """JaxqcError with a one-line reason for settings that cannot run."""
        problems = [
            (self.ensemble in ENSEMBLES, f"ensemble must be one of {', '.join(ENSEMBLES)}, got {self.ensemble!r}"),
            (self.steps >= 1, f"--steps must be >= 1, got {self.steps}"),
            (np.isfinite(self.dt_fs) and self.dt_fs > 0, f"--dt-fs must be positive, got {self.dt_fs:g}"),
            (np.isfinite(self.temperature_k) and self.temperature_k >= 0,
             f"--temperature-k must be >= 0, got {self.temperature_k:g}"),
            (self.write_every >= 1, f"--write-every must be >= 1, got {self.write_every}"),
            (self.ensemble != "nvt" or self.friction_per_fs > 0,
             f"--friction-per-fs must be positive for nvt, got {self.friction_per_fs:g}"),
            (self.block_steps >= 1, f"block_steps must be >= 1, got {self.block_steps}"),
            (self.max_drift_kcal_mol_atom is None or self.max_drift_kcal_mol_atom > 0,
             f"--max-drift-kcal-mol-atom must be positive, got {self.max_drift_kcal_mol_atom}"),
            (self.bond_range_ang is None or 0 <= self.bond_range_ang[0] < self.bond_range_ang[1],
             f"--bond-range-ang must be MIN < MAX, got {self.bond_range_ang}"),
        ]
        for ok, message in problems:
            if not ok:
                raise JaxqcError(message)
        return self


@dataclasses.dataclass
class MDResult:
    """Frames (the initial state first) as host arrays, and how the run went.

    Z [A]; step [n]; R, v, F [n, A, 3] (Å, Å/fs, kcal/mol/Å); E [n] potential energy kcal/mol;
    log: LOG_COLUMNS -> [n]; stopped: None, or why the run ended early; timings in s.
    """

    Z: np.ndarray
    step: np.ndarray
    R: np.ndarray
    v: np.ndarray
    F: np.ndarray
    E: np.ndarray
    log: dict
    config: MDConfig
    stopped: str | None
    run_s: float
    compile_s: float

    @property
    def steps_done(self) -> int:
        return int(self.step[-1])

    @property
    def steps_per_s(self) -> float:
        """Integration speed over the whole run, compilation excluded."""
        return self.steps_done / self.run_s if self.run_s > 0 else float("nan")


def make_integrator(energy_and_forces, masses, cfg: MDConfig):
    if cfg.ensemble == "nve":
        return md.nve(energy_and_forces, masses, cfg.dt_fs)
    return md.nvt_langevin(energy_and_forces, masses, cfg.dt_fs, cfg.temperature_k, cfg.friction_per_fs)


def energy_log(step, E, v, masses, dt_fs) -> dict:
    """LOG_COLUMNS -> [n] arrays from recorded steps [n], potential energies E [n] kcal/mol and
    velocities v [n, A, 3] Å/fs."""
    v = np.asarray(v, np.float64)
    kin = 0.5 * AMU_ANG2_FS2_KCAL_MOL * np.sum(np.asarray(masses)[None, :, None] * v * v, axis=(1, 2))
    pot = np.asarray(E, np.float64)
    dof = md.degrees_of_freedom(len(masses))
    return {"step": np.asarray(step, np.int64), "time_fs": np.asarray(step) * dt_fs, "potential_kcal_mol": pot,
            "kinetic_kcal_mol": kin, "total_kcal_mol": pot + kin, "temperature_K": 2 * kin / (dof * KB_KCAL_MOL_K)}


def drift_and_fluctuation(log: dict, n_atoms: int, temperature_k: float) -> dict:
    """Total-energy drift (least-squares slope, kcal/mol/ps and per atom; per atom per ns in units of kT)
    and fluctuation (std, kcal/mol; also around the fitted line) of a log."""
    t_ps, E = log["time_fs"] / 1000.0, log["total_kcal_mol"]
    if len(E) < 3:
        return {}
    slope, intercept = np.polyfit(t_ps, E, 1)
    kT = KB_KCAL_MOL_K * temperature_k
    return {"drift_kcal_mol_ps": float(slope), "drift_kcal_mol_ps_atom": float(slope / n_atoms),
            "drift_per_atom_per_ns_over_kT": float(abs(slope) * 1000.0 / n_atoms / kT) if kT > 0 else None,
            "fluctuation_std_kcal_mol": float(np.std(E)),
            "fluctuation_detrended_std_kcal_mol": float(np.std(E - (slope * t_ps + intercept))),
            "kT_kcal_mol": kT, "mean_temperature_K": float(np.mean(log["temperature_K"][1:]))}


class _Progress:
    """A line on stderr at most every `every_s` seconds: step, steps/s, ETA, temperature, total energy."""

    def __init__(self, total: int, enabled: bool, every_s: float = 5.0):
        self.total, self.enabled, self.every_s = total, enabled, every_s
        self.last, self.shown = time.perf_counter(), -1

    def __call__(self, done: int, run_s: float, T: float, E_total: float, force: bool = False):
        now = time.perf_counter()
        if not self.enabled or done == self.shown or (not force and now - self.last < self.every_s):
            return
        self.last, self.shown = now, done
        rate = done / max(run_s, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        print(f"md: step {done}/{self.total} ({rate:.0f} steps/s, ETA {eta:.0f} s), T {T:.0f} K, "
              f"E_total {E_total:.4f} kcal/mol", file=sys.stderr, flush=True)


def _finite(traj) -> np.ndarray:
    """[n] True where a recorded state's positions, velocities and potential energy are all finite."""
    return (np.all(np.isfinite(traj.R), axis=(1, 2)) & np.all(np.isfinite(traj.v), axis=(1, 2))
            & np.isfinite(traj.E))


def guard_check(traj, cfg: MDConfig, masses, E_total0: float, bonds) -> tuple[int, str] | None:
    """(index of the first recorded frame outside the guards, why) or None when every frame is sane.
    bonds: (i, j) index arrays of the start geometry's covalent bonds."""
    log = energy_log(traj.step, traj.E, traj.v, masses, cfg.dt_fs)
    n_atoms = len(masses)
    bad = []
    t_max = cfg.temperature_limit_k()
    if t_max is not None:
        hot = np.flatnonzero(log["temperature_K"] > t_max)
        if len(hot):
            bad.append((hot[0], f"temperature {log['temperature_K'][hot[0]]:.4g} K above {t_max:g} K"))
    if cfg.ensemble == "nve" and cfg.max_drift_kcal_mol_atom is not None:
        drift = np.abs(log["total_kcal_mol"] - E_total0) / n_atoms
        off = np.flatnonzero(drift > cfg.max_drift_kcal_mol_atom)
        if len(off):
            bad.append((off[0], f"total energy drifted by {drift[off[0]]:.4g} kcal/mol per atom (NVE; limit "
                                f"{cfg.max_drift_kcal_mol_atom:g})"))
    if cfg.bond_range_ang is not None and len(bonds[0]):
        lo, hi = cfg.bond_range_ang
        d = np.linalg.norm(traj.R[:, bonds[0]] - traj.R[:, bonds[1]], axis=-1)  # [n, bonds] Å
        out = np.flatnonzero(np.any((d < lo) | (d > hi), axis=1))
        if len(out):
            k = int(np.argmax((d[out[0]] < lo) | (d[out[0]] > hi)))
            bad.append((out[0], f"bond {int(bonds[0][k])}-{int(bonds[1][k])} at {d[out[0], k]:.3g} Å, outside "
                                f"[{lo:g}, {hi:g}] Å"))
    return min(bad, key=lambda b: b[0]) if bad else None


def start_bonds(Z, R0, bond_range_ang=None) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) of the covalent bonds of geometry R0 [A, 3] Å (jaxqc's bond graph) whose length lies within
    bond_range_ang (None: all of them): the bonds a guard watches, as they can leave the range."""
    from ..kernels.symmetries import bond_graph

    R0 = np.asarray(R0, np.float64)
    i, j = np.nonzero(np.triu(bond_graph(np.asarray(Z), R0)))
    if bond_range_ang is None:
        return i, j
    d = np.linalg.norm(R0[i] - R0[j], axis=-1)
    keep = (d >= bond_range_ang[0]) & (d <= bond_range_ang[1])
    return i[keep], j[keep]


def run_md(energy, params, Z, R0, cfg: MDConfig, v0=None, progress: bool = False) -> MDResult:
    """Integrate the molecule (Z [A], R0 [A, 3] Å) on `energy(params, molecules)` for cfg.steps steps.

    Initial velocities: v0 [A, 3] Å/fs, or Maxwell–Boltzmann at cfg.temperature_k (seeded). Precision:
    float64 unless cfg.float64 is False (inside `jax.enable_x64`; global settings untouched)."""
    cfg.check()
    Z = np.asarray(Z, np.int32)
    m = masses_amu(Z)
    dtype = jnp.float64 if cfg.float64 else jnp.float32
    K = cfg.write_every
    with jax.enable_x64(cfg.float64):
        p = cast_params(params, dtype)
        init_fn, step_fn = make_integrator(md.molecule_force_field(energy, Z), m, cfg)
        key, k_v = jax.random.split(jax.random.PRNGKey(cfg.seed))
        v0 = md.maxwell_boltzmann(k_v, m, cfg.temperature_k, dtype) if v0 is None else jnp.asarray(v0, dtype)
        state = jax.jit(init_fn)(p, jnp.asarray(R0, dtype), v0, key)  # one compilation, not op by op
        if not (np.isfinite(float(state.E)) and np.all(np.isfinite(np.asarray(state.F)))):
            raise JaxqcError("the model gives a non-finite energy or forces at the start geometry")
        frames = [jax.tree_util.tree_map(lambda a: np.asarray(a)[None], state)]
        compiled, compile_s, run_s = {}, 0.0, 0.0
        bonds = start_bonds(Z, R0, cfg.bond_range_ang)
        E_total0 = float(energy_log(frames[0].step, frames[0].E, frames[0].v, m, cfg.dt_fs)["total_kcal_mol"][0])

        def advance(state, n_frames, every):
            nonlocal compile_s
            if (n_frames, every) not in compiled:
                t = time.perf_counter()
                compiled[n_frames, every] = md.simulate.lower(step_fn, p, state, n_frames=n_frames,
                                                              write_every=every).compile()
                compile_s += time.perf_counter() - t
            return compiled[n_frames, every](p, state)

        # blocks of equal size (at most two compiled shapes), then the remainder steps as one last frame
        n_full, rest = divmod(cfg.steps, K)
        per_block = max(1, min(n_full, cfg.block_steps // K)) if n_full else 0
        n_blocks = -(-n_full // per_block) if n_full else 0
        per_block = -(-n_full // n_blocks) if n_blocks else 0
        plan = [(min(per_block, n_full - b * per_block), K) for b in range(n_blocks)] + ([(1, rest)] if rest else [])
        report = _Progress(cfg.steps, progress)
        stopped = None
        for n_frames, every in plan:
            t, c0 = time.perf_counter(), compile_s
            new_state, traj = advance(state, n_frames, every)
            traj = jax.tree_util.tree_map(np.asarray, traj)  # waits for the block
            run_s += time.perf_counter() - t - (compile_s - c0)
            finite = _finite(traj)
            if not finite.all():
                bad = int(np.argmin(finite))
                frames.append(jax.tree_util.tree_map(lambda a: a[:bad], traj))
                start = state if bad == 0 else jax.tree_util.tree_map(lambda a: jnp.asarray(a[bad - 1]), traj)
                steps = jax.tree_util.tree_map(np.asarray, md.simulate(step_fn, p, start, every, 1)[1])
                first = int(np.argmin(_finite(steps))) + 1 + int(start.step)  # the bad frame, step by step
                stopped = (f"non-finite positions or energy at step {first} (t = {first * cfg.dt_fs:g} fs); stopped, "
                           f"keeping the frames up to step {int(start.step)}")
                break
            insane = guard_check(traj, cfg, m, E_total0, bonds)
            if insane is not None:
                bad, why = insane
                frames.append(jax.tree_util.tree_map(lambda a: a[:bad], traj))
                step = int(traj.step[bad])
                kept = int(traj.step[bad - 1]) if bad else int(state.step)
                stopped = (f"{why} at step {step} (t = {step * cfg.dt_fs:g} fs): the simulation left the sane range; "
                           f"stopped, keeping the frames up to step {kept}")
                break
            frames.append(traj)
            state = new_state
            last = energy_log(traj.step[-1:], traj.E[-1:], traj.v[-1:], m, cfg.dt_fs)
            report(int(traj.step[-1]), run_s, last["temperature_K"][0], last["total_kcal_mol"][0])
    cat = lambda *a: np.concatenate(a)  # noqa: E731
    traj = jax.tree_util.tree_map(cat, *frames)
    R, v, F = (np.asarray(a, np.float64) for a in (traj.R, traj.v, traj.F))
    log = energy_log(traj.step, traj.E, v, m, cfg.dt_fs)
    result = MDResult(Z=Z, step=np.asarray(traj.step), R=R, v=v, F=F, E=np.asarray(traj.E, np.float64), log=log,
                      config=cfg, stopped=stopped, run_s=run_s, compile_s=compile_s)
    if progress and stopped is None:
        report(result.steps_done, run_s, float(log["temperature_K"][-1]), float(log["total_kcal_mol"][-1]), force=True)
    return result


# ---- files --------------------------------------------------------------------------------------------
def output_paths(traj_path) -> dict:
    traj = Path(traj_path)
    return {"trajectory": traj, "log": traj.with_suffix(".csv"), "summary": traj.with_suffix(".json"),
            "plot": traj.with_suffix(".png")}


def write_trajectory(result: MDResult, path) -> None:
    """Extended XYZ, atomically: positions Å, energy eV, forces eV/Å, velocities in ASE units; each frame's
    comment has step, time_fs, potential / kinetic energy (kcal/mol) and temperature_K."""
    from ase import Atoms, units
    from ase.calculators.singlepoint import SinglePointCalculator

    from ..data.io import _ase_io, atomic_path

    ase_io = _ase_io()
    log = result.log
    frames = []
    for k in range(len(result.R)):
        atoms = Atoms(numbers=result.Z, positions=result.R[k])
        atoms.set_velocities(result.v[k] / units.fs)  # Å/fs -> Å / ASE time
        atoms.calc = SinglePointCalculator(atoms, energy=result.E[k] / EV_KCAL_MOL, forces=result.F[k] / EV_KCAL_MOL)
        atoms.info.update(step=int(result.step[k]), time_fs=float(log["time_fs"][k]), energy_unit="eV",
                          potential_kcal_mol=float(log["potential_kcal_mol"][k]),
                          kinetic_kcal_mol=float(log["kinetic_kcal_mol"][k]),
                          temperature_K=float(log["temperature_K"][k]))
        frames.append(atoms)
    with atomic_path(path) as tmp:
        ase_io.write(tmp, frames, format="extxyz")


def log_csv(log: dict) -> str:
    lines = [",".join(LOG_COLUMNS)]
    for k in range(len(log["step"])):
        lines.append(f"{int(log['step'][k])},{log['time_fs'][k]:.6g}," + ",".join(
            f"{log[c][k]:.10g}" for c in LOG_COLUMNS[2:]))
    return "\n".join(lines) + "\n"


def read_log_csv(path) -> dict:
    """LOG_COLUMNS -> arrays of a log written by `write_outputs`."""
    arr = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    return {c: arr[:, i] for i, c in enumerate(LOG_COLUMNS)}


def plot_log(log: dict, path, title: str = "") -> bool:
    """Energies (relative to the first total energy) and temperature vs time, PNG; False without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from ..data.io import atomic_path

    t, E0 = log["time_fs"], log["total_kcal_mol"][0]
    fig, (a, b) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key, label in (("potential_kcal_mol", "potential"), ("kinetic_kcal_mol", "kinetic"),
                       ("total_kcal_mol", "total")):
        ref = E0 if key == "total_kcal_mol" else log[key][0] if key == "potential_kcal_mol" else 0.0
        a.plot(t, log[key] - ref, label=f"{label}" + (" - E_total(0)" if key == "total_kcal_mol" else
                                                      " - E_pot(0)" if key == "potential_kcal_mol" else ""))
    a.set(ylabel="energy (kcal/mol)", title=title)
    a.legend(fontsize=8)
    b.plot(t, log["temperature_K"], color="C3")
    b.set(xlabel="time (fs)", ylabel="temperature (K)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return True


def summary(result: MDResult, info: dict, start: str) -> dict:
    cfg = result.config
    return {"model": info.get("path"), "kind": info.get("kind"), "model_description": info.get("description"),
            "start": start, "config": dataclasses.asdict(cfg), "n_atoms": int(len(result.Z)),
            "steps_done": result.steps_done, "frames": int(len(result.step)), "stopped": result.stopped,
            "steps_per_s": result.steps_per_s, "run_s": result.run_s, "compile_s": result.compile_s,
            "energy": drift_and_fluctuation(result.log, len(result.Z), cfg.temperature_k),
            "units": {"R": "Å", "E": "kcal/mol", "time": "fs", "T": "K", "extxyz": "eV, eV/Å, ASE velocity units"},
            "jaxqc_version": __version__}


def write_outputs(result: MDResult, traj_path, info: dict, start: str) -> dict:
    """Trajectory, CSV log, JSON summary and (with matplotlib) the plot next to `traj_path`; returns the paths
    written (the plot's is None without matplotlib)."""
    from ..data.io import atomic_write_text

    paths = output_paths(traj_path)
    for p in paths.values():
        if p.is_dir():
            raise JaxqcError(f"{p}: is a directory; give --out a trajectory file name (*.extxyz) whose .csv, .json "
                             f"and .png names are free of folders")
    write_trajectory(result, paths["trajectory"])
    atomic_write_text(paths["log"], log_csv(result.log))
    atomic_write_text(paths["summary"], json.dumps(summary(result, info, start), indent=1, default=float))
    title = f"{info.get('kind', '')} {result.config.ensemble.upper()}, dt {result.config.dt_fs:g} fs"
    if not plot_log(result.log, paths["plot"], title):
        paths["plot"] = None
    return paths
