"""GDML and sGDML: energy-conserving kernel force fields (Chmiela et al. 2017, 2018).

(~650 lines on purpose: descriptor, Hessian-kernel tiles, the dense and matrix-free solvers and the
prediction share the descriptor layout and the pair coefficients; split apart, each piece would have to
restate them. The model family's spec is jaxqc/models/gdml.py.)

One molecule of N atoms (fixed order), descriptor x(R) [D = N(N-1)/2] = inverse pairwise distances
1/|r_i - r_j| (i < j, 1/Å). Scalar Matérn-5/2 kernel on descriptors, with s = sqrt(5)/sigma and
d = |x - x'|:

    k(x, x') = (1 + s d + (s d)^2 / 3) exp(-s d)

sGDML sums it over a permutation group {P} of the molecule (symmetries.find_permutations), so
k_sym(R, R') = sum_P k(x(R), x(P R')) is invariant under every P; GDML is the group {identity}.

Forces are a Gaussian process with the kernel's Hessian: the force-force block between two geometries is
K(R, R') = d^2 k_sym / dR dR'^T [3N, 3N]. Training solves (K + lambda I) alpha = dE/dR = -F over all M
training geometries ((3N M) x (3N M), Cholesky, float64). The model is an energy,

    E(R) = sum_m alpha_m . d k_sym(R, R_m) / dR'_m + c,

whose gradient is the force expansion: dE/dR = sum_m K(R, R_m) alpha_m. With the descriptor Jacobian
J(R) = dx/dR [D, 3N] this is, per training point m and permutation P (centre x_c = x(P R_m), descriptor
coefficient beta_c = J(P R_m)-contracted alpha_m = (J_m alpha_m)[P]),

    E(R) = c + s^2/3 sum_c (1 + s d_c) exp(-s d_c) (x(R) - x_c) . beta_c,

the energy predictor below (`energy`); forces are only ever `-jax.grad` of it (potential.forces_fn).
The integration constant c is the mean of E_train - E(R_train) at c = 0, as in sGDML.

Kernel blocks, fast form (descriptor space): with r = x - x', t = s d,
    d^2 k / dx dx'^T = a I + b r r^T,   a = s^2/3 (1 + t) e^-t,   b = -s^4/3 e^-t,
    K(R, R') = sum_P J(R)^T (a I + b r r^T) J(P R'),
computed for tiles of training points at once (`force_tile`); `force_block_naive` is the same block as
jax.jacfwd(jax.jacrev(k_sym)) and the tests hold the two to 1e-10.
Units: Å, kcal/mol, kcal/mol/Å; sigma in 1/Å (descriptor units).
"""
from __future__ import annotations

import dataclasses
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from ..data import splits
from ..data.graph import safe_sqrt
from ..data.molecules import Dataset, Molecules
from ..errors import DataError, JaxqcError
from ..metrics import mae_rmse
from ..potential import energy_and_forces_fn, forces_fn
from .linalg import memory_budget_bytes, regularized_solve
from .symmetries import find_permutations

SQRT5 = float(np.sqrt(5.0))
SMALL_T2 = 1e-8  # below (s d)^2 = 1e-8 the Matérn kernel is evaluated by its Taylor series (exact 2nd derivatives)
KINDS = ("gdml", "sgdml")
SOLVERS = ("auto", "dense", "cg")
DENSE_MAX_DIM = 8_192  # auto: dense Cholesky up to this many unknowns (3N M); above it CG is faster here
UNITS = {"R": "Å", "E": "kcal/mol", "F": "kcal/mol/Å", "descriptor": "1/Å", "sigma": "1/Å"}


@dataclasses.dataclass(frozen=True)
class GDMLConfig:
    symmetric: bool = False                 # sGDML: symmetrise the kernel over the detected permutations
    sigmas: tuple = (2.0, 5.0, 10.0, 20.0, 30.0, 50.0, 70.0, 100.0)  # kernel widths (1/Å) tried on validation
    lam: float = 1e-10                      # regulariser added to the kernel diagonal
    select_on: str = "forces_mae"           # validation metric that picks sigma: forces_mae | forces_rmse | energy_mae
    max_sym_frames: int = 1000              # training frames used to detect symmetries (sGDML: 1000)
    tile_elements: int = 2**22              # kernel tile budget: (tile * 3N)^2 entries (32 MB in float64)
    predict_batch: int = 64                 # geometries per jitted prediction call
    centre_chunk: int = 1024                # training centres per step of the prediction scan
    solver: str = "auto"                    # dense (Cholesky) | cg (matrix-free) | auto (dense up to DENSE_MAX_DIM, if it fits)
    cg_tol: float = 1e-4                    # CG stops at |K alpha - y| / |y| below this (sgdml's iterative solver: 1e-4)
    cg_rank: int = 2500                     # max Nyström preconditioner columns: min(cg_rank, max(500, 3N M / 10)), whole frames
    cg_maxiter: int = 2000


