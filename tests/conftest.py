"""Shared fixtures: float64 where tests ask for it, a PRNG key, NaN debugging, the shared data folder."""
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxqc.data.registry import shared_data_dir

jax.config.update("jax_debug_nans", True)


@pytest.fixture
def key():
    return jax.random.PRNGKey(0)


@pytest.fixture
def x64():
    """Run a test in float64 (finite-difference checks); restores the previous setting."""
    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", old)


def shared(*parts) -> Path:
    """A file under ../shared/data; skips the test with a reason when it is absent."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"third-party reference data not available: {path} (set JAXQC_SHARED_DATA)")
    return path


def random_rotation(rng: np.random.Generator, inversion: bool = False) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return -q if inversion else q


@pytest.fixture(scope="session")
def qm9_full_cache(tmp_path_factory):
    """All of QM9 converted once per test session into a temporary cache: (cache_dir, data, seconds)."""
    import importlib.util
    import time

    if importlib.util.find_spec("qm9pack") is None:
        pytest.skip("qm9pack not installed (pip install 'jaxqc[qm9]')")
    from jaxqc.data import qm9

    cache_dir = tmp_path_factory.mktemp("jaxqc_cache")
    t0 = time.perf_counter()
    data = qm9.load_qm9(cache=cache_dir / qm9.CACHE_NAME)
    return cache_dir, data, time.perf_counter() - t0
