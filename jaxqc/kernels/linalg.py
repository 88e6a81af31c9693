"""Dense float64 Cholesky solves for kernel systems, tiled.

Why tiled: the multithreaded OpenBLAS that NumPy/SciPy ship (0.3.31 here) crashes in dpotrf (and in large
dtrsm calls) for matrices above ~16,000 (observed here: segfault at N = 17,000 with 2 threads, fine with 1). A right-looking tiled
Cholesky calls dpotrf only on small diagonal tiles and does the O(N^3) work in large GEMMs, which are
both safe and as fast as LAPACK's own blocking. It works in place on the lower triangle.
"""
from __future__ import annotations

import numpy as np
import scipy.linalg


def tiled_cholesky(A: np.ndarray, tile: int = 4096) -> np.ndarray:
    """Overwrite the lower triangle of symmetric positive definite A [n, n] with its Cholesky factor L
    (A = L L^T) and return A. Raises np.linalg.LinAlgError if A is not positive definite."""
    n = A.shape[0]
    for k0 in range(0, n, tile):
        k1 = min(k0 + tile, n)
        try:
            A[k0:k1, k0:k1] = scipy.linalg.cholesky(A[k0:k1, k0:k1], lower=True, check_finite=False)
        except np.linalg.LinAlgError:
            raise np.linalg.LinAlgError(f"matrix not positive definite (tile at row {k0})") from None
        if k1 == n:
            break
        L_kk = A[k0:k1, k0:k1]
        # panel below the diagonal tile: P <- P L_kk^-T, a tile of rows at a time (large multithreaded
        # dtrsm calls crash the same way as dpotrf)
        for r0 in range(k1, n, tile):
            r1 = min(r0 + tile, n)
            A[r0:r1, k0:k1] = scipy.linalg.solve_triangular(L_kk, A[r0:r1, k0:k1].T, lower=True,
                                                            check_finite=False).T
        P = A[k1:, k0:k1]
        # trailing update of the lower triangle, one tile column at a time: A_jj.. -= P_j.. P_j^T
        for j0 in range(k1, n, tile):
            j1 = min(j0 + tile, n)
            A[j0:, j0:j1] -= P[j0 - k1:] @ P[j0 - k1:j1 - k1].T
    return A


def tiled_triangular_solve(L: np.ndarray, B: np.ndarray, trans: bool = False, tile: int = 4096) -> np.ndarray:
    """Solve L X = B (trans=False) or L^T X = B (trans=True) with L lower triangular, by tiles."""
    n = L.shape[0]
    X = np.array(B, dtype=np.float64, copy=True)
    starts = list(range(0, n, tile))
    if not trans:
        for k0 in starts:
            k1 = min(k0 + tile, n)
            X[k0:k1] = scipy.linalg.solve_triangular(L[k0:k1, k0:k1], X[k0:k1], lower=True, check_finite=False)
            X[k1:] -= L[k1:, k0:k1] @ X[k0:k1]
    else:
        for k0 in reversed(starts):
            k1 = min(k0 + tile, n)
            X[k0:k1] = scipy.linalg.solve_triangular(L[k0:k1, k0:k1], X[k0:k1], lower=True, trans="T",
                                                     check_finite=False)
            X[:k0] -= L[k0:k1, :k0].T @ X[k0:k1]
    return X


def memory_budget_bytes(fraction: float = 0.9) -> int:
    """Memory a dense solve may use: `fraction` of MemAvailable ($JAXQC_MEMORY_GB overrides)."""
    import os

    if os.environ.get("JAXQC_MEMORY_GB"):
        return int(float(os.environ["JAXQC_MEMORY_GB"]) * 2**30)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * fraction)
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") * fraction)


def regularized_solve(K: np.ndarray, Y: np.ndarray, lam: float, what: str = "kernel") -> np.ndarray:
    """(K + lam I)^-1 Y in float64 (K is overwritten by its factor); a clear error if not positive definite."""
    from ..errors import JaxqcError

    K[np.diag_indices_from(K)] += lam
    try:
        return cholesky_solve_inplace(K, Y)
    except np.linalg.LinAlgError:
        raise JaxqcError(f"{what} matrix is not positive definite at lambda={lam:g}; raise lambda") from None


LAPACK_MAX_N = 12_288  # LAPACK's own dpotrf was seen to work up to here (12,000: fine; 17,000: crash)


def cholesky_solve_inplace(A: np.ndarray, B: np.ndarray, tile: int = 4096) -> np.ndarray:
    """X = A^-1 B for SPD A (overwritten by its factor), B [n] or [n, T]: LAPACK for n <= 12,288,
    the tiled factorisation above that."""
    if A.shape[0] <= LAPACK_MAX_N:
        c = scipy.linalg.cho_factor(A, lower=True, overwrite_a=True, check_finite=False)
        return scipy.linalg.cho_solve(c, B, check_finite=False)
    L = tiled_cholesky(A, tile)
    return tiled_triangular_solve(L, tiled_triangular_solve(L, B, trans=False, tile=tile), trans=True, tile=tile)
