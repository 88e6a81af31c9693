"""Small synthetic molecules for tests (made here, not third-party data)."""
import numpy as np

from jaxqc.data.molecules import Dataset

# an ethanol-like heavy-atom frame with hydrogens, Å (hand-built, roughly tetrahedral)
ETHANOL_Z = np.array([6, 6, 8, 1, 1, 1, 1, 1, 1])
ETHANOL_R = np.array([
    [-1.17, -0.40, 0.00], [0.17, 0.33, 0.00], [1.21, -0.62, 0.00], [-1.24, -1.04, 0.88],
    [-1.24, -1.04, -0.88], [-2.01, 0.30, 0.00], [0.26, 0.97, 0.88], [0.26, 0.97, -0.88], [2.05, -0.15, 0.00],
])


def ethanol_frames(n=5, seed=0, noise=0.05):
    rng = np.random.default_rng(seed)
    R = ETHANOL_R[None] + noise * rng.normal(size=(n, 9, 3))
    E = rng.normal(size=n) * 3 - 100.0
    F = rng.normal(size=(n, 9, 3))
    return Dataset(Z=np.tile(ETHANOL_Z, (n, 1)), R=R, E=E, F=F, meta={"name": "synthetic", "theory": "none"})


def mixed_molecules(n=20, seed=0, max_atoms=12):
    """Molecules of different sizes (2..max_atoms atoms on a jittered grid, never overlapping)."""
    rng = np.random.default_rng(seed)
    Z = np.zeros((n, max_atoms), int)
    R = np.zeros((n, max_atoms, 3))
    for m in range(n):
        k = rng.integers(2, max_atoms + 1)
        grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.5
        R[m, :k] = grid[rng.permutation(27)[:k]] + 0.1 * rng.normal(size=(k, 3))
        Z[m, :k] = rng.choice([1, 6, 7, 8], size=k)
    return Dataset(Z=Z, R=R, E=rng.normal(size=n), props={"mu": rng.random(n)}, units={"mu": "D"})


def write_xyz(path, Z_symbols, R, comment=""):
    lines = [str(len(Z_symbols)), comment]
    lines += [f"{s} {x} {y} {z}" for s, (x, y, z) in zip(Z_symbols, R)]
    path.write_text("\n".join(lines) + "\n")
    return path
