"""Model families: one file each, every one registered here so that `jaxqc train / evaluate / md /
compare` and the ASE calculator serve it without naming it.

    from jaxqc import models
    spec = models.get("sgdml")
    fitted = spec.fit(spec.make_config(), data, split, key, spec.budget("frames", "quick"))
    models.register(models.ModelSpec(name="my-model", ...))   # a model of your own

See registry.py for the parts of a spec, saved.py for the one save/load, predict.py for the one
prediction path.
"""
from .registry import LEVELS, Budget, Fitted, ModelSpec, get, load_plugin, methods, names, register, unregister
from .saved import Model, load, save

__all__ = ["Budget", "Fitted", "LEVELS", "Model", "ModelSpec", "get", "load", "load_plugin", "methods", "names",
           "register", "save", "unregister"]
