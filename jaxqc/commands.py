"""What the `jaxqc` subcommands do, for any registered model (cli.py parses and calls these).

train:    spec.from_flags (+ --config FILE.py, --set key=value) -> config and budget; the family's split;
          spec.fit; the model saved with its split indices and resolved config.
evaluate: models.load; the split saved with the model (or all of --data); the one prediction path.
md:       md.models.load_potential; md.run.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .errors import DataError, JaxqcError, WriteError


# ---- train ------------------------------------------------------------------------------------------
def resolve_train(args, data):
    """(spec, config, budget, target) from the flags, the config file and --set."""
    from . import models
    from .models.registry import Budget

    spec = models.get(args.method)
    flags = vars(args)
    fields = {f.name for f in dataclasses.fields(spec.config_class)}
    for flag in ("covariant", "baseline", "eps_weight"):
        if flags.get(flag) is not None and flags.get(flag) is not False and flag not in fields:
            raise JaxqcError(f"--{flag.replace('_', '-')} is not a {spec.name} option (only models with that setting take it)")
    overrides, budget = spec.from_flags(flags, data) if spec.from_flags else ({}, Budget())
    if getattr(args, "config", None) or getattr(args, "set", None):
        from .configfile import apply_sets, load_config_file

        extra = load_config_file(args.config) if args.config else {}
        extra = apply_sets(extra, args.set or [])
        budget = _budget_from(extra.pop("budget", {}), budget)
        overrides.update(extra.pop("model", {}))
        overrides.update(extra)
    config = spec.make_config(**overrides)
    target = (args.target or ["U0" if "U0" in data.props else "energy"])[0]
    return spec, config, budget, target


def _budget_from(d: dict, budget):
    if not d:
        return budget
    opts = {**budget.options, **d.pop("options", {})}
    for k in ("train", "model"):
        if k in d:
            opts[k] = {**opts.get(k, {}), **d.pop(k)}
    try:
        return dataclasses.replace(budget, options=opts, **d)
    except TypeError as err:
        raise JaxqcError(f"budget settings {d}: {err}") from None


POSITIVE_FLAGS = ("n_train", "epochs", "batch_size", "features", "interactions", "cg_rank")
POSITIVE_FLOATS = ("lr", "time_budget", "cutoff", "cg_tol")


def check_flags(args) -> None:
    """One-line errors for values that cannot train anything (before any data is read)."""
    for name in POSITIVE_FLAGS:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise JaxqcError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if getattr(args, "l_max", None) is not None and args.l_max < 0:
        raise JaxqcError(f"--l-max must be >= 0, got {args.l_max}")
    if getattr(args, "n_valid", None) is not None and args.n_valid < 1:
        raise JaxqcError(f"--n-valid must be >= 1, got {args.n_valid}")
    for name in POSITIVE_FLOATS:
        v = getattr(args, name, None)
        if v is not None and not (np.isfinite(v) and v > 0):
            raise JaxqcError(f"--{name.replace('_', '-')} must be a positive number, got {v:g}")
    for name in ("sigma_grid", "lambda_grid"):
        bad = [v for v in (getattr(args, name, None) or []) if not (np.isfinite(v) and v > 0)]
        if bad:
            raise JaxqcError(f"--{name.replace('_', '-')} values must be positive numbers, got {bad[0]:g}")


def check_out(args) -> None:
    """Refuse to overwrite a finished model or run, or to resume a run that is not there (before training)."""
    out = Path(args.out)
    if out.suffix == ".npz":
        if out.is_dir():
            raise JaxqcError(f"--out {out}: is a directory; give a model file name (*.npz) or another directory")
        if out.exists() and not args.overwrite:
            raise JaxqcError(f"--out {out}: a model file is already there; add --overwrite to replace it or "
                             f"choose another name")
        if args.resume:
            raise JaxqcError("--resume continues a run directory; --out names a model file")
        return
    if out.exists() and not out.is_dir():
        raise JaxqcError(f"--out {out}: a file is already there; give a run directory")
    has_run = out.is_dir() and any((out / f).exists() for f in ("model.npz", "checkpoint.npz"))
    if args.resume and not (out / "checkpoint.npz").exists():
        raise JaxqcError(f"--resume: {out} has no checkpoint.npz to continue (train without --resume to start)")
    if has_run and not args.resume and not args.overwrite:
        raise JaxqcError(f"--out {out}: holds a run already (model.npz / checkpoint.npz); add --resume to continue "
                         f"it, --overwrite to replace it, or choose another --out")


def check_resume_split(out: Path, split: dict) -> None:
    """--resume must continue on the split the run was started with (same training and validation frames)."""
    from .potential import load_model

    path = out / "model.npz"
    if not path.exists():
        return
    prov = load_model(path)[2]["provenance"]
    for k in ("train", "valid"):
        saved = np.asarray(prov.get(f"{k}_idx", []))
        if len(saved) and (len(saved) != len(split[k]) or np.any(np.sort(saved) != np.sort(np.asarray(split[k])))):
            raise JaxqcError(f"--resume: the run in {out} was trained on another {k} split ({len(saved)} "
                             f"molecules, now {len(split[k])}); use the same --n-train/--n-valid/--seed")


def train_split(spec, data, args, config=None) -> dict:
    if spec.split is not None:
        return spec.split(data, args.n_train, args.n_valid, args.seed, config)
    from .train.run import make_split

    return make_split(data, args.n_train, args.n_valid, args.seed)


def cmd_train(args) -> int:
    import jax

    if args.coordinator or args.num_processes:
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    check_flags(args)
    out = Path(args.out)
    with lock_out(out):
        return train_locked(args, out)


def lock_out(out: Path):
    """The run directory's lock (files.run_lock) for the whole train command, so that a second writer is
    refused (naming the holder) before anything else; process 0 of a multi-host run takes it. A model
    file (*.npz) is written atomically and takes none; nor does a file in the way (check_out says so)."""
    import jax

    from .files import run_lock

    if out.suffix == ".npz" or (out.exists() and not out.is_dir()) or jax.process_index() != 0:
        return contextlib.nullcontext()
    return run_lock(out)


def train_locked(args, out: Path) -> int:
    import jax

    from . import models
    from .data import io

    check_out(args)
    data = io.read(args.data, **unit_flags(args))
    spec, config, budget, target = resolve_train(args, data)
    split = train_split(spec, data, args, config)
    if args.resume:
        check_resume_split(out, split)
    file_out = out.suffix == ".npz"
    t0 = time.perf_counter()
    fitted = spec.fit(config, data, split, jax.random.PRNGKey(args.seed), budget, out=None if file_out else out,
                      resume=args.resume, progress=True, n_devices=args.devices, target=target, seed=args.seed)
    config = fitted.config if fitted.config is not None else config
    path = out if file_out else out / "model.npz"
    if file_out or not path.exists():  # closed-form fits: the CLI saves; the optax loop saved its best model
        prov = {"dataset_md5": data.md5, "dataset_name": data.meta.get("name"),
                "protocol": split.get("protocol", ""), "seed": args.seed, "target": target,
                "elements": sorted(int(z) for z in np.unique(data.Z[np.asarray(split["train"])]) if z > 0),
                **{f"{k}_idx": np.asarray(split[k]) for k in ("train", "valid", "test") if k in split}}
        units = {"R": "Å", "E": "kcal/mol", "F": "kcal/mol/Å",
                 **{t: data.units.get(t, "kcal/mol") for t in getattr(config, "targets", (target,))}}
        save_or_rescue(path, lambda p: models.save(p, spec, config, fitted.params, prov, units, fitted.info, target))
    write_resolved_config(path, spec, config, budget, target)
    what = "frames" if target == "energy" else "molecules"
    print(f"trained {spec.name} on {len(split['train'])} {what} {summarize(fitted.info, time.perf_counter() - t0)}")
    print(f"wrote {path if file_out else out / 'model.npz'}")
    return 0


def save_or_rescue(path: Path, save) -> None:
    """save(path); when that write fails (a full disk), save(a file under the temporary directory) so the
    fitted model is not lost, and raise a one-line WriteError saying where it is."""
    from .files import rescue_dir, write_failed

    try:
        save(path)
    except (OSError, WriteError) as err:
        msg = str(err) if isinstance(err, WriteError) else write_failed(path, err)
        rescued = rescue_dir(lambda folder: save(folder / path.name))
        raise WriteError(msg + (f"; the trained model is saved in {rescued / path.name} instead" if rescued
                                else "; the trained model could not be saved anywhere")) from None


def write_resolved_config(model_path: Path, spec, config, budget, target) -> None:
    """The resolved config beside the model (MODEL.config.json, or config.json's "resolved" in a run dir)."""
    from .files import atomic_write_text

    resolved = {"model": spec.name, "target": target, "config": spec.config_json(config),
                "budget": {"epochs": budget.epochs, "max_minutes": budget.max_minutes, "options": budget.options}}
    name = model_path.with_suffix(".config.json") if model_path.name != "model.npz" else \
        model_path.parent / "resolved_config.json"
    atomic_write_text(name, json.dumps(resolved, indent=1, default=str) + "\n")


def summarize(info: dict, seconds: float) -> str:
    """One line from a fit's info: epochs and the best validation MAE, or the chosen hyperparameters."""
    if "epochs" in info:
        return (f"({info['epochs']} epochs, {info['steps']} steps, {info['time_s']:.0f} s, stopped: "
                f"{info['stop_reason']}); best validation {info.get('best_metric') or 'MAE'} {info['best_valid']:.4g} at "
                f"epoch {info['best_epoch']}")
    parts = [f"{k}={info[k]:g}" for k in ("sigma", "lambda") if k in info]
    if "n_perms" in info:
        parts.append(f"{info['n_perms']} permutation(s), {info.get('solver_used', 'dense')} solver")
    v = info.get("validation") or {}
    if "forces_mae" in v:
        parts.append(f"validation force MAE {v['forces_mae']:.4g} kcal/mol/Å"
                     + (f", energy MAE {v['energy_mae']:.4g} kcal/mol" if "energy_mae" in v else ""))
    for t, m in (info.get("validation_mae") or {}).items():
        parts.append(f"validation MAE {t} {m:.4g}")
    return f"in {seconds:.1f} s: " + "; ".join(parts)


# ---- evaluate ---------------------------------------------------------------------------------------
def evaluation_rows(model, data, split: str, source: str):
    """(indices into data, description) of the molecules to evaluate."""
    prov = model.provenance
    same = prov.get("dataset_md5") in (data.md5, data.meta.get("md5"))
    if split == "all":
        return np.arange(len(data)), "all of --data"
    if split in ("train", "valid"):
        if not same:
            raise JaxqcError(f"{source} is not the data set the model was trained on (md5 {data.md5} vs "
                             f"{prov.get('dataset_md5')}); use --split test or all")
        return np.asarray(prov[f"{split}_idx"]), f"the model's {split} split"
    if not same:
        return np.arange(len(data)), "all of --data (not the training data set)"
    if len(np.asarray(prov.get("test_idx", []))):
        return np.asarray(prov["test_idx"]), "the model's test split"
    used = np.concatenate([np.asarray(prov.get("train_idx", [])), np.asarray(prov.get("valid_idx", []))])
    return (np.setdiff1d(np.arange(len(data)), used),
            "all frames of --data except the model's training and validation frames (same data set)")


def cmd_evaluate(args) -> int:
    from . import models
    from .data import io
    from .metrics import mae_rmse

    model = models.load(args.model)
    if args.generated is not None:
        return evaluate_generated(model, args)
    if args.data is None:
        raise JaxqcError("evaluate needs --data (or --generated MOLS.extxyz for a generative model)")
    if model.spec.generate is not None:
        raise JaxqcError(f"{model.spec.name} generates molecules: evaluate it with --generated MOLS.extxyz "
                         f"(from `jaxqc generate {args.model} --out MOLS.extxyz`)")
    data = io.read(args.data, **unit_flags(args))
    idx, frames = evaluation_rows(model, data, args.split, args.data)
    if len(idx) == 0:
        raise JaxqcError(f"{args.data}: no molecules in {frames}")
    data = in_model_order(model, data, args.data)
    check_model_input(model, data.subset(idx), args.data)
    check_labels(model, data, args.data)  # before predicting: a wrong data set fails in a second, not minutes
    forces = model.is_force_field and data.F is not None
    E, F = model.predictor(forces)(data, idx)
    result = {}
    if model.target == "energy":
        if data.E is not None:
            result["energy"] = {**mae_rmse(E, data.E[idx]), "unit": "kcal/mol"}
        if forces:
            mask = data.Z[idx] > 0
            result["forces"] = {**mae_rmse(F[mask], data.F[idx][mask]), "unit": "kcal/mol/Å"}
    else:
        E = E.reshape(len(idx), -1)
        units = model.header.get("units", {})
        for k, t in enumerate(model.targets):
            result[t] = {**mae_rmse(E[:, k], data.props[t][idx]), "unit": units.get(t, units.get("target", ""))}
    if model.spec.evaluate_more is not None:
        result.update(model.spec.evaluate_more(model.config, model.params, data, idx))
    result.update(n=int(len(idx)), frames=frames)
    print_result(result, f"{len(idx)} molecules ({frames})", args.json)
    return 0


def evaluate_generated(model, args) -> int:
    from .generation import read_generated

    if model.spec.evaluate_generated is None:
        raise JaxqcError(f"{model.spec.name} is not a generative model; --generated applies to those (gschnet)")
    if args.relax_max is not None and args.relax_max < 0:
        raise JaxqcError(f"--relax-max must be >= 0, not {args.relax_max}")
    generated = read_generated(args.generated)
    from .data import io

    data = io.read(args.data, **unit_flags(args)) if args.data else None
    result = model.spec.evaluate_generated(model.config, model.params, model.header, generated, data=data,
                                           relax=not args.no_relax, relax_limit=args.relax_max,
                                           progress=None if args.json else True)
    print_result(result, f"{len(generated['Z'])} generated molecules ({args.generated})", args.json)
    return 0


def cmd_generate(args) -> int:
    """Sample molecules from a generative model; write them with SMILES and validity flags."""
    import jax

    from . import models
    from .generation import write_generated

    if args.n <= 0:
        raise JaxqcError(f"--n must be positive, not {args.n}")
    if args.temperature is not None and not args.temperature > 0:
        raise JaxqcError(f"--temperature must be positive, not {args.temperature}")
    if args.batch <= 0:
        raise JaxqcError(f"--batch must be positive, not {args.batch}")
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise JaxqcError(f"{out} exists; choose another --out or add --overwrite")
    if not out.parent.exists():
        raise JaxqcError(f"{out.parent}: no such directory")
    model = models.load(args.model)
    if model.spec.generate is None:
        raise JaxqcError(f"{model.spec.name} does not generate molecules (generative models: gschnet)")
    t0 = time.perf_counter()

    def progress(done, n):
        rate = done / max(time.perf_counter() - t0, 1e-9)
        print(f"\r  generated {done}/{n} molecules ({rate:.1f} molecules/s)", end="", file=sys.stderr, flush=True)

    g = model.spec.generate(model.config, model.params, args.n, jax.random.PRNGKey(args.seed), args.temperature,
                            batch=args.batch, progress=progress)
    print(file=sys.stderr)
    try:
        from . import chem

        checks = chem.check_many(g["Z"], g["R"])
    except JaxqcError as err:  # no RDKit: the molecules are still written
        print(f"jaxqc: note: no SMILES or validity flags ({err})", file=sys.stderr)
        checks = None
    meta = {"model": str(args.model), "temperature": g["temperature"], "seed": args.seed, "n": args.n}
    write_generated(out, g["Z"], g["R"], g["finished"], checks, meta)
    msg = f"generated {args.n} molecules in {g['seconds']:.1f} s ({args.n / g['seconds']:.1f} molecules/s, " \
          f"temperature {g['temperature']:g}); {np.mean(g['finished']):.1%} finished"
    if checks is not None:
        msg += f", {np.mean([c.valid for c in checks]):.1%} valid"
    print(msg)
    print(f"wrote {out} and {out.with_suffix('.csv')}")
    return 0


def in_model_order(model, data, source: str):
    """`data` with its atoms in the model's order, for a model of one molecule (spec.atom_order) whose data
    list the same atoms in another order: the mapping comes from the element-labelled bond graph
    (kernels.symmetries.map_atoms) and is announced on stderr. Other data are returned unchanged."""
    z = model.spec.atom_order(model.config, model.params)
    R_ref = model.spec.reference_geometry(model.config, model.params)
    if z is None or R_ref is None or data.max_atoms != len(z) or np.any(data.Z != data.Z[:1]):
        return data  # frames in several orders: check_model_input says which
    perm = model_order(z, R_ref, data.Z[0], data.R[0], source)
    if perm is None:
        return data
    print(f"jaxqc: note: {source} lists the atoms in another order than the model; mapped by the bond graph "
          f"(model atom k = data atom {perm.tolist()}[k])", file=sys.stderr)
    from .data.molecules import Dataset

    return Dataset(Z=data.Z[:, perm], R=data.R[:, perm], E=data.E, F=None if data.F is None else data.F[:, perm],
                   props=data.props, units=data.units, meta={**data.meta, "atom_map": perm.tolist()})


def model_order(z, R_ref, Z, R, source: str):
    """perm with Z[perm] == z when atoms Z, R [N, 3] are the model's molecule (z, R_ref) listed in another
    order, else None (already in its order, or another molecule: check_model_input says). Another order: other
    elements at some index (no consistent mapping: a one-line DataError), or the same element sequence with
    other bonds (rMD17 and ethanol-xtb both list C C O H H H H H H, not with the same hydrogen on the oxygen)."""
    from .kernels.symmetries import bond_graph, map_atoms

    z, Z = np.asarray(z), np.asarray(Z)
    if len(Z) != len(z) or sorted(Z.tolist()) != sorted(z.tolist()):
        return None
    if np.any(Z != z):
        return atom_mapping(z, R_ref, Z, R, source)
    if np.array_equal(bond_graph(Z, R), bond_graph(z, R_ref)):
        return None
    # the same element sequence with other bonds: another order only when some mapping keeps every bond (a
    # geometry with one bond stretched past the bond threshold has none: it stays in its own order)
    try:
        perm = map_atoms(z, R_ref, Z, R)
    except DataError:
        return None
    return None if np.array_equal(perm, np.arange(len(z))) else perm


def atom_mapping(z, R_ref, Z, R, source: str) -> np.ndarray:
    """perm with Z[perm] == z (kernels.symmetries.map_atoms), or a one-line DataError saying why not."""
    from .kernels.symmetries import map_atoms
    from .md.models import formula

    try:
        return map_atoms(z, R_ref, Z, R)
    except DataError as err:
        raise DataError(f"{source}: the model is for {formula(z)} in its own atom order and no consistent "
                        f"mapping of these atoms ({formula(Z)}) onto it exists: {err}") from None


def check_labels(model, data, source: str) -> None:
    """A one-line DataError unless `data` has what the model predicts (energies/forces, or its targets)."""
    if model.target == "energy":
        if data.E is None and not (model.is_force_field and data.F is not None):
            raise DataError(f"{source}: no energies or forces to evaluate against (the model predicts the energy; "
                            f"the data set has {', '.join(data.labels) or 'no labels'})")
        return
    missing = [t for t in model.targets if t not in data.props]
    if missing:
        raise DataError(f"{source}: no {missing[0]!r} values to evaluate against (it has "
                        f"{', '.join(sorted(data.props)) or 'no properties'})")


def check_model_input(model, data, source: str) -> None:
    """A one-line DataError unless the model can evaluate these molecules (atom order, elements)."""
    z = model.spec.atom_order(model.config, model.params)
    if z is not None:
        from .kernels.gdml import check_molecule

        check_molecule(data, z, where=source)
        return
    max_z = getattr(model.config, "max_z", None)
    if max_z is not None and int(data.Z.max()) > max_z:
        raise DataError(f"{source}: atomic number {int(data.Z.max())} above the model's largest ({max_z})")


def print_result(result: dict, header: str, as_json: bool) -> None:
    """The evaluate output: one JSON object, or a header and a line per quantity with MAE and RMSE."""
    if as_json:
        print(json.dumps(result))
        return
    print(header)
    for k, m in result.items():
        if isinstance(m, dict) and "mae" in m:
            print(f"  {k:7s} MAE {m['mae']:.4g}  RMSE {m['rmse']:.4g}  {m['unit']}")
        elif isinstance(m, dict) and "mean" in m:
            print(f"  {k} mean {m['mean']:.4g}  min {m['min']:.4g}  {m['unit']}")
        elif isinstance(m, dict) and "not_trained" in m:
            print(f"  {k:7s} not trained ({m['not_trained']})")


# ---- md ---------------------------------------------------------------------------------------------
def cmd_md(args) -> int:
    from .data import io
    from .md import models as mdm
    from .md.run import MDConfig, run_md, write_outputs

    cfg = MDConfig(steps=args.steps, dt_fs=args.dt_fs, temperature_k=args.temperature_k, ensemble=args.ensemble,
                   friction_per_fs=args.friction_per_fs, seed=args.seed, write_every=args.write_every,
                   float64=not args.float32,
                   max_temperature_k=None if args.no_guards else args.max_temperature_k,
                   max_drift_kcal_mol_atom=None if args.no_guards else args.max_drift_kcal_mol_atom,
                   bond_range_ang=None if args.no_guards else tuple(args.bond_range_ang)).check()
    if not str(args.out).lower().endswith((".extxyz", ".xyz")):
        raise JaxqcError(f"--out {args.out}: the trajectory is extended XYZ; name it *.extxyz")
    energy, params, info = mdm.load_potential(args.model)
    start = io.read(args.start, unit_check=False)  # only its geometry is used
    if not -len(start) <= args.frame < len(start):
        raise JaxqcError(f"--frame {args.frame}: {args.start} has {len(start)} frame(s)")
    k = args.frame % len(start)
    n = int(start.n_atoms[k])
    Z, R = start.Z[k, :n], start.R[k, :n]
    where = f"{args.start} frame {k}"
    z = info["z"]
    perm = None if z is None or info.get("R_ref") is None else model_order(z, info["R_ref"], Z, R, where)
    if perm is not None:
        Z, R = Z[perm], R[perm]
        print(f"jaxqc: note: {where} lists the atoms in another order than the model; mapped by the bond graph "
              f"(the trajectory is written in the model's order: atom k = start atom {perm.tolist()}[k])",
              file=sys.stderr)
    mdm.check_geometry(info, Z, where=where)
    if info["z"] is None and info["elements"] is None and not args.quiet:
        print(f"jaxqc: note: {args.model} does not record the elements it was trained on; only checked that "
              f"they are embedded (Z <= {info['max_z']})", file=sys.stderr)
    if not args.quiet:
        print(f"md: {info['description']}; {mdm.formula(Z)} from {where}; {cfg.ensemble.upper()} {cfg.steps} steps "
              f"of {cfg.dt_fs:g} fs at {cfg.temperature_k:g} K, {'float64' if cfg.float64 else 'float32'}",
              file=sys.stderr, flush=True)
    result = run_md(energy, params, Z, R, cfg, progress=not args.quiet)
    paths = write_outputs(result, args.out, info, where)
    if result.stopped:
        raise JaxqcError(f"{result.stopped}; wrote {len(result.step)} frames to {args.out}")
    log = result.log
    print(f"{cfg.ensemble.upper()} {result.steps_done} steps ({result.steps_done * cfg.dt_fs / 1000:g} ps) in "
          f"{result.run_s:.1f} s ({result.steps_per_s:.0f} steps/s, compile {result.compile_s:.1f} s): "
          f"mean T {log['temperature_K'][1:].mean():.0f} K, total energy {log['total_kcal_mol'][0]:.4f} -> "
          f"{log['total_kcal_mol'][-1]:.4f} kcal/mol")
    print(f"wrote {paths['trajectory']} ({len(result.step)} frames), {paths['log']}, {paths['summary']}"
          + (f", {paths['plot']}" if paths["plot"] else " (no plot: matplotlib not installed)"))
    return 0


# ---- data -------------------------------------------------------------------------------------------
def unit_flags(args) -> dict:
    """io.read's unit arguments from the command's --energy-unit, --force-unit, --length-unit and
    --no-unit-check (for commands that have them)."""
    units = {k: getattr(args, k, None) for k in ("energy_unit", "force_unit", "length_unit")}
    return {**units, "unit_check": not getattr(args, "no_unit_check", False)}


def _read(args):
    from .data import io

    return io.read(args.source, **unit_flags(args))


def cmd_data_info(args) -> int:
    summary = _read(args).summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    n = summary["n_atoms"]
    print(f"{summary['name']}: {summary['n_molecules']} molecules, {n['min']}-{n['max']} atoms, "
          f"elements {' '.join(summary['elements'])}")
    print("  labels: " + ", ".join(f"{k} [{u}]" for k, u in summary["labels"].items()))
    stats = summary["statistics"]
    if "E" in stats:
        e = stats["E"]
        print(f"  energy: mean {e['mean']:.2f}, std {e['std']:.2f}, range {e['min']:.2f} .. {e['max']:.2f} kcal/mol")
    if "F" in stats:
        print(f"  forces: rms {stats['F']['rms']:.2f}, max |F| {stats['F']['max_abs']:.2f} kcal/mol/Å")
    for key in ("theory", "temperature_k", "dt_fs", "seed", "engine", "command", "md5", "source"):
        if summary.get(key) is not None:
            print(f"  {key}: {summary[key]}")
    return 0


def cmd_data_convert(args) -> int:
    from .data import io

    data = _read(args)
    io.write(data, args.out)
    print(f"wrote {len(data)} molecules to {args.out}")
    return 0


def cmd_data_generate(args) -> int:
    from .data import generate, io

    command = "jaxqc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["data"] else None
    t0 = time.perf_counter()
    data = generate.generate_md_dataset(
        args.start, n_frames=args.n_frames, interval=args.interval, equilibration_steps=args.equilibration_steps,
        temperature_k=args.temperature_k, dt_fs=args.dt_fs, friction_per_fs=args.friction_per_fs,
        seed=args.seed, method=args.method, charge=args.charge, progress=True)
    if args.hamiltonian and not args.relabel_dft:
        raise JaxqcError("--hamiltonian needs --relabel-dft XC/BASIS (e.g. PBE/def2-SVP)")
    if args.relabel_dft and args.hamiltonian:
        from .data import hamiltonian

        data = hamiltonian.label_hamiltonian(data, args.relabel_dft, grid_level=args.grid_level, progress=True)
    elif args.relabel_dft:
        data = generate.relabel_pyscf(data, args.relabel_dft, progress=True)
    if command:
        data.meta["command"] = command
    data.meta["generation_seconds"] = round(time.perf_counter() - t0, 1)
    io.write_npz(data, args.out)
    print(f"wrote {len(data)} frames to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_data_label(args) -> int:
    from pathlib import Path

    from .data import generate, hamiltonian, io

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise JaxqcError(f"{out} exists: pass --overwrite to replace it, or choose another --out")
    if args.every < 1 or (args.frames is not None and args.frames < 1) or args.jobs < 1:
        raise JaxqcError("--every, --frames and --jobs must be at least 1")
    generate.parse_dft_spec(args.dft)
    data = _read(args)
    idx = np.arange(0, len(data), args.every)[:args.frames]
    data = data.subset(idx) if len(idx) < len(data) else data
    command = "jaxqc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["data"] else None
    t0 = time.perf_counter()
    if args.hamiltonian:
        data = hamiltonian.label_hamiltonian(data, args.dft, grid_level=args.grid_level, forces=not args.no_forces,
                                             jobs=args.jobs, out=out, resume=args.resume, progress=True)
    else:
        if args.grid_level is not None or args.no_forces or args.jobs > 1 or args.resume:
            raise JaxqcError("--grid-level, --no-forces, --jobs and --resume go with --hamiltonian")
        data = generate.relabel_pyscf(data, args.dft, progress=True)
    data.meta["frames_of_source"] = [int(i) for i in idx]
    if command:
        data.meta["command"] = command
    io.write_npz(data, out)
    hamiltonian.finish(out)
    per = data.meta.get("label_cpu_s_per_frame")
    print(f"wrote {len(data)} frames to {out} in {time.perf_counter() - t0:.1f} s"
          + (f" ({per:.2f} CPU s per frame)" if per else ""))
    return 0


def cmd_data_download(args) -> int:
    from .data import download

    if args.list or not args.name:
        for name, entry in download.SOURCES.items():
            print(f"{name:24s} {entry['description']}")
        return 0
    path = download.download(args.name, dest=args.dest, sha256=args.sha256)
    print(f"{args.name}: {path}")
    return 0


def cmd_compare(args) -> int:
    from .compare import main as compare_main

    return compare_main(args)
