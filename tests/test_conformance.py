"""The conformance test: every registered model, and a model registered from outside jaxqc
(tests/plugins/pair_potential.py), trained once on its tiny budget and checked with the shipped checks of
jaxqc.testing: invariance under rotation with inversion, translation and permutation; forces equal to
finite differences of the energy; a save/load round trip; no recompilation within an atom-count bucket;
energy conservation in NVE; a benchmark row. The checks themselves are shown to fail on broken models."""
import contextlib
import dataclasses
import json
import math
import sys
from io import StringIO
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import ETHANOL_R, ETHANOL_Z, mixed_molecules

from jaxqc import models, testing
from jaxqc.data import io
from jaxqc.data import registry as data_registry
from jaxqc.models import registry, saved
from jaxqc.potential import forces_fn

PLUGIN = Path(__file__).parent / "plugins" / "pair_potential.py"
NAMES = list(dict.fromkeys([*models.names(), "pair"]))  # "pair" is registered by the plugin fixture
N_FRAMES = 300  # the slice of ethanol-xtb every model is trained and tested on
TEST_START = 100  # test molecules from here on: frames far (in time) from the training frames (0..49)


# ---- toy energies for the checks' own tests -----------------------------------------------------------
def _distances(R):
    d2 = jnp.sum((R[:, :, None] - R[:, None]) ** 2, -1)
    eye = jnp.eye(R.shape[1], dtype=bool)
    return jnp.sqrt(jnp.where(eye, 1.0, d2)), eye


def morse(params, molecules):
    """[B] kcal/mol: Morse pairs with element-dependent depths (invariant, smooth, conservative)."""
    r, eye = _distances(molecules.R)
    depth = params["d"][molecules.Z][:, :, None] * params["d"][molecules.Z][:, None]
    pair = molecules.mask[:, :, None] & molecules.mask[:, None] & ~eye
    e = depth * (1 - jnp.exp(-1.5 * (r - 1.3))) ** 2
    return 0.5 * jnp.sum(jnp.where(pair, e, 0.0), (1, 2))


def elastic(params, molecules):
    """[B] kcal/mol: harmonic springs k (r_ij - r0_ij)² / 2 between all pairs of ethanol (atom-ordered)."""
    r, eye = _distances(molecules.R)
    return 0.25 * params["k"] * jnp.sum(jnp.where(eye, 0.0, (r - params["r0"]) ** 2), (1, 2))


MORSE = {"d": jnp.zeros(10).at[jnp.array([1, 6, 8])].set(jnp.array([2.0, 6.0, 7.0]))}
ELASTIC = {"k": 100.0, "r0": np.asarray(_distances(jnp.asarray(ETHANOL_R[None]))[0][0])}


def _frames(n=3, seed=0):
    rng = np.random.default_rng(seed)
    from jaxqc.data.molecules import Dataset

    return Dataset(Z=np.tile(ETHANOL_Z, (n, 1)), R=ETHANOL_R + 0.05 * rng.normal(size=(n, 9, 3)))


def test_checks_pass_on_a_physical_energy():
    data = _frames()
    worst = testing.assert_invariant(morse, MORSE, data.molecules())
    assert set(worst) == {"rotation with inversion", "translation", "permutation of like atoms", "all at once"}
    assert testing.assert_forces_match_fd(morse, MORSE, data.molecules(), eps=1e-4) < 1e-4
    out = testing.assert_conserves_energy(elastic, ELASTIC, ETHANOL_Z, ETHANOL_R, steps=200, dt_fs=0.5)
    assert out["relative_error"] < 0.05 and out["mean_kinetic_kcal_mol"] > 0


@pytest.mark.parametrize("broken, symmetry", [
    (lambda p, m: morse(p, m) + 0.1 * jnp.sum(m.R[..., 0] * m.mask, 1), "rotation with inversion"),  # x term
    # a chiral term (triple product): invariant under proper rotations and translations, not under inversion
    (lambda p, m: morse(p, m) + jnp.einsum("bi,bi->b", m.R[:, 1] - m.R[:, 0],
                                           jnp.cross(m.R[:, 2] - m.R[:, 0], m.R[:, 3] - m.R[:, 0])),
     "rotation with inversion"),
    # atom-index weights: invariant under rotations and translations, not under relabelling the hydrogens
    (lambda p, m: morse(p, m) + jnp.sum(jnp.arange(9.0) * jnp.sum((m.R - m.R[:, :1]) ** 2, -1), 1),
     "permutation of like atoms"),
])
def test_invariance_check_fails_on_a_broken_energy(broken, symmetry):
    with pytest.raises(AssertionError, match=f"not invariant under {symmetry}"):
        testing.assert_invariant(broken, MORSE, _frames().molecules())


