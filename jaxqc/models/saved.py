"""One save and one load for every registered model: a jaxqc model file (potential.save_model) whose
header names the spec ("kind"), the module that registered it, the resolved config, the fit's info, the
units and the provenance (dataset md5, split indices).

    model = load("run_dir")             # or "model.npz"
    E = model.energy_fn(model.params, molecules)
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import JaxqcError
from . import registry


@dataclasses.dataclass(frozen=True)
class Model:
    """A fitted model: its spec, resolved config, params and the file header (provenance, units, target)."""

    spec: registry.ModelSpec
    config: Any
    params: Any
    header: dict
    path: str = ""

    @property
    def kind(self) -> str:
        return self.header.get("kind", self.spec.name)

    @property
    def target(self) -> str:
        """'energy' for a potential energy surface, else the property the model predicts (QM9 'U0', ...)."""
        cfg = self.header.get("config", {})
        targets = getattr(self.config, "targets", None)
        return (cfg.get("target") or self.header.get("provenance", {}).get("target")
                or (targets[0] if targets else "energy"))

    @property
    def is_force_field(self) -> bool:
        return ("forces" in self.spec.outputs and self.target == "energy"
                and bool(self.spec.force_field(self.config, self.header)))

    @functools.cached_property
    def energy_fn(self):
        """energy(params, molecules), built once per Model (so jitted callers compile once)."""
        return self.spec.energy(self.config)

    @property
    def provenance(self) -> dict:
        return self.header.get("provenance", {})

    def describe(self) -> str:
        return self.spec.describe(self.config)

    @property
    def targets(self) -> tuple:
        """The names of the energy function's output columns ([B] for one, [B, T] for several)."""
        t = getattr(self.config, "targets", None)
        return tuple(t) if t else (self.target,)

    def prepared_params(self):
        """The params energy_fn takes (spec.prepare of the saved ones)."""
        return self.spec.prepare(self.config, self.params)

    def predictor(self, forces: bool, batch_size: int | None = None):
        """predict(data, idx) -> (E, F or None) through the one prediction path (models.predict)."""
        from .predict import predictor

        fn = predictor(self.energy_fn, forces, batch_size or self.spec.predict_batch, float64=self.spec.float64,
                       n_atoms=self.spec.n_atoms(self.config, self.params), config=self.config)
        params = self.prepared_params()
        predict = lambda data, idx=None: fn(params, data, idx)  # noqa: E731
        predict.jitted = fn.jitted
        return predict


def from_fit(spec: registry.ModelSpec, config, fitted: registry.Fitted, target: str = "energy") -> Model:
    """The Model of a fit that was not saved (benchmark runs): the resolved config and the params."""
    config = fitted.config if fitted.config is not None else config
    header = {"kind": spec.name, "config": {**spec.config_json(config), "target": target}, "provenance": {}}
    return Model(spec=spec, config=config, params=fitted.params, header=header)


def model_file(path) -> Path:
    path = Path(path)
    return path / "model.npz" if path.is_dir() else path


def save(path, spec: registry.ModelSpec, config, params, provenance: dict, units: dict, info: dict | None = None,
         target: str = "energy") -> None:
    """Write a fitted model atomically (provenance: dataset md5 and name, train/valid/test indices, ...)."""
    from ..potential import save_model

    cfg = {**spec.config_json(config), "target": target}
    if info:
        cfg["fit"] = _jsonable(info)
    save_model(path, spec.name, params, cfg, {**provenance, "module": spec.module}, units)


def load(path) -> Model:
    """The Model saved at `path` (a model file or a run directory); clear errors for missing, corrupt or
    unknown models."""
    from ..potential import load_model

    path = model_file(path)
    if not path.exists():
        raise JaxqcError(f"{path}: no such model file or run directory")
    kind, params, header = load_model(path)
    try:
        spec = registry.get(kind)
    except JaxqcError:
        module = header.get("provenance", {}).get("module")
        hint = (f" (registered by {module}: import it, pass it as --plugin, or list it in JAXQC_PLUGINS)"
                if module else "")
        raise JaxqcError(f"{path}: a {kind!r} model, which no registered model family provides{hint}") from None
    cfg = header.get("config", {})
    try:
        config = spec.config_from(cfg)
    except (TypeError, ValueError, KeyError) as err:
        raise JaxqcError(f"{path}: the saved {kind} config does not fit this jaxqc ({err})") from None
    return Model(spec=spec, config=config, params=params, header=header, path=str(path))


def warm_start(params: dict, path, spec: registry.ModelSpec, config, same: tuple = ()) -> tuple[dict, str]:
    """(params ({"net", "stats"}) with every array of the model saved at `path` copied in, a one-line report).
    The saved model must be of the same family and agree on the config fields `same` (e.g. the basis). Its
    stats (target scales) come with it, so the function starts unchanged; arrays the new network adds keep their
    initialisation (a new head whose readout starts at zero leaves the function unchanged). An array whose
    shape differs, or one the new network lacks, is an error: the saved model would not carry over."""
    from flax import traverse_util

    model = load(path)
    if model.spec.name != spec.name:
        raise JaxqcError(f"--init-from {path}: a {model.spec.name} model, not {spec.name}")
    for field in same:
        if getattr(model.config, field) != getattr(config, field):
            raise JaxqcError(f"--init-from {path}: its {field} is {getattr(model.config, field)!r}, this run's "
                             f"{getattr(config, field)!r}")
    flat = traverse_util.flatten_dict(params, sep="/")
    old = traverse_util.flatten_dict(model.params, sep="/")
    lost = sorted(set(old) - set(flat))
    if lost:
        raise JaxqcError(f"--init-from {path}: the new network has no {lost[0]} ({len(lost)} saved arrays unused): "
                         f"a different architecture")
    for k, v in old.items():
        if np.shape(v) != np.shape(flat[k]):
            raise JaxqcError(f"--init-from {path}: {k} is {np.shape(v)} there and {np.shape(flat[k])} here")
        flat[k] = np.asarray(v, dtype=np.asarray(flat[k]).dtype)
    added = len(flat) - len(old)
    return traverse_util.unflatten_dict(flat, sep="/"), (f"started from {path}: {len(old)} arrays copied, "
                                                         f"{added} new")


def _jsonable(x):
    import numpy as np

    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return x
