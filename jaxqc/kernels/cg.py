"""Preconditioned conjugate gradients for kernel systems (K + lambda I) alpha = Y, beyond the dense limit.

The dense route (linalg.regularized_solve) needs the N x N float64 kernel twice over (kernel + factor in
place: 8 N^2 bytes). When that does not fit, the kernel is applied as an operator:
  - `StoredKernel`: K kept once in float32 (4 N^2 bytes), products accumulated in float64;
  - `BlockedKernel`: nothing N x N is stored; every product recomputes the kernel in row blocks on the
    device from the representations (N^2 D work per product, the route for ~110k on an accelerator).
CG runs in float64 on the host with a multi-column right-hand side (every target at once, each column
with its own step sizes). Preconditioner: Nyström of rank r, from a random sketch (one extra block
product) or from inducing columns (GDML).
"""
from __future__ import annotations

import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from .base import _l1_block, _sq_block, distance_kind, kernel_from_distances, kernel_scale, pairwise_distances


class StoredKernel:
    """K stored once in float32; K @ V accumulated in float64 in row blocks."""

    def __init__(self, X, kernel: str, sigma: float, block_mb: float = 64.0):
        X32 = np.asarray(X, np.float32)
        D = pairwise_distances(X32, X32, distance_kind(kernel), block_mb)  # same object: symmetric blocks once
        self.K = kernel_from_distances(D, kernel, sigma, inplace=True)  # float32, one N x N array
        self.n = len(self.K)

    def __matmul__(self, V, rows: int = 2048):
        out = np.empty((self.n, V.shape[1]))
        for s in range(0, self.n, rows):
            out[s:s + rows] = self.K[s:s + rows].astype(np.float64) @ V
        return out



class BlockedKernel:
    """K @ V without storing K: each product recomputes kernel blocks on the device."""

    def __init__(self, X, kernel: str, sigma: float, rows: int = 1024):
        self.X = jnp.asarray(X)
        self.n, self.rows = len(X), rows
        dist = _l1_block if distance_kind(kernel) == "l1" else _sq_block
        scale = kernel_scale(kernel, sigma)

        @jax.jit
        def block_product(Xi, V):  # [rows, D], [N, T] -> [rows, T]
            return jnp.exp(scale * dist(Xi, self.X)) @ V

        self._block_product = block_product

    def __matmul__(self, V):
        Vd = jnp.asarray(V)
        out = np.empty((self.n, V.shape[1]), dtype=np.float64)
        for s in range(0, self.n, self.rows):
            Xi = self.X[s:s + self.rows]
            pad = self.rows - len(Xi)
            if pad:  # keep one block shape: one compilation
                Xi = jnp.concatenate([Xi, jnp.repeat(Xi[:1], pad, 0)])
            out[s:s + self.rows] = np.asarray(self._block_product(Xi, Vd))[: self.rows - pad]
        return out


class NystromPreconditioner:
    """Nyström preconditioner (Frangella, Tropp & Udell 2023) for K + mu I.

    From a sketch Y = K Omega [n, r] and its core Omega^T K Omega [r, r] it forms K ~ U diag(lam_hat) U^T
    and applies P^-1 = U diag((lam_hat_r + mu) / (lam_hat + mu)) U^T + (I - U U^T). Unlike a Woodbury
    inverse of the same approximation it stays well conditioned for tiny mu (KRR 1e-6, GDML 1e-10).
    Built by `randomized` (Omega = r orthonormal Gaussian columns, one block product with K)."""

    def __init__(self, Y: np.ndarray, core: np.ndarray, omega_core_shift: Callable, mu: float, shift: float):
        # Y + shift Omega and Omega^T Y + shift I: a tiny shift keeps the core safely positive definite.
        # With core = C C^T, K ~ B B^T for B = Y C^-T = U S W^T (W, S from eigh of B^T B). U = B W S^-1 is
        # applied through B and never formed. Large LAPACK calls are unsafe here (see linalg.py); the
        # factorisations below are r x r, the [n, r] work is GEMMs and one triangular solve.
        Y = omega_core_shift(Y, shift)
        C = np.linalg.cholesky(0.5 * (core + core.T) + shift * np.eye(len(core)))
        B = scipy.linalg.solve_triangular(C, Y.T, lower=True).T  # [n, r]
        del Y
        ev, W = np.linalg.eigh(B.T @ B)
        keep = ev > ev.max() * 1e-14
        sv = np.sqrt(ev[keep])[::-1]
        self.B = B
        self.T = W[:, keep][:, ::-1] / sv  # [r, k]: U = B T
        self.lam_hat = np.maximum(sv**2 - shift, 0.0)
        self.mu = mu
        self.scale = (self.lam_hat[-1] + mu) / (self.lam_hat + mu)  # [k]

    @staticmethod
    def _shift(Y):
        return np.finfo(np.float64).eps * np.sqrt(len(Y)) * np.sqrt(np.abs(Y).sum(0).max() * np.abs(Y).sum(1).max())

    @classmethod
    def randomized(cls, matmul: Callable, n: int, mu: float, rank: int = 500, seed: int = 0):
        """Sketch with `rank` random orthonormal columns: one product K @ Omega through `matmul`."""
        rank = min(rank, n)
        omega = np.random.default_rng(seed).standard_normal((n, rank))
        omega = scipy.linalg.solve_triangular(np.linalg.cholesky(omega.T @ omega), omega.T, lower=True).T
        Y = matmul(omega)  # [n, r] = K Omega
        shift = cls._shift(Y)
        return cls(Y, omega.T @ Y, lambda Y, sh: Y + sh * omega, mu, shift)

    def __call__(self, V):
        V2 = V[:, None] if V.ndim == 1 else V
        UtV = self.T.T @ (self.B.T @ V2)  # [k, T]
        out = self.B @ (self.T @ ((self.scale[:, None] - 1.0) * UtV)) + V2
        return out[:, 0] if V.ndim == 1 else out


