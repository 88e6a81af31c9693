"""The model registry: built-in families, entry points, clear errors; the one predictor compiles once per
bucket and KRR's jit-able energy equals the closed-form prediction."""
import dataclasses
import importlib.metadata
import types

import numpy as np
import pytest

from jaxqc import models
from jaxqc.errors import JaxqcError
from jaxqc.models import registry


def test_builtin_families_and_methods():
    assert {"krr", "gdml", "sgdml", "schnet", "dtnn", "cormorant"} <= set(models.names())
    methods = models.methods()
    assert methods["krr-bob"][0].name == "krr" and methods["krr-bob"][1] == {"representation": "bob"}
    assert models.get("krr-cm") is models.get("krr")
    assert models.get("sgdml").make_config().symmetric and not models.get("gdml").make_config().symmetric
    for name in models.names():
        spec = models.get(name)
        assert spec.budgets, name
        for (kind, level), budget in spec.budgets.items():
            assert kind in registry.KINDS and level in registry.LEVELS
            assert budget.max_minutes is None or budget.epochs is not None, f"{name}: a wall-clock-only budget"


def test_unknown_model_and_bad_settings_are_one_line_errors():
    with pytest.raises(JaxqcError, match="unknown model 'nope'; registered: krr"):
        models.get("nope")
    with pytest.raises(JaxqcError, match="unknown setting"):
        models.get("schnet").make_config(featurez=3)
    with pytest.raises(JaxqcError, match="has no paper budget for property data"):
        models.get("sgdml").budget("property", "paper")


@dataclasses.dataclass(frozen=True)
class _Cfg:
    scale: float = 1.0


def _spec(name, budgets=None):
    return models.ModelSpec(name=name, config_class=_Cfg, fit=None, energy=lambda c: None, outputs=("energy",),
                            describe=lambda c: name, budgets=budgets or {("frames", "tiny"): models.Budget((4,))})


def test_register_checks_names_and_budget_keys():
    with pytest.raises(JaxqcError, match="already registered"):
        registry.register(dataclasses.replace(_spec("schnet"), module="somewhere.else"))
    with pytest.raises(JaxqcError, match="budget key"):
        registry.register(_spec("bad-budget", {("frames", "huge"): models.Budget()}))
    assert "bad-budget" not in registry._SPECS


def test_entry_point_group_registers_models(monkeypatch):
    """An installed package registers through the `jaxqc.models` entry-point group."""
    def load():
        registry.register(_spec("from-entry-point"))

    ep = types.SimpleNamespace(name="demo", value="demo:load", load=lambda: load)
    monkeypatch.setattr(importlib.metadata, "entry_points",
                        lambda group=None: [ep] if group == "jaxqc.models" else [])
    monkeypatch.setitem(registry._loaded, "plugins", False)
    try:
        assert models.get("from-entry-point").name == "from-entry-point"
    finally:
        registry.unregister("from-entry-point")


def test_predictor_compiles_once_per_bucket():
    from jaxqc.data import registry as data_registry

    data = data_registry.load("ethanol-xtb")
    spec = models.get("krr")
    budget = spec.budget("frames", "tiny")
    split = {"train": np.arange(40), "valid": np.arange(40, 50)}
    fitted = spec.fit(spec.make_config(), data, split, None, budget, target="energy")
    model = models.saved.from_fit(spec, spec.make_config(), fitted)
    from jaxqc.models.predict import predictor

    traces = []

    def energy(params, molecules):  # counts the traces (compilations) of the jitted prediction
        traces.append(molecules.Z.shape)
        return model.energy_fn(params, molecules)

    fn = predictor(energy, False, 16, float64=True, n_atoms=spec.n_atoms(model.config, model.params),
                   config=model.config)
    params = model.prepared_params()
    E1, _ = fn(params, data, np.arange(100, 132))
    n = len(traces)
    E2, _ = fn(params, data, np.arange(500, 532))  # other molecules, same bucket and batch shapes
    assert len(traces) == n == 1
    # the jit-able energy() equals the closed-form KRR prediction (both float64)
    import jax

    from jaxqc.kernels import krr

    with jax.enable_x64(True):
        X, _ = krr.represent(data.subset(np.arange(500, 532)), "cm")
        ref = krr.predict(X, fitted.params["X_train"], fitted.params["alpha"], fitted.params["mean"], model.config,
                          model.config.sigmas[0])[:, 0]
    np.testing.assert_allclose(E2, ref, rtol=1e-12, atol=1e-9)
    assert not np.allclose(E1[:5], E2[:5])
