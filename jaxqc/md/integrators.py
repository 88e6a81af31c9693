"""Molecular dynamics integrators as `(init_fn, step_fn)` pairs over a small state, run with `lax.scan`.

Units: positions Å, velocities Å/fs, time fs, masses amu, energies kcal/mol, forces kcal/mol/Å,
temperature K. Acceleration a = F / (m * AMU_ANG2_FS2_KCAL_MOL) in Å/fs².

A force field here is `energy_and_forces(params, R) -> (E [] kcal/mol, F [A, 3] kcal/mol/Å)` for one
molecule (`molecule_force_field` makes one from any jaxqc `energy(params, molecules)`; forces are
`potential.energy_and_forces_fn`, i.e. -grad of the energy). Params are an argument of every step, so
a trajectory can be differentiated with respect to them (and to the initial positions) through the scan.

- `nve`: velocity Verlet (time-reversible, symplectic: total-energy error O(dt²), no drift in exact
  arithmetic).
- `nvt_langevin`: Langevin dynamics, BAOAB splitting (Leimkuhler & Matthews 2013): half kick (B),
  half drift (A), exact Ornstein–Uhlenbeck velocity update (O), half drift, new forces, half kick. The
  O-step noise is projected onto zero total momentum, so the centre of mass stays at rest and the
  3A - 3 remaining degrees of freedom are thermostatted.

Precision follows the input arrays: run under `jax.enable_x64(True)` with float64 positions for the
float64 default of the CLI. Nothing here changes global JAX state.
"""
from __future__ import annotations

import functools
from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ..data.molecules import Molecules
from ..potential import energy_and_forces_fn
from ..units import AMU_ANG2_FS2_KCAL_MOL, KB_KCAL_MOL_K


@flax.struct.dataclass
class MDState:
    """One molecule's dynamical state; stacked along a leading axis it is a trajectory.

    R    [A, 3] Å          positions
    v    [A, 3] Å/fs       velocities
    F    [A, 3] kcal/mol/Å forces at R
    E    []     kcal/mol   potential energy at R (stored so logging needs no recomputation)
    step []     int32      steps taken
    key  [2]    uint32     PRNG key (Langevin noise; carried unchanged by NVE)
    """

    R: jnp.ndarray
    v: jnp.ndarray
    F: jnp.ndarray
    E: jnp.ndarray
    step: jnp.ndarray
    key: jnp.ndarray


# ---- force field of one molecule --------------------------------------------------------------------
def molecule_force_field(energy: Callable, Z) -> Callable:
    """energy_and_forces(params, R [A, 3]) -> (E [], F [A, 3]) for the molecule Z [A] from a jaxqc
    `energy(params, molecules) -> [batch]` (a batch of one; forces are potential.energy_and_forces_fn)."""
    Z = np.asarray(Z, np.int32)[None]  # [1, A]
    ef = energy_and_forces_fn(energy)

    def energy_and_forces(params, R):
        mol = Molecules(Z=jnp.asarray(Z), R=R[None], mask=jnp.asarray(Z > 0), mol_mask=jnp.ones(1, bool))
        E, F = ef(params, mol)
        return E[0], F[0]

    return energy_and_forces


# ---- kinetic quantities -------------------------------------------------------------------------
def kinetic_energy(v, masses_amu):
    """Kinetic energy in kcal/mol of velocities v [..., A, 3] Å/fs, masses [A] amu -> [...]."""
    m = jnp.asarray(masses_amu, v.dtype)
    return 0.5 * AMU_ANG2_FS2_KCAL_MOL * jnp.sum(m[:, None] * v * v, axis=(-2, -1))


def degrees_of_freedom(n_atoms: int) -> int:
    """3A - 3: the centre of mass is at rest (initial velocities and Langevin noise have no net momentum)."""
    return max(3 * n_atoms - 3, 1)


def temperature_k(v, masses_amu):
    """Instantaneous kinetic temperature (K) of v [..., A, 3] Å/fs, with 3A - 3 degrees of freedom."""
    dof = degrees_of_freedom(np.shape(masses_amu)[-1])
    return 2.0 * kinetic_energy(v, masses_amu) / (dof * KB_KCAL_MOL_K)


def remove_com_velocity(v, masses_amu):
    """v [A, 3] Å/fs minus its centre-of-mass velocity (zero total momentum)."""
    m = jnp.asarray(masses_amu, v.dtype)
    return v - jnp.sum(m[:, None] * v, 0) / jnp.sum(m)


def thermal_sigma(masses_amu, temperature_k_, dtype):
    """[A, 1] Å/fs: standard deviation sqrt(kT/m) of a velocity component at the temperature."""
    m = jnp.asarray(masses_amu, dtype)
    return jnp.sqrt(KB_KCAL_MOL_K * temperature_k_ / (m * AMU_ANG2_FS2_KCAL_MOL))[:, None]


