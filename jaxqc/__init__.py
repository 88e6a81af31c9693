"""jaxqc: machine learning for quantum chemistry in JAX.

The curated public API; everything else is importable from its module but not advertised here.
"""
__version__ = "0.1.0"

from .data.io import read, write  # noqa: E402
from .data.molecules import Dataset, Molecules, batches, random_split  # noqa: E402
from .potential import energy_and_forces_fn, forces_fn, load_model, save_model  # noqa: E402
from . import models  # noqa: E402  (the registry: models.get, models.register, models.load, models.ModelSpec)
from . import orbitals  # noqa: E402  (AO rotations; orbitals, gap, density, dipole from H and S)

__all__ = ["Dataset", "Molecules", "batches", "energy_and_forces_fn", "forces_fn", "load_model", "models",
           "orbitals", "random_split", "read", "save_model", "write", "__version__"]
