"""Matrix-free KRR: preconditioned CG reproduces the dense Cholesky solution."""
import numpy as np
import pytest

from jaxqc.kernels import cg
from jaxqc.kernels.base import kernel_matrix
from jaxqc.kernels.krr import KRRConfig, choose_solver, fit_fixed, predict


def _problem(n=600, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 12)) * 3
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1], np.cos(X[:, 2]) - X[:, 3] ** 2], 1)
    return X, Y


@pytest.mark.parametrize("stored", [True, False])
def test_cg_matches_cholesky(stored, x64):
    X, Y = _problem()
    cfg = KRRConfig(kernel="laplacian", targets=("a", "b"))
    dense = fit_fixed(X, Y, cfg, sigma=4.0, lam=1e-6, solver="dense")
    mf = fit_fixed(X, Y, cfg, sigma=4.0, lam=1e-6, solver="cg" if stored else "cg-blocked", rank=100, tol=1e-9)
    assert mf["cg"]["converged"]
    Xs, _ = _problem(200, seed=1)
    p_dense = predict(Xs, X, dense["alpha"], dense["mean"], cfg, 4.0)
    p_mf = predict(Xs, X, mf["alpha"], mf["mean"], cfg, 4.0)
    # the stored operator keeps K in float32: predictions agree to float32 accuracy of the kernel
    np.testing.assert_allclose(p_mf, p_dense, atol=1e-3 if stored else 1e-6)


def test_nystrom_preconditioner_cuts_iterations(x64):
    rng = np.random.default_rng(0)
    X = rng.random((800, 2)) * 3  # low dimension, tiny lambda: an ill-conditioned kernel system
    Y = np.sin(X)
    K = kernel_matrix(X, X, "laplacian", 4.0)
    A = lambda V: K @ V + 1e-8 * V  # noqa: E731
    _, plain = cg.pcg(A, Y, None, tol=1e-8, maxiter=5000)
    pre = cg.NystromPreconditioner.randomized(lambda V: K @ V, len(X), 1e-8, rank=300)
    x, fast = cg.pcg(A, Y, pre, tol=1e-8, maxiter=5000)
    assert fast["converged"] and fast["iterations"] < plain["iterations"] / 3, (fast["iterations"], plain["iterations"])
    np.testing.assert_allclose(A(x), Y, atol=1e-6 * np.abs(Y).max())


def test_solver_choice_by_memory():
    assert choose_solver(10_000, budget_bytes=16 * 2**30) == "dense"
    assert choose_solver(50_000, budget_bytes=16 * 2**30) == "cg"
    assert choose_solver(110_000, budget_bytes=16 * 2**30) == "cg-blocked"
    assert choose_solver(110_000, budget_bytes=80 * 2**30) == "cg"


def test_block_nystrom_preconditioner_is_the_inverse_it_claims(x64):
    """P = B B^T + blockdiag(K_bb - B_b B_b^T) + delta I, applied by Woodbury: equal to the dense inverse."""
    rng = np.random.default_rng(1)
    X = rng.random((240, 3))
    K = kernel_matrix(X, X, "gaussian", 0.5)
    idx = np.sort(rng.choice(240, 80, replace=False))
    blocks = np.stack([K[b:b + 6, b:b + 6] for b in range(0, 240, 6)])
    pre = cg.BlockNystromPreconditioner(K[:, idx], idx, blocks, mu=1e-6)
    B = pre.B
    P = B @ B.T + pre.delta * np.eye(240)
    for b in range(0, 240, 6):
        P[b:b + 6, b:b + 6] += K[b:b + 6, b:b + 6] - B[b:b + 6] @ B[b:b + 6].T
    np.testing.assert_allclose(B @ B.T, K[:, idx] @ np.linalg.solve(K[np.ix_(idx, idx)], K[idx]), atol=1e-6)
    V = rng.standard_normal((240, 3))
    np.testing.assert_allclose(pre(V), np.linalg.solve(P, V), rtol=1e-6, atol=1e-8 * np.abs(np.linalg.solve(P, V)).max())
    A = lambda V: K @ V + 1e-6 * V  # noqa: E731
    _, plain = cg.pcg(A, V, None, tol=1e-8, maxiter=5000)
    _, fast = cg.pcg(A, V, pre, tol=1e-8, maxiter=5000)
    assert fast["converged"] and fast["iterations"] < plain["iterations"] / 3, (fast["iterations"], plain["iterations"])