def maxwell_boltzmann(key, masses_amu, temperature_k_, dtype=jnp.float32):
    """Velocities [A, 3] Å/fs drawn from the Maxwell–Boltzmann distribution at `temperature_k_`, centre of
    mass motion removed: <kinetic energy> = (3A - 3) kT / 2 exactly (no rescaling to the target)."""
    n = np.shape(masses_amu)[0]
    v = jax.random.normal(key, (n, 3), dtype) * thermal_sigma(masses_amu, temperature_k_, dtype)
    return remove_com_velocity(v, masses_amu)


# ---- integrators ----------------------------------------------------------------------------------
def _inverse_mass(masses_amu, dtype):
    """[A, 1] 1/(m * AMU_ANG2_FS2_KCAL_MOL): kcal/mol/Å -> Å/fs²."""
    return 1.0 / (jnp.asarray(masses_amu, dtype)[:, None] * AMU_ANG2_FS2_KCAL_MOL)


def _init(energy_and_forces):
    def init_fn(params, R, v, key=None):
        """State at positions R [A, 3] Å with velocities v [A, 3] Å/fs (forces evaluated once)."""
        R = jnp.asarray(R)
        v = jnp.asarray(v, R.dtype)
        E, F = energy_and_forces(params, R)
        key = jax.random.PRNGKey(0) if key is None else key
        return MDState(R=R, v=v, F=F, E=E, step=jnp.zeros((), jnp.int32), key=key)

    return init_fn


def nve(energy_and_forces: Callable, masses_amu, dt_fs: float):
    """Velocity Verlet, (init_fn, step_fn): init_fn(params, R, v, key=None) -> MDState;
    step_fn(params, state) -> state one time step dt_fs later (one force evaluation per step)."""
    masses_amu = np.asarray(masses_amu, np.float64)

    def step_fn(params, s: MDState) -> MDState:
        inv_m = _inverse_mass(masses_amu, s.R.dtype)
        v = s.v + 0.5 * dt_fs * s.F * inv_m
        R = s.R + dt_fs * v
        E, F = energy_and_forces(params, R)
        v = v + 0.5 * dt_fs * F * inv_m
        return MDState(R=R, v=v, F=F, E=E, step=s.step + 1, key=s.key)

    return _init(energy_and_forces), step_fn


def nvt_langevin(energy_and_forces: Callable, masses_amu, dt_fs: float, temperature_k_: float,
                 friction_per_fs: float = 0.01):
    """Langevin dynamics at `temperature_k_`, BAOAB splitting, (init_fn, step_fn) as `nve`; the noise
    comes from state.key, split once per step (init_fn needs a key)."""
    masses_amu = np.asarray(masses_amu, np.float64)
    c1 = float(np.exp(-friction_per_fs * dt_fs))  # velocity memory over one step
    c2 = float(np.sqrt(1.0 - c1 * c1))  # noise weight (fluctuation–dissipation)
    h = 0.5 * dt_fs

    def step_fn(params, s: MDState) -> MDState:
        inv_m = _inverse_mass(masses_amu, s.R.dtype)
        key, sub = jax.random.split(s.key)
        v = s.v + h * s.F * inv_m  # B
        R = s.R + h * v  # A
        noise = jax.random.normal(sub, R.shape, R.dtype) * thermal_sigma(masses_amu, temperature_k_, R.dtype)
        v = c1 * v + c2 * remove_com_velocity(noise, masses_amu)  # O
        R = R + h * v  # A
        E, F = energy_and_forces(params, R)
        v = v + h * F * inv_m  # B
        return MDState(R=R, v=v, F=F, E=E, step=s.step + 1, key=key)

    return _init(energy_and_forces), step_fn


# ---- running ----------------------------------------------------------------------------------------
@functools.partial(jax.jit, static_argnames=("step_fn", "n_frames", "write_every"))
def simulate(step_fn, params, state: MDState, n_frames: int, write_every: int = 1):
    """(final state, trajectory) after n_frames * write_every steps of step_fn(params, state).

    The trajectory is an MDState with a leading [n_frames] axis: the state after every `write_every`
    steps (the initial state is not included). Jitted (step_fn, n_frames, write_every static; a new
    step_fn compiles anew) and differentiable: gradients of a function of the trajectory with respect to
    params or the initial state flow back through both scans."""

    def one_step(s, _):
        return step_fn(params, s), None

    def one_frame(s, _):
        s = jax.lax.scan(one_step, s, None, length=write_every)[0]
        return s, s

    return jax.lax.scan(one_frame, state, None, length=n_frames)
