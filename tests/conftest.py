"""Shared fixtures: float64 where tests ask for it, a PRNG key, NaN debugging, the shared data folder, and
one JAX compilation cache for the test session."""
import atexit
import os
import shutil
import tempfile
from pathlib import Path

if os.environ.get("JAX_COMPILATION_CACHE_DIR", "") == os.environ.get("JAXQC_TEST_XLA_CACHE", ""):
    # Many tests compile the same small models (a fit, then the benchmark row's fit of the same model), in this
    # process and in the worker processes they start (which inherit these variables). A fresh folder per test
    # process (each pytest-xdist worker has its own): no run reads another's compilations, no two processes
    # write one file. A JAX_COMPILATION_CACHE_DIR set before the session is used as it is.
    _CACHE = tempfile.mkdtemp(prefix="jaxqc_test_xla_cache_")
    atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_CACHE, JAXQC_TEST_XLA_CACHE=_CACHE,
                      JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.3", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")

import jax  # noqa: E402  (after the cache settings)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from jaxqc.data.registry import shared_data_dir  # noqa: E402

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
