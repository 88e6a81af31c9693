"""Tiled Cholesky equals LAPACK's; solves are exact to rounding."""
import numpy as np
import pytest
import scipy.linalg

from jaxqc.kernels.linalg import cholesky_solve_inplace, tiled_cholesky


def _spd(n, seed=0):
    rng = np.random.default_rng(seed)
    B = rng.standard_normal((n, n // 2))
    return B @ B.T + n * 1e-3 * np.eye(n)


@pytest.mark.parametrize("n,tile", [(300, 64), (257, 100), (50, 64)])
def test_tiled_cholesky_matches_lapack(n, tile):
    A = _spd(n)
    L = np.tril(tiled_cholesky(A.copy(), tile))
    np.testing.assert_allclose(L, scipy.linalg.cholesky(A, lower=True), rtol=1e-9, atol=1e-10)


def test_tiled_solve_multi_column():
    A = _spd(301, seed=1)
    B = np.random.default_rng(2).standard_normal((301, 3))
    X = cholesky_solve_inplace(A.copy(), B, tile=64)
    np.testing.assert_allclose(A @ X, B, atol=1e-8)


def test_not_positive_definite():
    A = _spd(100)
    A[70, 70] = -1.0
    with pytest.raises(np.linalg.LinAlgError, match="not positive definite"):
        tiled_cholesky(A, tile=32)