# ---- descriptor ---------------------------------------------------------------------------------
def pair_indices(n_atoms: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j) [D] of the pairs i < j, in the order of the descriptor (upper triangle, row by row)."""
    return np.triu_indices(n_atoms, 1)


def descriptor(R):
    """x [D] inverse pairwise distances 1/|r_i - r_j| (i < j, 1/Å) of one molecule R [N, 3] Å.

    Coincident atoms (only ever padding) give 0, not inf."""
    i, j = pair_indices(R.shape[-2])
    diff = R[..., i, :] - R[..., j, :]  # [D, 3]
    q = jnp.sum(diff * diff, -1)
    pos = q > 0
    return jnp.where(pos, 1.0 / jnp.sqrt(jnp.where(pos, q, 1.0)), 0.0)


def descriptor_jacobian(R):
    """(x [D], J [D, 3N]) descriptor and its Jacobian dx/dR of one molecule R [N, 3]."""
    J = jax.jacfwd(descriptor)(R)  # [D, N, 3]
    return descriptor(R), J.reshape(J.shape[0], -1)


def descriptor_permutations(perms) -> np.ndarray:
    """[P, D] index arrays dp with x(R[p]) = x(R)[dp] for each atom permutation p [P, N]."""
    perms = np.atleast_2d(np.asarray(perms))
    n = perms.shape[1]
    i, j = pair_indices(n)
    index = np.zeros((n, n), np.int64)
    index[i, j] = index[j, i] = np.arange(len(i))
    return np.stack([index[p[i], p[j]] for p in perms])


# ---- Matérn 5/2 ------------------------------------------------------------------------------------
def matern52(x, xp, sigma):
    """k(x, x') = (1 + t + t^2/3) exp(-t), t = sqrt(5) |x - x'| / sigma: scalar, safe at x = x'.

    Near t = 0 the Taylor series 1 - t^2/6 + t^4/24 (error t^5/45) is used, so that value, gradient and
    Hessian are finite and correct there (a plain double-where would give a zero Hessian at t = 0)."""
    s = SQRT5 / sigma
    r = x - xp
    t2 = s * s * jnp.sum(r * r)
    small = t2 < SMALL_T2
    t2_safe = jnp.where(small, 1.0, t2)
    t = jnp.sqrt(t2_safe)
    exact = (1.0 + t + t2_safe / 3.0) * jnp.exp(-t)
    series = 1.0 - t2 / 6.0 + t2 * t2 / 24.0
    return jnp.where(small, series, exact)


def kernel_sym(R, Rp, sigma, perms):
    """k_sym(R, R') = sum_P k(x(R), x(R'[P])), scalar; perms [P, N] atom permutations."""
    x = descriptor(R)
    return sum(matern52(x, descriptor(Rp[p]), sigma) for p in np.asarray(perms))


def force_block_naive(R, Rp, sigma, perms=None):
    """[3N, 3N] d^2 k_sym / dR dR'^T by automatic differentiation (the reference for the fast form)."""
    perms = np.arange(R.shape[0])[None] if perms is None else perms
    H = jax.jacfwd(jax.jacrev(kernel_sym, argnums=0), argnums=1)(R, Rp, sigma, perms)  # [N, 3, N, 3]
    n3 = 3 * R.shape[0]
    return H.reshape(n3, n3)


@jax.jit
def force_tile(xi, Ji, xj, Jj, sigma, desc_perms):
    """[B1, 3N, B2, 3N] force-force blocks sum_P J_i^T (a I + b r r^T) J_j[P] between the geometries of
    two tiles: descriptors x [B, D], Jacobians J [B, D, 3N]; desc_perms [P, D] (descriptor_permutations).
    The sum over P is taken in descriptor space first (G_ij = sum_P a J_jP + b r (r^T J_jP), [D, 3N]) so
    that the large contraction with J_i happens once, not once per permutation."""
    s = SQRT5 / sigma

    def add_perm(G, dp):
        xjp, Jjp = xj[:, dp], Jj[:, dp, :]  # x(P R_j) [B2, D], J(P R_j) in R_j's atom order [B2, D, 3N]
        r = xi[:, None, :] - xjp[None, :, :]  # [B1, B2, D]
        t = s * jnp.sqrt(jnp.sum(r * r, -1))  # [B1, B2]
        e = jnp.exp(-t)
        a = s * s / 3.0 * (1.0 + t) * e
        b = -(s**4) / 3.0 * e
        v = jnp.einsum("jdq,ijd->ijq", Jjp, r)  # r^T J_jP [B1, B2, 3N]
        return G + a[:, :, None, None] * Jjp[None] + (b[:, :, None] * r)[..., None] * v[:, :, None, :], None

    G0 = jnp.zeros((xi.shape[0], xj.shape[0]) + Jj.shape[1:], xi.dtype)  # [B1, B2, D, 3N]
    G = jax.lax.scan(add_perm, G0, desc_perms)[0]
    return jnp.einsum("idp,ijdq->ipjq", Ji, G)