def test_fd_check_fails_on_forces_that_are_not_minus_grad():
    mols = _frames(1).molecules()
    plus_grad = lambda p, m: -forces_fn(morse)(p, m)  # noqa: E731 - the sign error
    with pytest.raises(AssertionError, match="do not match central differences"):
        testing.assert_forces_match_fd(morse, MORSE, mols, forces=plus_grad)
    scaled = lambda p, m: 1.01 * forces_fn(morse)(p, m)  # noqa: E731 - 1 % off
    with pytest.raises(AssertionError, match="do not match central differences"):
        testing.assert_forces_match_fd(morse, MORSE, mols, forces=scaled)


def test_conservation_check_fails_at_a_too_large_time_step():
    """Velocity Verlet is stable on these springs up to ~3 fs but its energy error grows as dt²."""
    with pytest.raises(AssertionError, match="energy not conserved"):
        testing.assert_conserves_energy(elastic, ELASTIC, ETHANOL_Z, ETHANOL_R, steps=200, dt_fs=2.5)


# ---- every registered model ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def plugin():
    """tests/plugins/pair_potential.py registered for this module only (registry restored afterwards)."""
    before = dict(registry._SPECS)
    models.load_plugin(str(PLUGIN))
    yield
    registry._SPECS.clear()
    registry._SPECS.update(before)
    sys.modules.pop(f"jaxqc_plugin_{PLUGIN.stem}", None)


@pytest.fixture(scope="module")
def ethanol():
    return data_registry.load("ethanol-xtb").subset(np.arange(N_FRAMES))


@dataclasses.dataclass
class Case:
    spec: models.ModelSpec
    model: models.Model
    fitted: models.Fitted
    data: object
    kind: str
    target: str
    energy: object  # model.energy_fn, taken once so that its compilations are reused
    params: object  # model.prepared_params()
    test_idx: np.ndarray  # 16 test molecules of one atom count
    predict: object  # model.predictor(...), called once on test_idx[:8]
    first: tuple  # (E, F) of that call


@pytest.fixture(scope="module", params=NAMES)
def case(request, plugin, ethanol, tmp_path_factory) -> Case:
    spec = models.get(request.param)
    kind = "frames" if ("frames", "tiny") in spec.budgets else "property"
    data, target = (ethanol, "energy") if kind == "frames" else (mixed_molecules(n=400, seed=1), "mu")
    reason = spec.applies(kind, data)
    if reason:
        pytest.skip(f"{spec.name} does not apply to its tiny {kind} set: {reason}")
    budget = spec.budget(kind, "tiny")
    n_train = budget.n_train[0] if budget.n_train else 20
    split = {"train": np.arange(n_train), "valid": np.arange(n_train, n_train + 10)}
    config = spec.make_config(**budget.options.get("model", {}))
    fitted = spec.fit(config, data, split, jax.random.PRNGKey(0), budget, target=target, progress=False,
                      out=tmp_path_factory.mktemp(spec.name))
    model = saved.from_fit(spec, config, fitted, target)
    test_idx = same_size(data, TEST_START)
    predict = model.predictor(forces=model.is_force_field, batch_size=8)
    first = predict(data, test_idx[:8])
    return Case(spec, model, fitted, data, kind, target, model.energy_fn, model.prepared_params(), test_idx,
                predict, first)


def same_size(data, start: int, n: int = 16) -> np.ndarray:
    """n molecules from `start` on with the atom count of the most common one there (one bucket)."""
    idx = np.arange(start, len(data))
    counts = data.n_atoms[idx]
    return idx[counts == np.bincount(counts).argmax()][:n]


def symmetry_group(case: Case):
    """The permutations a model must be invariant under: any of like atoms ("elements"), or for a model of
    one molecule in a fixed atom order its own group (sGDML's symmetries; GDML's is the identity alone)."""
    if case.spec.atom_order(case.model.config, case.model.params) is None:
        return "elements"
    perms = case.model.spec.symmetries(case.model.config, case.model.params)
    return None if perms is None else np.asarray(perms)


def test_invariance(case):
    """float64: |dE| <= 1e-6 kcal/mol + 1e-8 |E| (E ~ 7000 kcal/mol for ethanol-xtb)."""
    group = symmetry_group(case)
    mols = case.data.molecules(case.test_idx[:4])
    worst = testing.assert_invariant(case.energy, case.params, mols, permutations=group)
    if group is None:
        pytest.skip(f"{case.spec.name}: fixed atom order and no recorded symmetry group: permutation not checked "
                    f"(rotation, inversion and translation passed: {worst})")


