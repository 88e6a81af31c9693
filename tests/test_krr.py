"""Kernel blocks and the KRR fit: chunking is exact, multi-target = separate fits, it learns."""
import numpy as np
import pytest

from jaxqc.kernels.base import kernel_matrix, pairwise_distances
from jaxqc.kernels.krr import KRRConfig, fit, fit_fixed, predict


@pytest.mark.parametrize("kind", ["l1", "sqeuclidean"])
def test_blocked_distances_equal_direct(kind, x64):
    rng = np.random.default_rng(0)
    X, Y = rng.random((150, 40)), rng.random((97, 40))
    D = pairwise_distances(X, Y, kind, block_mb=0.01)  # forces many small blocks
    diff = X[:, None] - Y[None]
    expect = np.abs(diff).sum(-1) if kind == "l1" else (diff**2).sum(-1)
    np.testing.assert_allclose(D, expect, rtol=1e-12, atol=1e-12)


def test_kernel_formulas(x64):
    rng = np.random.default_rng(1)
    X, Y = rng.random((5, 3)), rng.random((4, 3))
    np.testing.assert_allclose(kernel_matrix(X, Y, "laplacian", 2.0),
                               np.exp(-np.abs(X[:, None] - Y[None]).sum(-1) / 2.0), rtol=1e-12)
    np.testing.assert_allclose(kernel_matrix(X, Y, "gaussian", 2.0),
                               np.exp(-((X[:, None] - Y[None]) ** 2).sum(-1) / 8.0), rtol=1e-12)


def _smooth_problem(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, 6)) * 4
    Y = np.stack([np.sin(X[:, 0]) + X[:, 1] ** 2, np.cos(X[:, 2]) + 0.5 * X[:, 3]], 1)
    return X, Y


def test_multi_target_equals_separate_fits(x64):
    X, Y = _smooth_problem(200)
    cfg = KRRConfig(kernel="gaussian", targets=("a", "b"))
    both = fit_fixed(X, Y, cfg, sigma=1.0, lam=1e-6)
    for t in range(2):
        one = fit_fixed(X, Y[:, t:t + 1], cfg, sigma=1.0, lam=1e-6)
        np.testing.assert_allclose(both["alpha"][:, t], one["alpha"][:, 0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", ["laplacian", "gaussian"])
def test_krr_learns_and_grid_picks_the_best(kernel, x64):
    X, Y = _smooth_problem(900)
    Xt, Yt = X[:600], Y[:600]
    Xv, Yv = X[600:750], Y[600:750]
    Xs, Ys = X[750:], Y[750:]
    cfg = KRRConfig(kernel=kernel, targets=("a", "b"), sigmas=(0.3, 1.0, 3.0, 10.0), lambdas=(1e-8, 1e-4))
    model = fit(Xt, Yt, Xv, Yv, cfg)
    grid = model["grid_mae"][..., 0]
    i, j = np.unravel_index(np.argmin(grid), grid.shape)
    assert (cfg.sigmas[i], cfg.lambdas[j]) == (model["sigma"], model["lambda"])
    pred = predict(Xs, Xt, model["alpha"], model["mean"], cfg, model["sigma"])
    mae = np.abs(pred - Ys).mean(0)
    baseline = np.abs(Ys - Yt.mean(0)).mean(0)
    assert np.all(mae < 0.25 * baseline), (mae, baseline)
    # training points are nearly interpolated at small lambda
    fitted = predict(Xt[:50], Xt, model["alpha"], model["mean"], cfg, model["sigma"])
    assert np.abs(fitted - Yt[:50]).mean() < mae.mean()
