"""Atomic-orbital matrices: the AO layout of a basis, how H and S rotate with the molecule, and every
ground-state property that follows from a Hamiltonian H and overlap S (all pure, jit-able, vmappable).

Conventions (PySCF's, the engine that makes jaxqc's Hamiltonian data):
- AOs are real spherical, grouped by atom in the molecule's atom order; within an atom by shell, as PySCF
  lists them (s shells, then p, then d); within a shell p is (x, y, z) and l >= 2 is m = -l..l
  (d: xy, yz, z^2, xz, x^2-y^2).
- H and S in Hartree (S dimensionless), lengths inside the dipole in bohr, dipoles reported in Debye.
- A molecule rotated by Q (positions R -> R Q^T) has H' = D(Q) H D(Q)^T, D block diagonal over the shells:
  D^l = A_l D_e3nn^l(Q) A_l^T, with e3nn-jax's real Wigner-D and A_l the fixed orthogonal map from e3nn-jax's
  real spherical harmonics to PySCF's (A_E3NN_TO_PYSCF; tests check it against PySCF's own AO values and
  against PySCF recomputed on rotated geometries).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from .errors import DataError

DEBYE_PER_AU = 2.541746473         # 1 e·bohr in Debye
PAD_ENERGY_HA = 1.0e3              # diagonal of padded AO rows of H: their eigenvalues sort above every real one

_S3 = np.sqrt(3.0) / 2.0
# rows: PySCF's real spherical components; columns: e3nn-jax's (sh(l, ...) order, y the polar axis for l >= 2)
A_E3NN_TO_PYSCF = {
    0: np.eye(1),
    1: np.eye(3),                                     # both (x, y, z)
    2: np.array([[0.0, 1.0, 0.0, 0.0, 0.0],           # d_xy
                 [0.0, 0.0, 0.0, 1.0, 0.0],           # d_yz
                 [0.0, 0.0, -0.5, 0.0, _S3],          # d_z^2
                 [1.0, 0.0, 0.0, 0.0, 0.0],           # d_xz
                 [0.0, 0.0, -_S3, 0.0, -0.5]]),       # d_x^2-y^2
}
L_MAX = max(A_E3NN_TO_PYSCF)


@dataclasses.dataclass(frozen=True)
class AOLayout:
    """The AO basis of a data set: its name and, per element, the angular momenta of its shells in AO order.

    shells: ((Z, (l, l, ...)), ...) sorted by Z (hashable: a static argument under jit)."""

    basis: str
    shells: tuple

    @classmethod
    def from_meta(cls, meta: dict, source: str = "") -> "AOLayout":
        try:
            shells = tuple(sorted((int(z), tuple(int(l) for l in ls)) for z, ls in meta["ao_shells"].items()))
            basis = str(meta["basis"])
        except (KeyError, TypeError, ValueError, AttributeError):
            raise DataError(f"{source or 'data'}: no AO basis description (meta 'basis' and 'ao_shells'): not a "
                            f"Hamiltonian data set (make one with `jaxqc data label ... --hamiltonian`)") from None
        too_high = [z for z, ls in shells if ls and max(ls) > L_MAX]
        if too_high:
            raise DataError(f"{source or 'data'}: basis {basis} has shells above l = {L_MAX} (elements {too_high}); "
                            f"jaxqc's AO rotations stop at d")
        return cls(basis=basis, shells=shells)

    def to_meta(self) -> dict:
        return {"basis": self.basis, "ao_shells": {str(z): list(ls) for z, ls in self.shells}}

    @property
    def elements(self) -> tuple:
        return tuple(z for z, _ in self.shells)

    def element_shells(self, z: int) -> tuple:
        for zz, ls in self.shells:
            if zz == int(z):
                return ls
        raise DataError(f"basis {self.basis} of this model has no functions for element Z={int(z)}")

    def n_ao_element(self, z: int) -> int:
        return sum(2 * l + 1 for l in self.element_shells(z))

    @property
    def max_ao_element(self) -> int:
        return max(self.n_ao_element(z) for z in self.elements)

    def n_ao(self, Z) -> int:
        return sum(self.n_ao_element(z) for z in np.asarray(Z) if z > 0)

    def molecule_shells(self, Z) -> tuple:
        """The l of every shell of the molecule Z (real atoms), in AO order."""
        return tuple(l for z in np.asarray(Z) if z > 0 for l in self.element_shells(z))

    def atom_offsets(self, Z) -> np.ndarray:
        """[A + 1] AO offsets of the atoms of Z (padding atoms get no AOs)."""
        n = [self.n_ao_element(z) if z > 0 else 0 for z in np.asarray(Z)]
        return np.concatenate([[0], np.cumsum(n)]).astype(np.int64)


# ---- rotations --------------------------------------------------------------------------------
def wigner_d_pyscf(l: int, Q) -> jnp.ndarray:
    """[2l+1, 2l+1] real Wigner-D of the 3x3 orthogonal matrix Q (det +-1) in PySCF's real spherical order:
    an AO function of angular momentum l centred on a rotated molecule is D^l (this matrix) times the
    unrotated ones. Inversion acts as (-1)^l."""
    import e3nn_jax as e3nn

    A = jnp.asarray(A_E3NN_TO_PYSCF[l], dtype=jnp.asarray(Q).dtype)
    D = e3nn.Irrep(l, (-1) ** l).D_from_matrix(jnp.asarray(Q))
    return A @ D @ A.T


def ao_rotation(shell_ls: tuple, Q, n_ao_pad: int | None = None) -> jnp.ndarray:
    """[n_ao, n_ao] block-diagonal AO rotation of a molecule with shells `shell_ls` (static) under Q:
    H' = D H D^T, S' = D S D^T, C' = D C. Padded to n_ao_pad with the identity."""
    blocks = {l: wigner_d_pyscf(l, Q) for l in set(shell_ls)}
    n = sum(2 * l + 1 for l in shell_ls)
    n_pad = n if n_ao_pad is None else n_ao_pad
    D = jnp.eye(n_pad, dtype=jnp.asarray(Q).dtype)
    o = 0
    for l in shell_ls:
        D = D.at[o:o + 2 * l + 1, o:o + 2 * l + 1].set(blocks[l])
        o += 2 * l + 1
    return D


