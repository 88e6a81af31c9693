"""The registry of model families: the one map from a model name to everything jaxqc does with it.

A family registers a `ModelSpec` (name, frozen config class, fit, energy, outputs, describe, budgets).
The CLI, the benchmark, MD and the ASE calculator ask the registry and never name a family, so a new
model is one file plus `register(spec)`. Models defined outside jaxqc are found in two ways:
- `jaxqc.models.register(spec)` from an imported module (e.g. an experiment file, passed to the CLI with
  `--plugin FILE.py` or the JAXQC_PLUGINS environment variable, a list of files or modules);
- the `jaxqc.models` entry-point group of an installed package (each entry point is a module or a
  callable that registers its specs when loaded).

Saved models are one npz file (potential.save_model) whose header records the spec name ("kind"); the
header also records the module that registered it, so a model from an experiment file loads again when
that module is importable.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

from ..errors import JaxqcError

LEVELS = ("tiny", "quick", "paper")
KINDS = ("frames", "property")  # frames of one molecule (energies/forces) | molecules with properties


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work a fit may do: counted in training sizes and optimiser epochs, never in wall time.

    n_train      training sizes the benchmark runs (nested prefixes of the training pool)
    epochs       optimiser epochs (networks); None for closed-form fits
    max_minutes  a wall-clock guard only (a result that hit it says so); None: no guard
    options      family settings: sigma/lambda grids, "model" (config overrides), "train" (optax loop
                 settings), "forces" (train on forces too), "reference"/"note" (shown in compare's plan)
    """

    n_train: tuple = ()
    epochs: int | None = None
    max_minutes: float | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def replace(self, **kw) -> "Budget":
        return dataclasses.replace(self, **kw)


