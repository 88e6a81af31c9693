"""The spec of a network family: a flax module of per-atom outputs, trained by the shared optax loop.

`network_spec(name, config_class, module_class, ...)` gives a ModelSpec whose
- energy is sum_i (scale y_i + shift + E_ref[Z_i]) (or the mean, for intensive targets) of the module's
  per-atom outputs y [B, A] = module(config).apply(params, Z, R, mask);
- fit is jaxqc.train.loop.train (checkpoints, resume, plateau decay, early stopping, devices), with the
  scale, shift and element references fixed from the training molecules.
SchNet, DTNN and Cormorant are registered through it, and so can any network written outside jaxqc.
params = {"net": flax parameters, "stats": {"scale", "shift", "atom_ref"}}.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np

from ..elements import SYMBOLS
from ..errors import JaxqcError
from .registry import Budget, Fitted, ModelSpec, config_fields

from ..nn.model import INTENSIVE  # noqa: E402  (targets with a mean readout)

# train flags of the CLI (dest -> TrainConfig field), shared by every network
TRAIN_FLAGS = {"batch_size": "batch_size", "lr": "lr"}


def module_energy(module_class, config):
    """energy(params, molecules) -> [B] of a module of per-atom outputs (see the module docstring)."""
    from ..nn.layers import atomwise_mean, atomwise_sum

    net = module_class(config)

    def energy(params, molecules):
        y = net.apply({"params": params["net"]}, molecules.Z, molecules.R, molecules.mask,
                      **_edges(molecules))  # [B, A]
        s = params["stats"]
        if getattr(config, "readout", "sum") == "mean":
            return atomwise_mean(y, molecules.mask, s["scale"], s["shift"])
        return atomwise_sum(y, molecules.mask, molecules.Z, s["scale"], s["shift"], s["atom_ref"])

    return energy


def _edges(molecules) -> dict:
    """{"edges": the batch's edge list} for modules that run on edges (batches carry one only for them)."""
    edges = getattr(molecules, "edges", None)
    return {} if edges is None else {"edges": edges}


def init_params(module_class, config, key, example, stats: dict) -> dict:
    import jax
    import jax.numpy as jnp

    net = module_class(config)
    variables = jax.jit(net.init)(key, example.Z, example.R, example.mask, **_edges(example))  # one compilation
    return {"net": variables["params"], "stats": {k: jnp.asarray(v, jnp.float32) for k, v in stats.items()}}


def train_config(budget: Budget, seed: int):
    """The optax loop's TrainConfig of a budget: epochs (and a wall-clock guard), options["train"]."""
    from ..train.loop import TrainConfig

    kw = dict(budget.options.get("train", {}))
    if budget.epochs is not None:
        kw["epochs"] = int(budget.epochs)
    if budget.max_minutes is not None:
        kw["time_budget_min"] = float(budget.max_minutes)
        kw.setdefault("epochs", 10**9)
    try:
        return TrainConfig(seed=seed, **kw)
    except TypeError as err:
        raise JaxqcError(f"training options {kw}: {err}") from None


def make_fit(name: str, module_class):
    def fit(config, data, split, key, budget: Budget, *, out=None, resume: bool = False, progress: bool = True,
            n_devices: int | None = None, target: str = "energy", seed: int = 0) -> Fitted:
        from ..nn import model as nnmodel
        from ..train import loop

        use_forces = bool(budget.options.get("forces", False))
        if use_forces and data.F is None:
            raise JaxqcError("--forces: the data set has no forces")
        if use_forces and target != "energy":
            raise JaxqcError("--forces trains energies and forces; use --target energy (the default for MD data)")
        nnmodel.label_of(data, target)  # a clear error for an unknown target
        if target in INTENSIVE and getattr(config, "readout", None) == "sum":
            config = dataclasses.replace(config, readout="mean")
        cfg = train_config(budget, seed)
        if use_forces and cfg.force_weight == 0:
            cfg = dataclasses.replace(cfg, force_weight=1.0, energy_weight=0.01)
        max_z = getattr(config, "max_z", 100)
        batched = np.concatenate([np.asarray(split[k]) for k in ("train", "valid") if k in split]).astype(int)
        bad = sorted({int(z) for z in np.unique(data.Z[batched]) if z > max_z})
        if bad:  # the embedding table has max_z + 1 rows: a larger Z would index past it
            raise JaxqcError(f"{name}: element(s) {', '.join(f'{SYMBOLS[z]} (Z={z})' for z in bad)} in the "
                             f"training/validation data are beyond the model's embedding table (Z <= {max_z})")
        ref = nnmodel.atom_reference(data, target, max_z)
        stats = nnmodel.fit_stats(data, split["train"], target, ref, use_forces, getattr(config, "readout", "sum"))
        example = data.molecules(np.asarray(split["train"])[:2])
        params = init_params(module_class, config, key, example, stats)
        prov = {"dataset_md5": data.md5, "dataset_name": data.meta.get("name"),
                "protocol": split.get("protocol", "split given by the caller"),
                "test_idx": np.asarray(split.get("test", np.zeros(0, int))), "target": target,
                "elements": sorted(int(z) for z in np.unique(data.Z[np.asarray(split["train"])]) if z > 0)}
        run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix=f"jaxqc_{name}_"))
        summary = loop.train(name, config, module_energy(module_class, config), params, data, split, cfg, run_dir,
                             target=target, resume=resume, n_devices=n_devices, provenance=prov, progress=progress)
        return fitted_from_run(summary, run_dir, config)

    return fit


