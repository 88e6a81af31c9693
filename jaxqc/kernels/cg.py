"""Preconditioned conjugate gradients for kernel systems (K + lambda I) alpha = Y, beyond the dense limit.

The dense route (linalg.regularized_solve) needs the N x N float64 kernel twice over (kernel + factor in
place: 8 N^2 bytes). When that does not fit, the kernel is applied as an operator:
  - `StoredKernel`: K kept once in float32 (4 N^2 bytes), products accumulated in float64;
  - `BlockedKernel`: nothing N x N is stored; every product recomputes the kernel in row blocks on the
    device from the representations (N^2 D work per product, the route for ~110k on an accelerator).
CG runs in float64 on the host with a multi-column right-hand side (every target at once, each column
with its own step sizes). Preconditioner: randomized Nyström of rank r (one extra block product).
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
    """Randomized Nyström preconditioner (Frangella, Tropp & Udell 2023) for K + mu I.

    A rank-r approximation K ~ U diag(lam_hat) U^T from one block product K @ Omega (r random columns),
    then P^-1 = U diag((lam_hat_r + mu) / (lam_hat + mu)) U^T + (I - U U^T). Unlike a Woodbury inverse of
    an inducing-point approximation it stays well conditioned for tiny mu (KRR's lambda ~ 1e-6)."""

    def __init__(self, matmul: Callable, n: int, mu: float, rank: int = 500, seed: int = 0):
        # only GEMMs on [n, r] arrays and LAPACK on r x r ones (large LAPACK calls are unsafe here,
        # see linalg.py): Cholesky-QR for Omega, eigh of B^T B for the SVD of B
        rank = min(rank, n)
        omega = np.random.default_rng(seed).standard_normal((n, rank))
        omega = scipy.linalg.solve_triangular(np.linalg.cholesky(omega.T @ omega), omega.T, lower=True).T
        Y = matmul(omega)  # [n, r] = K Omega
        shift = np.finfo(np.float64).eps * np.sqrt(n) * np.sqrt(np.abs(Y).sum(0).max() * np.abs(Y).sum(1).max())
        Y = Y + shift * omega
        C = np.linalg.cholesky(omega.T @ Y)  # lower: omega^T Y = C C^T
        B = scipy.linalg.solve_triangular(C, Y.T, lower=True).T  # Y C^-T, [n, r]
        ev, V = np.linalg.eigh(B.T @ B)  # B = U S V^T: B^T B = V S^2 V^T
        keep = ev > ev.max() * 1e-14
        sv = np.sqrt(ev[keep])[::-1]
        self.U = (B @ V[:, keep][:, ::-1]) / sv
        self.lam_hat = np.maximum(sv**2 - shift, 0.0)
        self.mu = mu
        self.scale = (self.lam_hat[-1] + mu) / (self.lam_hat + mu)  # [r]

    def __call__(self, V):
        UtV = self.U.T @ V
        return self.U @ (self.scale[:, None] * UtV) + (V - self.U @ UtV)


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
    pre = NystromPreconditioner(op.__matmul__, len(X), lam, rank) if rank else None
    t2 = time.perf_counter()
    alpha, info = pcg(lambda V: op @ V + lam * V, Y, pre, tol, maxiter, progress)
    info["timings"] = {"operator_s": t1 - t0, "preconditioner_s": t2 - t1, "cg_s": time.perf_counter() - t2}
    return alpha, info