def random_rotation(key, dtype=jnp.float32, inversion: bool = True):
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix), times -1 with probability 1/2 if asked."""
    k1, k2 = jax.random.split(key)
    q, r = jnp.linalg.qr(jax.random.normal(k1, (3, 3), dtype))
    q = q * jnp.sign(jnp.diag(r))[None, :]
    q = q * jnp.sign(jnp.linalg.det(q))
    if inversion:
        q = q * jnp.where(jax.random.bernoulli(k2), -1.0, 1.0).astype(dtype)
    return q


# ---- from H and S to orbitals and properties ----------------------------------------------------
def pad_h_s(H, S, ao_mask):
    """H and S with padded AO rows/columns (ao_mask False) replaced by PAD_ENERGY_HA x identity and the
    identity: the padded eigenvalues sort last and leave the real ones unchanged."""
    m2 = ao_mask[..., :, None] & ao_mask[..., None, :]
    eye = jnp.eye(H.shape[-1], dtype=H.dtype)
    pad = ~ao_mask[..., :, None] & eye.astype(bool)
    return jnp.where(m2, H, jnp.where(pad, PAD_ENERGY_HA, 0.0)), jnp.where(m2, S, jnp.where(pad, 1.0, 0.0))


def generalized_eigh(H, S):
    """(eps [n], C [n, n]) of H C = S C eps (ascending eps; C S-orthonormal), through the Cholesky factor of S.
    One molecule; vmap for a batch. H and S symmetric, S positive definite."""
    H = 0.5 * (H + H.T)
    S = 0.5 * (S + S.T)
    L = jnp.linalg.cholesky(S)
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(S.shape[0], dtype=S.dtype), lower=True)
    eps, U = jnp.linalg.eigh(Linv @ H @ Linv.T)
    return eps, Linv.T @ U


@jax.custom_vjp
def generalized_eigvalsh(H, S):
    """eps [n] of H C = S C eps (ascending), differentiable through the eigenvalues alone: d eps_k = c_k^T dH c_k
    - eps_k c_k^T dS c_k (Hellmann-Feynman, c_k S-normalised). A loss on orbital energies trains through it (the
    eigenvalue part of WALoss-type losses) without the eigenvector derivative of jnp.linalg.eigh, whose
    1 / (eps_j - eps_k) factors are large for the near-degenerate virtual orbitals of a half-trained H."""
    return generalized_eigh(H, S)[0]


def _eigvalsh_fwd(H, S):
    eps, C = generalized_eigh(H, S)
    return eps, (eps, C)


def _eigvalsh_bwd(res, g):
    eps, C = res
    dH = jnp.einsum("ik,k,jk->ij", C, g, C)
    return dH, -jnp.einsum("ik,k,jk->ij", C, g * eps, C)


generalized_eigvalsh.defvjp(_eigvalsh_fwd, _eigvalsh_bwd)


def n_occupied(Z, charge: int = 0) -> int:
    """Doubly occupied orbitals of a closed-shell molecule (real atoms of Z)."""
    n_el = int(np.sum(np.asarray(Z))) - int(charge)
    if n_el % 2:
        raise DataError(f"{n_el} electrons: a closed-shell (restricted) Hamiltonian needs an even number")
    return n_el // 2


def properties(H, S, n_occ: int, ao_r_bohr=None, Z=None, R_ang=None) -> dict:
    """Everything that follows from one molecule's H and S (Ha): orbital energies eps (Ha), coefficients C,
    HOMO, LUMO and gap (Ha), the density matrix P (2 per occupied orbital) and, given the AO dipole integrals
    <mu| r |nu> [3, n, n] (bohr, origin 0) with the nuclei (Z, R in Å), the dipole moment (Debye)."""
    from .units import BOHR_ANG

    eps, C = generalized_eigh(H, S)
    C_occ = C[:, :n_occ]
    P = 2.0 * C_occ @ C_occ.T
    out = {"eps": eps, "C": C, "homo": eps[n_occ - 1], "lumo": eps[n_occ], "gap": eps[n_occ] - eps[n_occ - 1],
           "P": P}
    if ao_r_bohr is not None:
        nuc = jnp.sum(jnp.asarray(Z, H.dtype)[:, None] * jnp.asarray(R_ang, H.dtype), axis=0) / BOHR_ANG
        elec = -jnp.einsum("xij,ji->x", ao_r_bohr, P)
        out["dipole_debye"] = (nuc + elec) * DEBYE_PER_AU
    return out


def orbital_similarity(C_pred, C_ref, S, n: int):
    """[n] |cos| between predicted and reference orbitals k < n in the S metric (1: the same orbital up to its
    sign), SchNOrb's orbital similarity."""
    num = jnp.abs(jnp.einsum("ik,ij,jk->k", C_pred[:, :n], S, C_ref[:, :n]))
    norm = lambda C: jnp.sqrt(jnp.einsum("ik,ij,jk->k", C[:, :n], S, C[:, :n]))  # noqa: E731
    return num / (norm(C_pred) * norm(C_ref))