def fitted_from_run(summary: dict, run_dir: Path, config) -> Fitted:
    """The Fitted of a finished loop.train run: the best model's params (run_dir/model.npz) and the summary."""
    from .saved import load

    best = load(run_dir)
    info = {k: summary[k] for k in ("epochs", "best_epoch", "best_valid", "best_metric", "stop_reason", "steps",
                                    "time_s")}
    info.update(run_dir=str(run_dir), hit_time_guard=summary["stop_reason"] == "time budget")
    return Fitted(best.params, info, config)


def describe_sizes(name: str, sizes):
    """describe(config) -> 'name, 128 features, 6 interactions, cutoff 5 Å' from (field, label) pairs."""
    def describe(config) -> str:
        parts = [f"{getattr(config, f)} {label}" if label != "l_max" else f"l_max {config.l_max}"
                 for f, label in sizes]
        cutoff = getattr(config, "cutoff_ang", None)
        parts.append("all pairs" if cutoff is None else f"cutoff {cutoff:g} Å")
        return ", ".join([name, *parts])

    return describe


def applies(kind: str, data) -> str | None:
    if kind == "frames" and data.E is None:
        return "the networks learn an energy (forces are its gradient); the data set has no energies"
    return None


def make_from_flags(name: str, flag_fields: dict):
    """from_flags(flags, data) -> (config overrides, Budget): model-size flags through `flag_fields`
    (CLI dest -> config field), training flags into the budget."""
    def from_flags(flags: dict, data) -> tuple[dict, Budget]:
        overrides = {}
        for dest, value in flags.items():
            if value is None or dest not in ALL_MODEL_FLAGS:
                continue
            if dest not in flag_fields:
                raise JaxqcError(f"--{dest.replace('_', '-')} is not a {name} option")
            overrides[flag_fields[dest]] = value
        train = {TRAIN_FLAGS[k]: flags[k] for k in TRAIN_FLAGS if flags.get(k) is not None}
        budget = Budget(epochs=flags.get("epochs") if flags.get("epochs") is not None else
                        (None if flags.get("time_budget") is not None else 1000),
                        max_minutes=flags.get("time_budget"),
                        options={"train": train, "forces": bool(flags.get("forces"))})
        return overrides, budget

    return from_flags


ALL_MODEL_FLAGS = ("features", "interactions", "cutoff", "l_max")  # the CLI's model-size flags


def network_spec(name: str, config_class, module_class, description: str, budgets: dict, sizes,
                 flag_fields: dict | None = None) -> ModelSpec:
    """A ModelSpec for a flax module of per-atom outputs (see the module docstring)."""
    flag_fields = flag_fields or {"features": "features", "interactions": "interactions", "cutoff": "cutoff_ang"}
    return ModelSpec(
        name=name, config_class=config_class, fit=make_fit(name, module_class),
        energy=lambda config: module_energy(module_class, config),
        outputs=("energy", "forces", "property"), describe=describe_sizes(name, sizes), budgets=budgets,
        description=description, applies=applies, from_flags=make_from_flags(name, flag_fields),
        config_from_json=lambda d: config_class(**config_fields(config_class, d.get("model", d))),
        init=lambda config, key, example, stats: init_params(module_class, config, key, example, stats),
    )
