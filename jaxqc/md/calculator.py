"""ASE calculator for any saved jaxqc force field: energy (eV) and forces (eV/Å) at the ASE edge, so ASE's
optimisers, MD and vibrational analysis run on jaxqc models.

    from jaxqc.md.calculator import JaxqcCalculator
    atoms.calc = JaxqcCalculator("model.npz")      # or a network run directory
    BFGS(atoms).run(fmax=0.01)

Inside, jaxqc's own units (Å, kcal/mol) and one jitted energy_and_forces (forces = -grad E), float64 by
default (evaluated under `jax.enable_x64`, without changing global JAX settings).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import JaxqcError
from ..units import EV_KCAL_MOL
from .integrators import molecule_force_field
from .models import cast_params, check_geometry, load_potential

try:
    from ase.calculators.calculator import Calculator, all_changes
except ImportError:  # pragma: no cover - ase is an optional dependency
    Calculator, all_changes = object, None


class JaxqcCalculator(Calculator):
    """ASE calculator of a jaxqc model file / run directory (`model`), or of an already loaded
    `potential=(energy, params, info)` from `jaxqc.md.models.load_potential`."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model=None, potential=None, float64: bool = True, **kwargs):
        if Calculator is object:
            raise JaxqcError("the ASE calculator needs ASE: pip install 'jaxqc[ase]'")
        super().__init__(**kwargs)
        if (model is None) == (potential is None):
            raise JaxqcError("JaxqcCalculator: give a model path or a loaded potential, not both or neither")
        self.energy, params, self.info = load_potential(model) if potential is None else potential
        self.float64 = float64
        with jax.enable_x64(float64):
            self.params = cast_params(params, jnp.float64 if float64 else jnp.float32)
        self._fns = {}  # atomic numbers -> jitted energy_and_forces(params, R)

    def _energy_and_forces(self, Z):
        key = tuple(int(z) for z in Z)
        if key not in self._fns:
            check_geometry(self.info, Z, where="ASE atoms")
            self._fns[key] = jax.jit(molecule_force_field(self.energy, Z))
        return self._fns[key]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if np.any(self.atoms.pbc):
            raise JaxqcError("JaxqcCalculator: jaxqc force fields are for isolated molecules (no periodic cell)")
        fn = self._energy_and_forces(self.atoms.numbers)
        with jax.enable_x64(self.float64):
            R = jnp.asarray(self.atoms.positions, jnp.float64 if self.float64 else jnp.float32)
            E, F = fn(self.params, R)  # kcal/mol, kcal/mol/Å
            E, F = float(E), np.asarray(F, np.float64)
        self.results = {"energy": E / EV_KCAL_MOL, "free_energy": E / EV_KCAL_MOL, "forces": F / EV_KCAL_MOL}
