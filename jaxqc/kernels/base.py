"""Scalar kernels between representation vectors, computed in blocks on the device.

The kernel matrix is built from a distance matrix (L1 for the Laplacian kernel, squared L2 for the
Gaussian), so a grid over sigma reuses one distance matrix. Blocks are sized so that the [rows, cols, D]
difference tensor of the L1 distance stays under a memory budget: never N x N x D at once.
"""
from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

KERNELS = ("laplacian", "gaussian")


def distance_kind(kernel: str) -> str:
    if kernel == "laplacian":
        return "l1"
    if kernel == "gaussian":
        return "sqeuclidean"
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {KERNELS}")


@jax.jit
def _l1_block(X, Y):
    """[rows, cols] L1 distances, accumulated one feature at a time (a scan over D): XLA then keeps the
    [rows, cols] accumulator vectorised instead of reducing the innermost axis of [rows, cols, D]."""
    def add(acc, xy):
        x, y = xy  # [rows], [cols]
        return acc + jnp.abs(x[:, None] - y[None, :]), None

    acc0 = jnp.zeros((X.shape[0], Y.shape[0]), X.dtype)
    return jax.lax.scan(add, acc0, (X.T, Y.T))[0]


@jax.jit
def _sq_block(X, Y):
    d = jnp.sum(X * X, 1)[:, None] + jnp.sum(Y * Y, 1)[None, :] - 2.0 * X @ Y.T
    return jnp.maximum(d, 0.0)


def pairwise_distances(X, Y, kind: str, block_mb: float = 64.0, progress: str | None = None) -> np.ndarray:
    """[n, m] host array of L1 ('l1') or squared L2 ('sqeuclidean') distances between rows of X and Y,
    in blocks of rows and columns; float dtype of X. `progress` names the job in a stderr progress line."""
    symmetric = X is Y  # D(X, X): compute blocks on and above the diagonal only
    X, Y = np.asarray(X), np.asarray(Y)
    n, m, dim = X.shape[0], Y.shape[0], X.shape[1]
    out = np.empty((n, m), dtype=X.dtype)
    if kind == "l1":
        # a [rows, cols] accumulator within the budget; square-ish, multiples of 64
        elems = block_mb * 2**20 / X.dtype.itemsize / 4
        side = max(64, min(1024, int(np.sqrt(elems)) // 64 * 64))
        rows, cols = side, side
        fn = _l1_block
    elif kind == "sqeuclidean":
        rows, cols, fn = 4096, 4096, _sq_block
    else:
        raise ValueError(f"unknown distance {kind!r}")
    Yd = [jnp.asarray(Y[j:j + cols]) for j in range(0, m, cols)]
    t0, last = time.perf_counter(), 0.0
    for i in range(0, n, rows):
        Xi = jnp.asarray(X[i:i + rows])
        for jb, j in enumerate(range(0, m, cols)):
            if symmetric and j < i:  # D(X, X) is symmetric: copy the block computed above the diagonal
                out[i:i + rows, j:j + cols] = out[j:j + cols, i:i + rows].T
                continue
            out[i:i + rows, j:j + cols] = np.asarray(fn(Xi, Yd[jb]))
        now = time.perf_counter()
        if progress and (now - last > 2.0 or i + rows >= n):
            done = min(i + rows, n) / n
            eta = (now - t0) / done * (1 - done)
            print(f"\r  {progress}: {100 * done:5.1f}% ({now - t0:.1f} s, ETA {eta:.0f} s)", end="",
                  file=sys.stderr, flush=True)
            last = now
    if progress:
        print(file=sys.stderr)
    return out


def kernel_scale(kernel: str, sigma: float) -> float:
    """K = exp(scale * D): -1/sigma on L1 distances (Laplacian), -1/(2 sigma^2) on squared L2 (Gaussian)."""
    distance_kind(kernel)
    return -1.0 / sigma if kernel == "laplacian" else -0.5 / sigma**2


def kernel_from_distances(D: np.ndarray, kernel: str, sigma: float, inplace: bool = False) -> np.ndarray:
    """Laplacian exp(-D_l1 / sigma) or Gaussian exp(-D_sq / (2 sigma^2)); overwrites D if `inplace`
    (the large-N route: one N x N array instead of two)."""
    K = np.multiply(D, kernel_scale(kernel, sigma), out=D if inplace else None)
    np.exp(K, out=K)
    return K


def kernel_matrix(X, Y, kernel: str, sigma: float, **kw) -> np.ndarray:
    return kernel_from_distances(pairwise_distances(X, Y, distance_kind(kernel), **kw), kernel, sigma)