class Fitted(NamedTuple):
    """What a fit returns: params (a pytree of arrays for energy(config)), a JSON-able info dict (chosen
    hyperparameters, validation errors, epochs, stop reason, timings) and the resolved config when the fit
    fixed settings the caller left open (KRR's bag layout, a network's mean readout), else None."""

    params: Any
    info: dict
    config: Any = None


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model family.

    name          the method name (`jaxqc train NAME`, saved files' "kind")
    config_class  frozen dataclass of the model's settings
    fit           fit(config, data, split, key, budget, **run) -> Fitted; run: out (run directory for
                  checkpoints), resume, progress, n_devices
    energy        energy(config) -> energy(params, molecules) -> [batch] (kcal/mol, or the property's unit)
    outputs       what it can provide: "energy", "forces" (its -grad), "property", or later "matrices", ...
    describe      describe(config) -> one line for logs, model info and tables
    budgets       {(kind, level): Budget} for kind in KINDS and level in LEVELS, what `compare` runs
    description   one line with the reference (tables)
    applies       applies(kind, data) -> None or the reason the family does not apply to the data
    from_flags    from_flags(flags: dict, data) -> (config, budget): the CLI's train flags to a config
    config_json   config_json(config) -> dict saved in the model file; config_from_json inverts it
    float64       evaluate under float64 (kernel methods: the accuracy of the closed-form fit)
    predict_batch molecules per call of the one prediction path
    init          init(config, key, example, stats) -> untrained params (trainable families; None otherwise)
    defaults      config settings that differ from the config class's defaults (sgdml: symmetric=True)
    variants      {method name: config overrides}: the methods `compare` runs (default {name: {}})
    force_field   a fitted model's output is a potential energy (MD, ASE): fn(config, header) -> bool
    symmetries    symmetries(config, params) -> [P, A] atom permutations the model is invariant to, or None for
                  every permutation of like atoms (sGDML: its detected group; GDML: the identity)
    atom_order    the model is of one molecule in a fixed atom order (gdml): fn(config, params) -> Z or None
    reference_geometry  a geometry [A, 3] Å of a model of one molecule in the model's atom order (to map
                  data that list the same atoms in another order): fn(config, params) -> R or None
    n_atoms       a fixed atom width of its input (KRR's sorted Coulomb matrix): fn(config, params) -> int or None
    prepare       prepare(config, params) -> the params energy() takes, from the saved ones (gdml: centres
                  and coefficients from the training geometries); default: the saved params themselves
    split         split(data, n_train, n_valid, seed, config) -> {"train", "valid", "test", "protocol"}: the
                  family's default split for `jaxqc train` (the benchmark uses its own protocol)
    evaluate_more evaluate_more(config, params, data, idx) -> {name: {metrics..., "unit"}}: outputs beyond energy
                  and forces that `jaxqc evaluate` reports (SchNOrb: H, S, orbital energies, gap, dipole); an
                  output the model was not trained for is {name: {"not_trained": why}} (no metrics, no unit)
    generate      generate(config, params, n, key, temperature, batch, progress) -> {"Z", "R", "finished",
                  "seconds", "temperature"}: a generative model's molecules (`jaxqc generate`; G-SchNet)
    evaluate_generated  evaluate_generated(config, params, header, generated, progress) -> metrics of
                  generated molecules (`jaxqc evaluate RUN --generated FILE`)
    """

    name: str
    config_class: type
    fit: Callable
    energy: Callable
    outputs: tuple
    describe: Callable
    budgets: Mapping
    description: str = ""
    applies: Callable = lambda kind, data: None
    from_flags: Callable | None = None
    config_json: Callable = dataclasses.asdict
    config_from_json: Callable | None = None
    float64: bool = False
    predict_batch: int = 64
    variants: Mapping | None = None
    force_field: Callable = lambda config, header: True
    atom_order: Callable = lambda config, params: None
    symmetries: Callable = lambda config, params: None
    reference_geometry: Callable = lambda config, params: None
    n_atoms: Callable = lambda config, params: None
    prepare: Callable = lambda config, params: params
    split: Callable | None = None
    evaluate_more: Callable | None = None
    generate: Callable | None = None
    evaluate_generated: Callable | None = None
    init: Callable | None = None
    defaults: Mapping = dataclasses.field(default_factory=dict)
    module: str = ""

    def methods(self) -> dict:
        return dict(self.variants) if self.variants else {self.name: {}}

    def budget(self, kind: str, level: str) -> Budget:
        if level not in LEVELS:
            raise JaxqcError(f"unknown budget {level!r}; one of {', '.join(LEVELS)}")
        if (kind, level) not in self.budgets:
            raise JaxqcError(f"{self.name} has no {level} budget for {kind} data")
        return self.budgets[(kind, level)]

    def make_config(self, **overrides):
        fields = {f.name for f in dataclasses.fields(self.config_class)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise JaxqcError(f"{self.name}: unknown setting(s) {', '.join(unknown)}; the settings are "
                             f"{', '.join(sorted(fields))}")
        overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        try:
            return self.config_class(**{**self.defaults, **overrides})
        except (TypeError, ValueError) as err:
            raise JaxqcError(f"{self.name}: invalid settings {overrides}: {err}") from None

    def config_from(self, d: Mapping):
        """The config from a saved dict (unknown keys ignored: files written by other versions load)."""
        if self.config_from_json is not None:
            return self.config_from_json(d)
        return self.config_class(**config_fields(self.config_class, d))


def config_fields(config_class, d: Mapping) -> dict:
    """The entries of a saved config dict that are fields of `config_class` (lists as tuples)."""
    fields = {f.name for f in dataclasses.fields(config_class)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in fields}


_SPECS: dict[str, ModelSpec] = {}
_BUILTIN = ("krr", "gdml", "schnet", "dtnn", "cormorant", "mace", "schnorb", "gschnet")  # modules of jaxqc.models, in table order
BUILTIN_NAMES = ("krr", "gdml", "sgdml", "schnet", "dtnn", "cormorant", "mace", "schnorb", "gschnet")  # what they register (for --help,
# without importing jax and flax)
_loaded = {"builtin": False, "plugins": False}


def register(spec: ModelSpec) -> ModelSpec:
    """Add a model family (or replace one of the same name from the same module: re-imports are fine)."""
    if not isinstance(spec, ModelSpec):
        raise JaxqcError(f"register() takes a jaxqc.models.ModelSpec, not {type(spec).__name__}")
    old = _SPECS.get(spec.name)
    module = spec.module or _caller_module()
    if old is not None and old.module != module:
        raise JaxqcError(f"a model named {spec.name!r} is already registered (by {old.module}); choose another name")
    for kind, level in spec.budgets:
        if kind not in KINDS or level not in LEVELS:
            raise JaxqcError(f"{spec.name}: budget key {(kind, level)} is not one of {KINDS} x {LEVELS}")
    _SPECS[spec.name] = dataclasses.replace(spec, module=module)
    return _SPECS[spec.name]


def unregister(name: str) -> None:
    """Remove a registered model (tests, notebooks that redefine one); unknown names are ignored."""
    _SPECS.pop(name, None)


def _caller_module() -> str:
    frame = sys._getframe(2)
    return frame.f_globals.get("__name__", "")


def _load_builtin() -> None:
    if not _loaded["builtin"]:
        _loaded["builtin"] = True
        for name in _BUILTIN:
            importlib.import_module(f"jaxqc.models.{name}")


def load_plugin(source: str) -> None:
    """Import a module by dotted name or a Python file by path, so that it registers its models."""
    path = Path(source)
    if source.endswith(".py") or path.exists():
        if not path.is_file():
            raise JaxqcError(f"plugin {source}: no such file")
        name = f"jaxqc_plugin_{path.stem}"
        if name in sys.modules:
            return
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as err:  # a plugin's own bug: one line, not a traceback
            del sys.modules[name]
            raise JaxqcError(f"plugin {source}: {type(err).__name__}: {err}") from None
        return
    try:
        importlib.import_module(source)
    except ImportError as err:
        raise JaxqcError(f"plugin {source}: cannot import it ({err})") from None


def _load_plugins() -> None:
    if _loaded["plugins"]:
        return
    _loaded["plugins"] = True
    for source in filter(None, os.environ.get("JAXQC_PLUGINS", "").split(os.pathsep)):
        load_plugin(source)
    from importlib.metadata import entry_points

    for ep in entry_points(group="jaxqc.models"):
        try:
            obj = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken third-party package must not break jaxqc
            print(f"jaxqc: warning: entry point {ep.name} ({ep.value}) failed to load: {err}", file=sys.stderr)
            continue
        if callable(obj) and not isinstance(obj, type):
            obj()


def names() -> list[str]:
    """Every registered model name (built-in first, in table order)."""
    _load_builtin()
    _load_plugins()
    rank = {n: k for k, n in enumerate(BUILTIN_NAMES)}  # not import order: a test may import one family first
    return sorted(_SPECS, key=lambda n: rank.get(n, len(rank)))  # stable: plugins keep their order


def get(name: str) -> ModelSpec:
    """The spec of a model name or of a benchmark method name (krr-cm -> krr); a clear error otherwise."""
    _load_builtin()
    if name not in _SPECS:
        _load_plugins()
    if name in _SPECS:
        return _SPECS[name]
    for spec in _SPECS.values():
        if name in spec.methods():
            return spec
    raise JaxqcError(f"unknown model {name!r}; registered: {', '.join(names())}")


def methods() -> dict:
    """{method name: (spec, config overrides)} over every registered family: the built-in ones first in
    table order, then the others in registration order."""
    builtin = [f"jaxqc.models.{m}" for m in _BUILTIN]
    order = sorted(names(), key=lambda n: (builtin.index(_SPECS[n].module) if _SPECS[n].module in builtin
                                           else len(builtin)))
    out = {}
    for n in order:
        spec = _SPECS[n]
        for m, overrides in spec.methods().items():
            out[m] = (spec, dict(overrides))
    return out