class BlockNystromPreconditioner:
    """P = B B^T + blockdiag(K_bb - B_b B_b^T) + delta I for K + mu I, applied by Woodbury.

    B B^T = K[:, S] K[S, S]^-1 K[S, :] is the Nyström approximation from the kernel columns of inducing
    indices S; the block diagonal puts back what it misses inside each block of `block` rows (for GDML:
    the 3N x 3N self-kernel of every training geometry). A kernel with a heavy eigenvalue tail needs far
    fewer CG iterations with the blocks than with the low-rank part alone (aspirin, N = 200: 161 instead of
    more than 2000). delta = max(mu, 1e-8 x mean diagonal) keeps every block safely invertible."""

    def __init__(self, columns: np.ndarray, idx: np.ndarray, diag_blocks: np.ndarray, mu: float):
        n, r = columns.shape
        nb, bs = diag_blocks.shape[:2]
        core = columns[np.asarray(idx)]
        shift = 1e-12 * np.trace(core) / r
        L = np.linalg.cholesky(0.5 * (core + core.T) + shift * np.eye(r))
        B = scipy.linalg.solve_triangular(L, columns.T, lower=True).T  # [n, r], K ~ B B^T
        Bb = B.reshape(nb, bs, r)
        mean_diag = float(np.mean(np.diagonal(diag_blocks, axis1=1, axis2=2)))
        self.delta = max(mu, 1e-8 * mean_diag)
        resid = diag_blocks - Bb @ np.swapaxes(Bb, 1, 2) + self.delta * np.eye(bs)
        Lb = np.linalg.cholesky(0.5 * (resid + np.swapaxes(resid, 1, 2)))
        Lb_inv = np.linalg.inv(Lb)
        self.D_inv = np.swapaxes(Lb_inv, 1, 2) @ Lb_inv  # (L L^T)^-1 = L^-T L^-1, [nb, bs, bs]
        self.B = B
        self.DB = self._block_solve(B)
        inner = np.eye(r) + B.T @ self.DB
        self.L_inner = np.linalg.cholesky(0.5 * (inner + inner.T))
        self.rank = r

    def _block_solve(self, V):
        nb, bs = self.D_inv.shape[:2]
        return (self.D_inv @ V.reshape(nb, bs, -1)).reshape(V.shape)

    def __call__(self, V):
        V2 = V[:, None] if V.ndim == 1 else V
        z = self._block_solve(V2)
        u = scipy.linalg.cho_solve((self.L_inner, True), self.B.T @ z, check_finite=False)
        out = z - self.DB @ u
        return out[:, 0] if V.ndim == 1 else out


def pcg(matvec: Callable, B: np.ndarray, precond: Callable | None = None, tol: float = 1e-8,
        maxiter: int = 1000, progress: bool = False) -> tuple[np.ndarray, dict]:
    """Solve A X = B (A symmetric positive definite, given as `matvec`) column by column in one loop.
    Stops when every column's relative residual |B - A X| / |B| is below `tol`."""
    B = np.asarray(B, np.float64)
    B = B[:, None] if B.ndim == 1 else B
    X = np.zeros_like(B)
    Rr = B.copy()
    Z = precond(Rr) if precond else Rr
    P = Z.copy()
    rz = np.sum(Rr * Z, 0)
    bnorm = np.linalg.norm(B, axis=0)
    bnorm[bnorm == 0] = 1.0
    history = []
    t0 = time.perf_counter()
    for it in range(1, maxiter + 1):
        AP = matvec(P)
        alpha = rz / np.sum(P * AP, 0)
        X += alpha * P
        Rr -= alpha * AP
        rel = np.linalg.norm(Rr, axis=0) / bnorm
        history.append(float(rel.max()))
        if progress and (it % 10 == 0):
            print(f"\r  CG iteration {it}: relative residual {rel.max():.2e} ({time.perf_counter() - t0:.0f} s)",
                  end="", file=sys.stderr, flush=True)
        if rel.max() < tol:
            break
        Z = precond(Rr) if precond else Rr
        rz_new = np.sum(Rr * Z, 0)
        P = Z + (rz_new / rz) * P
        rz = rz_new
    if progress:
        print(file=sys.stderr)
    return X, {"iterations": it, "residual": history[-1], "converged": history[-1] < tol, "history": history}


def solve_matrix_free(X, Y, kernel: str, sigma: float, lam: float, stored: bool = True, rank: int = 500,
                      tol: float = 1e-8, maxiter: int = 1000, progress: bool = False) -> tuple[np.ndarray, dict]:
    """alpha = (K + lam I)^-1 Y by Nyström-preconditioned CG, with K stored in float32 (`stored`) or
    recomputed in blocks on every product."""
    t0 = time.perf_counter()
    op = StoredKernel(X, kernel, sigma) if stored else BlockedKernel(X, kernel, sigma)
    t1 = time.perf_counter()
    pre = NystromPreconditioner.randomized(op.__matmul__, len(X), lam, rank) if rank else None
    t2 = time.perf_counter()
    alpha, info = pcg(lambda V: op @ V + lam * V, Y, pre, tol, maxiter, progress)
    info["timings"] = {"operator_s": t1 - t0, "preconditioner_s": t2 - t1, "cg_s": time.perf_counter() - t2}
    return alpha, info