def force_block(R, Rp, sigma, perms=None):
    """[3N, 3N] force-force block between two geometries by the fast (descriptor-space) form."""
    perms = np.arange(R.shape[0])[None] if perms is None else perms
    xi, Ji = descriptor_jacobian(R)
    xj, Jj = descriptor_jacobian(Rp)
    blk = force_tile(xi[None], Ji[None], xj[None], Jj[None], sigma, jnp.asarray(descriptor_permutations(perms)))
    return blk[0, :, 0, :]


_descriptors = jax.jit(jax.vmap(descriptor_jacobian))


def descriptors(R) -> tuple[np.ndarray, np.ndarray]:
    """(x [M, D], J [M, D, 3N]) float64 host arrays for geometries R [M, N, 3]."""
    with jax.enable_x64(True):
        x, J = _descriptors(jnp.asarray(R, jnp.float64))
        return np.asarray(x), np.asarray(J)


def tile_size(n_atoms: int, budget: int) -> int:
    """Training points per kernel tile so that a [tile*3N, tile*3N] block has <= budget entries."""
    return int(max(1, min(256, np.sqrt(budget) // (3 * n_atoms))))


def kernel_matrix(x, J, sigma, perms, x_cols=None, J_cols=None, tile: int = 64, lower_only: bool = False,
                  progress: str | None = None) -> np.ndarray:
    """[M1*3N, M2*3N] float64 force-force kernel, rows = geometries (x, J), columns = (x_cols, J_cols)
    (default: the rows again). Row index m*3N + 3a + k (geometry m, atom a, axis k). With
    `lower_only` (square case) only the tiles on and below the diagonal are filled (enough for Cholesky)."""
    symmetric = x_cols is None
    x_cols, J_cols = (x, J) if symmetric else (x_cols, J_cols)
    m1, m2, n3 = len(x), len(x_cols), J.shape[-1]
    out = np.zeros((m1 * n3, m2 * n3)) if lower_only else np.empty((m1 * n3, m2 * n3))

    def pad(a, n):  # repeat the first rows so that every tile has the same shape (one compilation)
        return a if len(a) == n else np.concatenate([a, np.repeat(a[:1], n - len(a), 0)])

    starts1, starts2 = range(0, m1, tile), range(0, m2, tile)
    t0, last, done, total = time.perf_counter(), 0.0, 0, len(starts1) * len(starts2)
    with jax.enable_x64(True):
        dp = jnp.asarray(descriptor_permutations(perms))
        sig = jnp.asarray(sigma, jnp.float64)
        cols = [(jnp.asarray(pad(x_cols[j:j + tile], tile)), jnp.asarray(pad(J_cols[j:j + tile], tile)))
                for j in starts2]
        for i in starts1:
            xi, Ji = jnp.asarray(pad(x[i:i + tile], tile)), jnp.asarray(pad(J[i:i + tile], tile))
            bi = min(tile, m1 - i)
            for jb, j in enumerate(starts2):
                done += 1
                if symmetric and j > i:  # upper tiles: K is symmetric (filled from below unless lower_only)
                    continue
                bj = min(tile, m2 - j)
                blk = np.asarray(force_tile(xi, Ji, cols[jb][0], cols[jb][1], sig, dp))
                blk = blk[:bi, :, :bj, :].reshape(bi * n3, bj * n3)
                out[i * n3:(i + bi) * n3, j * n3:(j + bj) * n3] = blk
                if symmetric and j < i and not lower_only:
                    out[j * n3:(j + bj) * n3, i * n3:(i + bi) * n3] = blk.T
            now = time.perf_counter()
            if progress and (now - last > 2.0 or i + tile >= m1):
                print(f"\r  {progress}: {100 * done / total:5.1f}% ({now - t0:.1f} s)", end="", file=sys.stderr,
                      flush=True)
                last = now
    if progress:
        print(file=sys.stderr)
    return out


# ---- matrix-free kernel products (the CG solver) -----------------------------------------------------
def _pair_coefficients(x, xx, xc, s):
    """(a, b) [B, chunk] of the descriptor-space Hessian a I + b r r^T between x [B, D] and centres xc."""
    d2 = jnp.maximum(xx[:, None] + jnp.sum(xc * xc, -1)[None, :] - 2.0 * x @ xc.T, 0.0)
    t = s * jnp.sqrt(d2)
    e = jnp.exp(-t)
    return s * s / 3.0 * (1.0 + t) * e, -(s**4) / 3.0 * e


def _apply_pair_coefficients(g, x, a, b, xc, bc):
    """g + sum_c a_c beta_c + b_c r_c (r_c . beta_c), r_c = x - x_c, for one chunk of centres."""
    w = b * (x @ bc.T - jnp.sum(xc * bc, -1)[None, :])  # b_c (r_c . beta_c) [B, chunk]
    return g + a @ bc + jnp.sum(w, -1)[:, None] * x - w @ xc


@jax.jit
def descriptor_kernel_product(x, centres, betas, sigma):
    """g [B, D] = sum_c (a_c I + b_c r_c r_c^T) beta_c with r_c = x - x_c: the descriptor-space Hessian kernel
    of geometries x [B, D] against centres x_c with coefficients beta_c ([n_chunks, chunk, D], make_params).
    This is dE/dx of the energy predictor, written out as GEMMs per chunk of centres."""
    s = SQRT5 / sigma
    xx = jnp.sum(x * x, -1)

    def add_chunk(g, chunk):
        xc, bc = chunk
        a, b = _pair_coefficients(x, xx, xc, s)
        return _apply_pair_coefficients(g, x, a, b, xc, bc), None

    return jax.lax.scan(add_chunk, jnp.zeros_like(x), (centres, betas))[0]


@jax.jit
def pair_coefficients(x, centres, sigma):
    """(a, b) [n_chunks, B, chunk]: the pair coefficients of descriptor_kernel_product, stored once so that
    repeated products (CG iterations) skip the distances and exponentials."""
    s = SQRT5 / sigma
    xx = jnp.sum(x * x, -1)
    return jax.lax.map(lambda xc: _pair_coefficients(x, xx, xc, s), centres)


@jax.jit
def descriptor_kernel_product_stored(x, centres, betas, a, b):
    """descriptor_kernel_product with the pair coefficients (a, b) from pair_coefficients."""
    def add_chunk(g, chunk):
        xc, bc, ac, bcoef = chunk
        return _apply_pair_coefficients(g, x, ac, bcoef, xc, bc), None

    return jax.lax.scan(add_chunk, jnp.zeros_like(x), (centres, betas, a, b))[0]


class KernelOperator:
    """v -> (K + lam I) v for the (3N M)^2 training kernel without storing it: alpha is moved to descriptor
    space (beta_m = J_m alpha_m), the centres' products are summed (descriptor_kernel_product) and moved
    back (J_m^T g_m). O(M^2 P D) work per product, in float64. The M x (M P) pair coefficients are stored
    when they take at most `store_bytes` (then a product is three GEMMs per chunk), else recomputed."""

    def __init__(self, x, J, perms, sigma: float, lam: float, chunk: int = 1024, store_bytes: float = 2**30):
        self.x, self.J, self.perms, self.sigma, self.lam = x, J, perms, sigma, lam
        self.shape = J.shape[0], J.shape[-1]
        centres = make_params(x, np.zeros(x.shape), perms, sigma, chunk=chunk)["centres"]
        self.chunk = centres.shape[1]
        self.dp = descriptor_permutations(perms)
        with jax.enable_x64(True):
            self._xd, self._Jd, self._centres = jnp.asarray(x), jnp.asarray(J), jnp.asarray(centres)
            self._ab = None
            if 16 * len(x) * centres.shape[0] * centres.shape[1] <= store_bytes:
                self._ab = pair_coefficients(self._xd, self._centres, jnp.float64(sigma))

    def __call__(self, V: np.ndarray) -> np.ndarray:
        V = np.asarray(V, np.float64)
        cols = V.reshape(len(V), -1)
        out = np.empty_like(cols)
        with jax.enable_x64(True):
            for k in range(cols.shape[1]):
                beta = descriptor_coefficients(self.J, cols[:, k].reshape(self.shape))[:, self.dp].reshape(-1, self.x.shape[1])
                pad = self._centres.shape[0] * self.chunk - len(beta)
                betas = jnp.asarray(np.concatenate([beta, np.zeros((pad, beta.shape[1]))]).reshape(self._centres.shape))
                if self._ab is None:
                    g = descriptor_kernel_product(self._xd, self._centres, betas, jnp.float64(self.sigma))
                else:
                    g = descriptor_kernel_product_stored(self._xd, self._centres, betas, *self._ab)
                out[:, k] = np.asarray(jnp.einsum("mdq,md->mq", self._Jd, g)).reshape(-1)
        return (out + self.lam * cols).reshape(V.shape)


def inducing_frames(n_frames: int, n3: int, rank: int, seed: int = 0) -> np.ndarray:
    """Sorted seeded random training frames whose 3N kernel columns sketch K (about `rank` columns)."""
    m = int(min(n_frames, max(1, rank // n3)))
    return np.sort(np.random.default_rng(seed).choice(n_frames, m, replace=False))


@jax.jit
def _self_blocks(x, J, sigma, desc_perms):
    """[B, 3N, 3N] the kernel block of each geometry with itself."""
    one = lambda xi, Ji: force_tile(xi[None], Ji[None], xi[None], Ji[None], sigma, desc_perms)[0, :, 0, :]  # noqa: E731
    return jax.vmap(one)(x, J)


def self_blocks(x, J, sigma: float, perms, batch: int = 64) -> np.ndarray:
    """[M, 3N, 3N] float64 diagonal blocks K(R_m, R_m) of the training kernel."""
    out = np.empty((len(x), J.shape[-1], J.shape[-1]))
    with jax.enable_x64(True):
        dp = jnp.asarray(descriptor_permutations(perms))
        for s in range(0, len(x), batch):
            idx = np.minimum(np.arange(s, s + batch), len(x) - 1)  # pad with the last frame: one shape
            blk = _self_blocks(jnp.asarray(x[idx]), jnp.asarray(J[idx]), jnp.float64(sigma), dp)
            out[s:s + batch] = np.asarray(blk)[:len(x) - s]
    return out


def solve_cg(x, J, y, perms, sigma: float, config: GDMLConfig, seed: int = 0, progress: bool = False):
    """alpha [M*3N] of (K + lam I) alpha = y by CG, K applied matrix-free (KernelOperator), preconditioned
    by the Nyström approximation from the kernel columns of inducing training frames plus the exact
    3N x 3N self-blocks of every frame (cg.BlockNystromPreconditioner). Returns (alpha, info)."""
    from .cg import BlockNystromPreconditioner, pcg

    m, n3 = J.shape[0], J.shape[-1]
    t0 = time.perf_counter()
    S = inducing_frames(m, n3, min(config.cg_rank, max(500, m * n3 // 10)), seed)
    columns = kernel_matrix(x, J, sigma, perms, x_cols=x[S], J_cols=J[S], tile=tile_size(n3 // 3, config.tile_elements))
    idx = (S[:, None] * n3 + np.arange(n3)).reshape(-1)
    pre = BlockNystromPreconditioner(columns, idx, self_blocks(x, J, sigma, perms), config.lam)
    del columns
    t1 = time.perf_counter()
    op = KernelOperator(x, J, perms, sigma, config.lam, config.centre_chunk)
    alpha, info = pcg(op, y, pre, config.cg_tol, config.cg_maxiter, progress)
    if not info["converged"]:
        raise JaxqcError(f"CG did not reach relative residual {config.cg_tol:g} in {config.cg_maxiter} iterations "
                         f"(at {info['residual']:.2e}); raise cg_maxiter or cg_rank")
    info.update(inducing_frames=int(len(S)), rank=int(pre.rank), preconditioner_s=t1 - t0,
                cg_s=time.perf_counter() - t1)
    info.pop("history")
    return alpha[:, 0], info


def solve_dense(x, J, y, perms, sigma: float, lam: float, tile: int, progress: bool = False):
    """alpha [M*3N] of (K + lam I) alpha = y by Cholesky of the dense float64 kernel (lower triangle built)."""
    t = time.perf_counter()
    K = kernel_matrix(x, J, sigma, perms, tile=tile, lower_only=True,
                      progress=f"kernel sigma={sigma:g}" if progress else None)
    kernel_s = time.perf_counter() - t
    return regularized_solve(K, y, lam, what="GDML kernel"), {"kernel_s": kernel_s}


def choose_solver(n_frames: int, n3: int, solver: str = "auto", budget_bytes: int | None = None) -> str:
    """dense | cg. auto: dense when the (3N M)^2 float64 kernel fits in memory and has at most
    DENSE_MAX_DIM unknowns (beyond that the matrix-free CG is faster here and needs O(3N M) memory)."""
    if solver not in SOLVERS:
        raise JaxqcError(f"unknown solver {solver!r}; use one of {', '.join(SOLVERS)}")
    dim = n_frames * n3
    budget = memory_budget_bytes(fraction=0.9) if budget_bytes is None else budget_bytes
    fits = dim * dim * 8 <= budget
    if solver == "dense" and not fits:
        raise JaxqcError(f"the dense {dim} x {dim} GDML kernel needs {dim * dim * 8 / 2**30:.1f} GB, "
                         f"{budget / 2**30:.1f} GB are free; use the cg solver or fewer training frames")
    if solver == "auto":
        return "dense" if fits and dim <= DENSE_MAX_DIM else "cg"
    return solver


# ---- the energy model ------------------------------------------------------------------------------
def descriptor_coefficients(J_train, alpha) -> np.ndarray:
    """beta [M, D] = J_m alpha_m: the coefficients alpha [M, 3N] of dE/dR moved to descriptor space."""
    return np.einsum("mdq,mq->md", J_train, alpha)


def make_params(x_train, beta, perms, sigma: float, c: float = 0.0, chunk: int = 1024) -> dict:
    """Prediction parameters from training descriptors x [M, D], descriptor coefficients beta [M, D]
    (descriptor_coefficients) and the group perms [P, N]: centres x(P R_m) = x_m[P] and their
    coefficients beta_m[P], both [n_chunks, chunk, D] (zero-padded: beta = 0 adds nothing)."""
    dp = descriptor_permutations(perms)  # [P, D]
    centres = x_train[:, dp].reshape(-1, x_train.shape[1])  # [M*P, D]
    betas = beta[:, dp].reshape(-1, x_train.shape[1])
    n_chunks = -(-len(centres) // max(1, chunk))
    chunk = -(-len(centres) // n_chunks)  # equal chunks of at most `chunk`: 1,200 centres -> 2 x 600, not 2 x 1024
    n_pad = -len(centres) % chunk
    centres = np.concatenate([centres, np.repeat(centres[:1], n_pad, 0)]).reshape(-1, chunk, centres.shape[1])
    betas = np.concatenate([betas, np.zeros((n_pad, betas.shape[1]))]).reshape(-1, chunk, betas.shape[1])
    return {"centres": centres, "beta": betas, "sigma": np.float64(sigma), "c": np.float64(c)}


def energy_from_descriptors(params, x):
    """E [B] kcal/mol from descriptors x [B, D]: c + s^2/3 sum_c (1 + t_c) e^-t_c (x - x_c).beta_c."""
    s = SQRT5 / params["sigma"]
    xx = jnp.sum(x * x, -1)  # [B]

    def add_chunk(acc, chunk):
        xc, bc = chunk  # [chunk, D]
        d2 = jnp.maximum(xx[:, None] + jnp.sum(xc * xc, -1)[None, :] - 2.0 * x @ xc.T, 0.0)  # [B, chunk]
        t = s * safe_sqrt(d2)
        proj = x @ bc.T - jnp.sum(xc * bc, -1)[None, :]  # (x - x_c) . beta_c [B, chunk]
        return acc + jnp.sum((1.0 + t) * jnp.exp(-t) * proj, -1), None

    acc = jax.lax.scan(add_chunk, jnp.zeros(x.shape[0], x.dtype), (params["centres"], params["beta"]))[0]
    return params["c"] + s * s / 3.0 * acc


def energy(params, molecules: Molecules):
    """E [batch] kcal/mol of a `Molecules` batch (all with the model's N atoms, in its atom order).
    Run under float64 (jax.enable_x64) for the accuracy the fit has."""
    return energy_from_descriptors(params, jax.vmap(descriptor)(molecules.R))


forces = forces_fn(energy)                        # F [batch, N, 3] kcal/mol/Å = -dE/dR
energy_and_forces = energy_and_forces_fn(energy)  # (E, F) in one pass
_energy_and_forces_jit = jax.jit(energy_and_forces)


def predict(params, R, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(E [M] kcal/mol, F [M, N, 3] kcal/mol/Å) float64 for geometries R [M, N, 3] Å, in jitted batches
    of `batch` frames, or of the next power of two when fewer (the last batch padded): a few fixed shapes,
    so a new set of geometries does not recompile."""
    R = np.asarray(R, np.float64)
    m, n = R.shape[:2]
    E, F = np.empty(m), np.empty((m, n, 3))
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(jnp.asarray, params)
        b = min(batch, 1 << max(0, m - 1).bit_length())
        for s in range(0, m, b):
            k = min(b, m - s)
            Rb = np.concatenate([R[s:s + k], np.repeat(R[s:s + 1], b - k, 0)])
            mol = Molecules(Z=jnp.ones((b, n), jnp.int32), R=jnp.asarray(Rb), mask=jnp.ones((b, n), bool),
                            mol_mask=jnp.arange(b) < k)
            e, f = _energy_and_forces_jit(p, mol)
            E[s:s + k], F[s:s + k] = np.asarray(e)[:k], np.asarray(f)[:k]
    return E, F


# ---- fit ---------------------------------------------------------------------------------------------
def remove_rigid_body_components(R, F) -> np.ndarray:
    """F [M, N, 3] minus its net force and net torque per geometry (projection onto the complement of the
    six rigid-body motions of R [M, N, 3]). No function of the interatomic distances has a gradient with
    such components, so they lie in the kernel's null space; solving without them keeps alpha free of
    1/lambda-sized coefficients (the labels' own net torque is numerical noise of the reference method)."""
    R, F = np.asarray(R, np.float64), np.asarray(F, np.float64)
    out = np.empty_like(F)
    eye = np.eye(3)
    for m in range(len(R)):
        r = R[m] - R[m].mean(0)  # [N, 3]
        trans = np.broadcast_to(eye[:, None, :], (3, len(r), 3))  # [3, N, 3]
        rot = np.cross(eye[:, None, :], r[None, :, :])  # e_k x r [3, N, 3]
        basis = np.concatenate([trans, rot]).reshape(6, -1).T  # [3N, 6]
        q = np.linalg.qr(basis)[0]
        f = F[m].reshape(-1)
        out[m] = (f - q @ (q.T @ f)).reshape(F[m].shape)
    return out


def metrics(E_pred, F_pred, E_true, F_true) -> dict:
    """Energy MAE/RMSE (kcal/mol) and force-component MAE/RMSE (kcal/mol/Å)."""
    out = {}
    if E_true is not None:
        out.update({f"energy_{k}": v for k, v in mae_rmse(E_pred, E_true).items()})
    out.update({f"forces_{k}": v for k, v in mae_rmse(F_pred, F_true).items()})
    return out


def fit(R_train, F_train, E_train, R_valid, F_valid, E_valid, perms, config: GDMLConfig,
        progress: bool = False) -> dict:
    """Closed-form fit for each sigma of the grid; sigma picked by `config.select_on` on the validation
    geometries. R [M, N, 3] Å, F [M, N, 3] kcal/mol/Å, E [M] kcal/mol (E may be None: then c = 0)."""
    timings = {}
    t = time.perf_counter()
    x, J = descriptors(R_train)
    timings["descriptors_s"] = time.perf_counter() - t
    m, n3 = J.shape[0], J.shape[-1]
    solver = choose_solver(m, n3, config.solver)
    y = -remove_rigid_body_components(R_train, F_train).reshape(m * n3)  # dE/dR, internal part
    tile = tile_size(n3 // 3, config.tile_elements)
    grid, best = [], None
    timings.update(kernel_s=0.0, solve_s=0.0, validation_s=0.0)
    for sigma in config.sigmas:
        t = time.perf_counter()
        try:
            if solver == "dense":
                alpha, info = solve_dense(x, J, y, perms, sigma, config.lam, tile, progress)
            else:
                alpha, info = solve_cg(x, J, y, perms, sigma, config, progress=progress)
            alpha = alpha.reshape(m, n3)
        except JaxqcError as err:
            if progress:
                print(f"  sigma={sigma:g}: {err}; skipped", file=sys.stderr)
            grid.append({"sigma": sigma, "error": str(err)})
            continue
        timings["solve_s"] += time.perf_counter() - t - info.get("kernel_s", 0.0)
        timings["kernel_s"] += info.get("kernel_s", 0.0)
        t = time.perf_counter()
        params = make_params(x, descriptor_coefficients(J, alpha), perms, sigma, 0.0, config.centre_chunk)
        c = 0.0
        if E_train is not None:
            E0, _ = predict(params, R_train, config.predict_batch)
            c = float(np.mean(np.asarray(E_train) - E0))
        params["c"] = np.float64(c)
        Ev, Fv = predict(params, R_valid, config.predict_batch)
        row = {"sigma": sigma, **metrics(Ev, Fv, E_valid, F_valid), **({"cg": info} if "iterations" in info else {})}
        timings["validation_s"] += time.perf_counter() - t
        grid.append(row)
        if progress:
            print(f"  sigma={sigma:g}: validation force MAE {row['forces_mae']:.4g} kcal/mol/Å"
                  + (f", energy MAE {row['energy_mae']:.4g} kcal/mol" if "energy_mae" in row else ""),
                  file=sys.stderr)
        if best is None or row[config.select_on] < best[0][config.select_on]:
            best = (row, alpha, c)
    if best is None:
        raise JaxqcError(f"no sigma in {config.sigmas} gave a solution: {grid[-1]['error']}")
    row, alpha, c = best
    return {"alpha": alpha, "sigma": row["sigma"], "c": c, "lam": config.lam, "grid": grid, "solver": solver,
            "validation": row, "timings": timings}


# ---- the model: train on a Dataset, save, load, predict ----------------------------------------------
def check_molecule(data: Dataset, z, where: str = "data") -> None:
    """One-line DataError unless every frame of `data` is the molecule z [N] in the same atom order."""
    z = np.asarray(z)
    if data.max_atoms != len(z) or np.any(data.n_atoms != len(z)):
        raise DataError(f"{where}: frames with {sorted(set(data.n_atoms.tolist()))} atoms; the model is for "
                        f"{len(z)} atoms")
    if not np.all(data.Z == z[None]):
        from ..elements import SYMBOLS
        bad = int(np.argwhere(np.any(data.Z != z[None], 1))[0, 0])
        got = "".join(SYMBOLS[a] for a in data.Z[bad])
        raise DataError(f"{where}: frame {bad} has elements {got}; the model is for "
                        f"{''.join(SYMBOLS[a] for a in z)} (same atoms in the same order)")


def fit_molecule(data: Dataset, config: GDMLConfig, train_idx, valid_idx, seed: int = 0,
                 progress: bool = False) -> dict:
    """Symmetries (sGDML) and the closed-form fit on frames train_idx, sigma picked on valid_idx: the model
    dict of `fit` plus the molecule (z), its training geometries and permutations. One molecule in one atom
    order in every frame, with forces; every path that fits a GDML model goes through here."""
    if data.F is None:
        raise DataError("GDML needs forces: the data set has none")
    if len(data) == 0 or np.any(data.Z != data.Z[:1]):
        raise DataError("GDML needs frames of one molecule (same atoms, same order) in every frame")
    check_molecule(data, data.Z[0])
    tr, va = np.asarray(train_idx), np.asarray(valid_idx)
    if len(tr) < 1 or len(va) < 1:
        raise DataError(f"need at least one training and one validation frame (got {len(tr)}, {len(va)})")
    z = data.Z[0]
    t = time.perf_counter()
    if config.symmetric:
        perms, sym_info = find_permutations(z, data.R[tr], max_frames=config.max_sym_frames,
                                            seed=seed, return_info=True)
    else:
        perms, sym_info = np.arange(len(z))[None], {"n_perms": 1}
    t_sym = time.perf_counter() - t
    if progress:
        print(f"  {len(perms)} permutation(s)", file=sys.stderr)
    E = data.E
    model = fit(data.R[tr], data.F[tr], None if E is None else E[tr], data.R[va], data.F[va],
                None if E is None else E[va], perms, config, progress)
    model["timings"]["symmetries_s"] = t_sym
    model.update(z=z, R_train=data.R[tr], perms=perms, symmetry_info=sym_info)
    return model


def train_gdml(data: Dataset, config: GDMLConfig, n_train: int, n_valid: int | None = None, seed: int = 0,
               progress: bool = False) -> dict:
    """Seeded disjoint train/validation frames of `data`, symmetries (sGDML), sigma grid, closed-form fit."""
    if data.F is None:
        raise DataError("GDML needs forces: the data set has none")
    if len(data) == 0 or np.any(data.Z != data.Z[:1]):
        raise DataError("GDML needs frames of one molecule (same atoms, same order) in every frame")
    split = splits.for_gdml(data, n_train, n_valid, seed)
    model = fit_molecule(data, config, split["train"], split["valid"], seed, progress)
    model.update(kind="sgdml" if config.symmetric else "gdml", config=config, split=split, dataset_md5=data.md5,
                 dataset_name=data.meta.get("name"), seed=seed)
    return model


def model_params(model: dict) -> dict:
    """Prediction parameters (make_params) of a trained or loaded model dict."""
    x, J = descriptors(model["R_train"])
    beta = descriptor_coefficients(J, np.asarray(model["alpha"]).reshape(len(x), -1))
    return make_params(x, beta, model["perms"], model["sigma"], model["c"], model["config"].centre_chunk)


def save_gdml(model: dict, path) -> None:
    from ..potential import save_model

    params = {"z": np.asarray(model["z"]), "R_train": np.asarray(model["R_train"]),
              "alpha": np.asarray(model["alpha"]).reshape(np.shape(model["R_train"])),
              "perms": np.asarray(model["perms"]), "sigma": np.float64(model["sigma"]), "c": np.float64(model["c"])}
    config = {**dataclasses.asdict(model["config"]), "sigma": model["sigma"], "lam_used": model["lam"],
              "grid": model["grid"], "n_perms": int(len(model["perms"])),
              "solver_used": model.get("solver", "dense")}
    split = model["split"]
    prov = {"dataset_md5": model["dataset_md5"], "dataset_name": model["dataset_name"],
            "protocol": f"random disjoint train/valid split of the data set (seed {model['seed']})",
            "seed": model["seed"], "train_idx": np.asarray(split["train"]), "valid_idx": np.asarray(split["valid"]),
            "validation": model["validation"], "symmetries": model["symmetry_info"], "timings": model["timings"]}
    units = {**UNITS, "alpha": "kcal/mol/Å (coefficients of dE/dR)"}
    save_model(path, model["kind"], params, config, prov, units)


def load_gdml(path) -> dict:
    from ..potential import load_model

    kind, params, header = load_model(path)
    if kind not in KINDS:
        raise JaxqcError(f"{path}: a {kind} model, not a GDML/sGDML model")
    cfg = dict(header["config"])
    extra = {k: cfg.pop(k, None) for k in ("sigma", "lam_used", "grid", "n_perms", "solver_used")}
    fields = {f.name for f in dataclasses.fields(GDMLConfig)}
    config = GDMLConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in fields})
    fit_info = cfg.get("fit", {})
    extra = {k: fit_info.get(k) if extra[k] is None else extra[k] for k in extra}
    return {"kind": kind, "z": params["z"], "R_train": params["R_train"], "alpha": params["alpha"],
            "perms": params["perms"], "sigma": float(params["sigma"]), "c": float(params["c"]), "config": config,
            "lam": extra["lam_used"], "grid": extra["grid"], "solver": extra["solver_used"] or "dense",
            "provenance": header["provenance"],
            "units": header["units"]}


def predict_dataset(model: dict, data: Dataset, params: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(E [M], F [M, N, 3]) for every frame of `data` (checked to be the model's molecule)."""
    check_molecule(data, model["z"], where=str(data.meta.get("source") or data.meta.get("name") or "data"))
    params = model_params(model) if params is None else params
    return predict(params, data.R, model["config"].predict_batch)


# ---- sGDML model files (for parity with the reference implementation) --------------------------------
def params_from_sgdml(model) -> dict:
    """Prediction parameters from an sGDML model (npz or dict of the `sgdml` package): its training
    descriptors R_desc [D, M] and R_d_desc_alpha [M, D] (lower-triangle pair order), perms, sig, std, c."""
    z = np.asarray(model["z"])
    n = len(z)
    li, lj = np.tril_indices(n, -1)  # sGDML's pair order: (i > j)
    tril_index = np.zeros((n, n), np.int64)
    tril_index[li, lj] = tril_index[lj, li] = np.arange(len(li))
    i, j = pair_indices(n)
    to_ours = tril_index[i, j]  # our pair k is sGDML's pair to_ours[k]
    x = np.asarray(model["R_desc"], np.float64).T[:, to_ours]  # [M, D]
    std = float(model["std"]) if "std" in model else 1.0
    beta = np.asarray(model["R_d_desc_alpha"], np.float64)[:, to_ours] * std
    return make_params(x, beta, np.asarray(model["perms"]), float(model["sig"]), float(model["c"]))
