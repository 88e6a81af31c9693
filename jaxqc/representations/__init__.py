"""Fixed molecular representations for kernel methods: pure, jit-able functions of padded batches."""
from .bob import bag_of_bonds, bag_sizes
from .coulomb import coulomb_eigenvalues, coulomb_matrix, sorted_coulomb_matrix

__all__ = ["bag_of_bonds", "bag_sizes", "coulomb_eigenvalues", "coulomb_matrix", "sorted_coulomb_matrix"]