def test_forces_match_finite_differences(case):
    if "forces" not in case.spec.outputs:
        pytest.skip(f"{case.spec.name} provides {', '.join(case.spec.outputs)}, no forces")
    testing.assert_forces_match_fd(case.energy, case.params, case.data.molecules(case.test_idx[:1]), eps=1e-4,
                                   rtol=1e-4, atol=1e-4)


def test_save_load_round_trip(case, tmp_path):
    m = case.model
    models.save(tmp_path / "model.npz", case.spec, m.config, m.params, provenance={"dataset_md5": case.data.md5},
                units=dict(case.data.units), info=case.fitted.info, target=case.target)
    loaded = models.load(tmp_path)
    assert (loaded.spec.name, loaded.config, loaded.target) == (case.spec.name, m.config, case.target)
    assert loaded.is_force_field == m.is_force_field
    saved_leaves, leaves = jax.tree_util.tree_leaves(m.params), jax.tree_util.tree_leaves(loaded.params)
    assert len(leaves) == len(saved_leaves)
    assert all(np.asarray(a).dtype == b.dtype and np.array_equal(a, b) for a, b in zip(saved_leaves, leaves))
    # energies through the loaded model's own energy function (forces are its gradient: the same then); a few
    # ulps apart at most, as the reference came from a compiled energy-and-gradient function
    E, _ = loaded.predictor(forces=False, batch_size=8)(case.data, case.test_idx[:8])
    np.testing.assert_allclose(E, case.first[0], rtol=1e-10 if case.spec.float64 else 1e-6, atol=0)


def test_no_recompilation_within_a_bucket(case):
    n_compiled = case.predict.jitted._cache_size()
    E, _ = case.predict(case.data, case.test_idx[8:16])  # other molecules, the same atom count and batch
    assert case.predict.jitted._cache_size() == n_compiled >= 1
    assert np.all(np.isfinite(E)) and not np.array_equal(E, case.first[0])  # really the other molecules


def test_nve_conserves_energy(case):
    if not case.model.is_force_field:
        pytest.skip(f"{case.spec.name} ({case.target}) is not a force field")
    i = case.test_idx[0]
    testing.assert_conserves_energy(case.energy, case.params, case.data.Z[i], case.data.R[i], steps=200, dt_fs=0.5,
                                    temperature_k=300.0, tol=0.05)


def benchmark_runs(method: str, data, out_dir) -> dict:
    """{"runs": [row per tiny training size], "error"?} of one method on frames: jaxqc.benchmark's
    run_method on its tiny protocol, or, without that package, `jaxqc compare --budget tiny --in-process`."""
    try:
        from jaxqc.benchmark import protocol, runner
    except ImportError:
        from jaxqc import cli

        data_file = Path(out_dir) / "data.npz"
        io.write_npz(data, data_file)
        with contextlib.redirect_stderr(StringIO()) as err:
            rc = cli.main(["compare", "--data", str(data_file), "--budget", "tiny", "--methods", method,
                           "--in-process", "--json", "--quiet", "--out", str(Path(out_dir) / "out")])
        if rc != 0:
            return {"runs": [], "error": f"jaxqc compare: exit {rc}: {err.getvalue().strip()[-500:]}"}
        rows = json.loads((Path(out_dir) / "out" / "compare.json").read_text())["rows"]
        return {"runs": [r for r in rows if r["method"] == method]}
    proto = {**protocol.make_protocol(data, "frames", "tiny", False), "test_in_data": True}
    return runner.run_method(method, "tiny", data, proto, data.subset(proto["test"]), "energy", "frames",
                             out_dir=None, progress=False)


def test_benchmark_row(case, tmp_path):
    """A tiny benchmark row per model and training size: finite test errors (forces too for force fields)."""
    if case.kind != "frames":
        pytest.skip(f"{case.spec.name}: the benchmark rows are run on frames; it has no tiny frames budget")
    method = next(iter(case.spec.methods()))
    result = benchmark_runs(method, case.data, tmp_path)
    assert "error" not in result, result["error"]
    n_train = [r["n_train"] for r in result["runs"]]
    assert n_train and set(n_train) <= set(case.spec.budget("frames", "tiny").n_train), n_train
    for row in result["runs"]:
        keys = ["energy_mae"] + (["forces_mae"] if case.model.is_force_field else [])
        assert all(math.isfinite(row[k]) for k in keys), row
