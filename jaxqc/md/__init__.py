"""Molecular dynamics on jaxqc force fields: integrators as (init_fn, step_fn) pairs run with lax.scan
(velocity-Verlet NVE, Langevin BAOAB NVT), a jitted and differentiable `simulate`, gradients of trajectory
averages (`jaxqc.md.differentiable`), loading any saved model as an energy function, an ASE calculator
(`jaxqc.md.calculator`) and the `jaxqc md` driver (`jaxqc.md.run`)."""
from .differentiable import bond_length, directional_checks, trajectory_average
from .integrators import (MDState, kinetic_energy, maxwell_boltzmann, molecule_force_field, nve, nvt_langevin,
                          remove_com_velocity, simulate, temperature_k)
from .models import check_geometry, load_potential

__all__ = ["MDState", "bond_length", "check_geometry", "directional_checks", "kinetic_energy", "load_potential",
           "maxwell_boltzmann", "molecule_force_field", "nve", "nvt_langevin", "remove_com_velocity", "simulate",
           "temperature_k", "trajectory_average"]
