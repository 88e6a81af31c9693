"""`jaxqc compare`: the registry x N. Every registered method that applies, on one data set, with one
protocol, in one table.

For each method of `registry.methods()` (table order): `spec.applies(kind, data)` says whether it applies;
`spec.budget(kind, level)` gives its training sizes (clamped to the pool), epochs and options; the config is
`spec.make_config(**budget.options["model"], **variant overrides)`; each N is one `spec.fit` on the
nested prefix pool[:N] and one prediction of the test frames through the model's predictor. Nothing here
names a model family: grids, symmetries and training live in each family's fit.

Each method runs in its own worker process (jaxqc.benchmark.worker) unless --in-process, so that its
peak memory is its own.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import JaxqcError
from ..models import registry
from . import budgets, protocol, report
from .worker import json_default, peak_mb, reset_peak, run_in_worker, status_mb

# fit-info keys shown under the row's name for them (the fits' own names differ)
ROW_ALIASES = {"solver_used": "solver", "lam_used": "lambda"}


# ---- which methods, with what ------------------------------------------------------------------------
def all_methods() -> list:
    """Every registered method in table order: the built-in families first, in the registry's order
    (registration order alone changes when a family module is imported before the registry loads)."""
    builtin = [f"jaxqc.models.{name}" for name in getattr(registry, "_BUILTIN", ())]
    methods = registry.methods()
    rank = {m: (builtin.index(spec.module) if spec.module in builtin else len(builtin), k)
            for k, (m, (spec, _)) in enumerate(methods.items())}
    return sorted(methods, key=rank.__getitem__)


def parse_methods(values) -> list:
    """The --methods values (comma or space separated) in table order; all methods when none."""
    known = all_methods()
    if not values:
        return known
    names = [v.strip().lower() for value in values for v in str(value).split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise JaxqcError(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return [m for m in known if m in names]


def learns_forces(spec, kind: str, data) -> bool:
    """Forces are fitted and evaluated: frames with forces and a model that outputs them."""
    return kind == "frames" and data.F is not None and "forces" in spec.outputs


def resolve(method: str, kind: str, level: str, data):
    """(spec, config, budget) of a method on data of this kind; the same in the planner and the worker."""
    spec, overrides = registry.methods()[method]
    budget = spec.budget(kind, level)
    config = spec.make_config(**{**budget.options.get("model", {}), **overrides})
    return spec, config, budgets.for_data(budget, learns_forces(spec, kind, data))


def not_applicable(spec, kind: str, level: str, data) -> str | None:
    reason = spec.applies(kind, data)
    if reason is None and (kind, level) not in spec.budgets:
        reason = f"no {level} budget for {kind} data"
    return reason


def describe_method(spec, overrides: dict) -> str:
    extra = ", ".join(f"{k} {v}" for k, v in overrides.items())
    return f"{spec.description} ({extra})" if extra else spec.description


def plan_entry(method: str, kind: str, level: str, n_pool: int, data) -> dict:
    """What runs for one method: "applicable" and "reason", or N (clamped), settings (the budget), model
    (the config the fit starts from; the fit resolves open settings such as grids and targets),
    model_settings (what the budget and the variant set), forces and notes."""
    spec, overrides = registry.methods()[method]
    entry = {"description": describe_method(spec, overrides)}
    reason = not_applicable(spec, kind, level, data)
    if reason:
        return {"applicable": False, "reason": reason, **entry}
    spec, config, budget = resolve(method, kind, level, data)
    entry.update(applicable=True, n_train=budgets.train_sizes(budget, n_pool), settings=budgets.settings(budget),
                 model=spec.config_json(config), model_settings={**budget.options.get("model", {}), **overrides},
                 forces=learns_forces(spec, kind, data),
                 energy_only=kind == "frames" and "forces" not in spec.outputs)
    notes = [budget.options.get("note"), budgets.epochs_note(budget), budgets.size_note(spec, config, budget)]
    if entry["energy_only"]:
        notes.insert(0, "energies only: this model predicts energies, not forces (force MAE not applicable)")
    if any(notes):
        entry["note"] = "; ".join(n for n in notes if n)
    if budget.options.get("reference"):
        entry["reference"] = budget.options["reference"]
    return entry


def make_plan(kind: str, level: str, n_pool: int, methods, data) -> dict:
    budgets.check_level(level)
    return {m: plan_entry(m, kind, level, n_pool, data) for m in methods}


# ---- one method ----------------------------------------------------------------------------------------
def metric_row(E, E_ref, F=None, F_ref=None) -> dict:
    from ..metrics import mae_rmse

    out = {f"energy_{k}": v for k, v in mae_rmse(E, E_ref).items()} if E_ref is not None else {}
    if F is not None and F_ref is not None:
        out.update({f"forces_{k}": v for k, v in mae_rmse(F, F_ref).items()})
    return out


def info_columns(info: dict) -> dict:
    """A fit's info as row columns: scalars flat (under ROW_ALIASES names), the rest under "fit_info"."""
    flat, rest = {}, {}
    for k, v in info.items():
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            flat[ROW_ALIASES.get(k, k)] = v
        else:
            rest[k] = v
    return {**flat, "fit_info": rest} if rest else flat


def fit_and_test(method: str, spec, config, budget, n: int, data, proto: dict, test, target: str, kind: str,
                 out_dir, progress: bool, seed: int):
    """(row, predictions) of one training size: fit on pool[:n], predict the test frames twice (the second
    pass is the throughput)."""
    import jax

    from ..models import saved

    split = {"train": np.asarray(proto["pool"][:n]), "valid": np.asarray(proto["valid"]),
             "test": np.asarray(proto["test"]) if proto.get("test_in_data", True) else np.zeros(0, int),
             "protocol": proto["description"]}
    out = Path(out_dir) / "runs" / f"{method}_n{n}" if out_dir is not None else None
    t0 = time.perf_counter()
    fitted = spec.fit(config, data, split, jax.random.PRNGKey(seed), budget, out=out, progress=progress,
                      target=target, seed=seed)
    model = saved.from_fit(spec, config, fitted, target)
    predict = model.predictor(forces=model.is_force_field and test.F is not None)
    fit_s = time.perf_counter() - t0
    E, F = predict(test)
    t = time.perf_counter()
    predict(test)
    pred_s = time.perf_counter() - t
    E_ref = protocol.reference(test, target)
    mask = test.Z > 0
    row = {"n_train": int(n), **metric_row(E, E_ref, None if F is None else F[mask],
                                           None if F is None else test.F[mask]),
           "fit_s": fit_s, "predict_per_s": len(test) / pred_s, **info_columns(fitted.info)}
    row.setdefault("hit_time_guard", False)
    notes = ["energy only"] if kind == "frames" and "forces" not in spec.outputs else []
    if row["hit_time_guard"]:
        notes.append(f"stopped by the {budget.max_minutes:g}-min wall-clock guard after {row.get('epochs')} epochs")
    if notes:
        row["note"] = "; ".join(notes)
    return row, {"E": E, "E_ref": E_ref, "F": F, "F_ref": None if F is None else test.F}


def save_predictions(path: Path, n: int, pred: dict, test) -> str:
    """The test predictions of one run (real atoms' force components only) for the parity plot."""
    arrays = {k: np.asarray(v) for k, v in pred.items() if v is not None}
    if "F" in arrays:
        mask = test.Z > 0
        arrays["F"], arrays["F_ref"] = arrays["F"][mask].reshape(-1), arrays["F_ref"][mask].reshape(-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, n_train=n, **arrays)
    return str(path)


def run_method(method: str, level: str, data, proto: dict, test, target: str, kind: str, out_dir=None,
               progress: bool = True, seed: int = 0) -> dict:
    """Every training size of one method: {"runs": [row, ...], "error"?, "predictions"?}; the test
    predictions of the largest N go to out_dir/predictions/<method>.npz. One failure ends the method."""
    spec, config, budget = resolve(method, kind, level, data)
    runs, last = [], None
    result = {"runs": runs}
    for n in budgets.train_sizes(budget, len(proto["pool"])):
        can_reset = reset_peak()
        rss0 = status_mb("VmRSS")
        try:
            row, pred = fit_and_test(method, spec, config, budget, n, data, proto, test, target, kind, out_dir,
                                     progress, seed)
        except JaxqcError as err:
            result["error"] = str(err)
            break
        except Exception as err:  # noqa: BLE001 - one method's failure is a result, not the end of compare
            result["error"] = f"{type(err).__name__}: {err}"
            break
        row.update(peak_rss_mb=peak_mb(), rss_start_mb=rss0, peak_is_per_run=can_reset)
        runs.append(row)
        last = (row["n_train"], pred)
        if progress:
            print(f"compare: {method} N={row['n_train']}: " + report.summary(row), file=sys.stderr, flush=True)
    if last is not None and out_dir is not None:
        result["predictions"] = save_predictions(Path(out_dir) / "predictions" / f"{method}.npz", *last, test)
    return result


# ---- the whole comparison ----------------------------------------------------------------------------
def build(args) -> dict:
    """Read the data, choose the protocol and the plan: the context of a comparison (nothing trained)."""
    units = {k: getattr(args, k, None) for k in ("energy_unit", "force_unit", "length_unit")}
    methods = parse_methods(args.methods)
    level = budgets.check_level(args.budget)
    data = protocol.read_data(args.data, units)
    kind, target = protocol.data_kind(data, args.target)
    test_file = None
    if args.test:
        test_file = protocol.read_data(args.test, units, "--test")
        protocol.check_test_data(data, test_file, kind, target, args.test)
    proto = protocol.make_protocol(data, kind, level, test_file is not None,
                                   len(test_file) if test_file is not None else 0, seed=args.seed)
    proto["test_in_data"] = test_file is None
    plan = make_plan(kind, level, len(proto["pool"]), methods, data)
    return {"data": data, "test_file": test_file, "kind": kind, "target": target, "proto": proto, "plan": plan,
            "info": data_info(args, data, test_file, kind, target), "units_in": units, "budget": level,
            "methods": methods, "seed": args.seed,
            "units": {"energy": data.units.get(target, "") if kind == "property" else "kcal/mol",
                      "forces": "kcal/mol/Å", "fit_s": "s", "predict_per_s": "molecules/s", "peak_rss_mb": "MiB"}}


def data_info(args, data, test_file, kind: str, target: str) -> dict:
    n_atoms = data.n_atoms
    info = {"source": str(args.data), "name": str(data.meta.get("name") or Path(str(args.data)).stem),
            "md5": data.md5, "n_molecules": len(data), "atoms": [int(n_atoms.min()), int(n_atoms.max())],
            "theory": data.meta.get("theory"), "kind": kind, "target": target}
    if kind == "frames":
        info["formula"] = protocol.formula(data.Z[0])
        info["has_forces"] = data.F is not None
    if test_file is not None:
        info["test"] = {"source": str(args.test), "md5": test_file.md5, "n_molecules": len(test_file)}
    return info


def plan_json(ctx: dict) -> dict:
    p = ctx["proto"]
    return {"budget": ctx["budget"], "budget_note": budgets.NOTES[ctx["budget"]], "data": ctx["info"],
            "target": ctx["target"], "units": ctx["units"],
            "protocol": {"description": p["description"], "n_pool": int(len(p["pool"])),
                         "n_valid": int(len(p["valid"])), "n_test": int(len(p["test"]))},
            "methods": ctx["plan"]}


def plugin_sources(methods) -> list:
    """Files or modules that registered these methods outside jaxqc, for the worker to load again."""
    out = []
    for m in methods:
        module = registry.methods()[m][0].module
        if module.startswith("jaxqc_plugin_") and module in sys.modules:
            source = sys.modules[module].__file__
        elif module and module.split(".")[0] != "jaxqc":
            source = module
        else:
            continue
        if source not in out:
            out.append(source)
    return out


def worker_spec(ctx: dict, out_dir: Path, progress: bool) -> dict:
    proto = {k: (np.asarray(v).tolist() if k in ("pool", "valid", "test") else v) for k, v in ctx["proto"].items()}
    return {"data": ctx["info"]["source"], "test": ctx["info"].get("test", {}).get("source"), "units": ctx["units_in"],
            "target": ctx["target"], "kind": ctx["kind"], "level": ctx["budget"], "out_dir": str(out_dir),
            "progress": progress, "seed": ctx.get("seed", 0), "protocol": proto,
            "plugins": plugin_sources([m for m, e in ctx["plan"].items() if e["applicable"]])}


def parse_jobs(jobs):
    """--jobs: "auto" or a positive int."""
    if jobs in (None, "auto"):
        return "auto"
    try:
        n = int(jobs)
    except (TypeError, ValueError):
        n = 0
    if n < 1:
        raise JaxqcError(f"--jobs {jobs}: give a positive number of worker processes, or auto")
    return n


def lanes(jobs) -> list:
    """The CPU sets of the worker processes that run at once: `jobs` ("auto": 2 on a CPU-only machine with 2
    or more cores, else 1) lanes, each owning an equal share of this process's CPUs ([None]: one lane with
    every CPU). Budgets count epochs, so the errors do not depend on the lanes; the times are those of a
    lane's cores."""
    import jax

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    n = parse_jobs(jobs)
    if n == "auto":
        n = 2 if jax.default_backend() == "cpu" and len(cpus) >= 2 else 1
    n = min(n, len(cpus))
    return [cpus[k::n] for k in range(n)] if n > 1 else [None]


def run(ctx: dict, out_dir, in_process: bool = False, progress: bool = True, jobs="auto") -> dict:
    """Run every applicable method of the plan; write out_dir/compare.json, plots and predictions. Worker
    processes run `jobs` at a time (lanes), the methods taken in the plan's order."""
    import json
    import queue
    from concurrent.futures import ThreadPoolExecutor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = {**plan_json(ctx), **report.provenance(ctx.get("command"), in_process)}
    data, test_file, proto = ctx["data"], ctx["test_file"], ctx["proto"]
    test = (test_file if test_file is not None else data).subset(proto["test"])
    base = None if in_process else worker_spec(ctx, out_dir, progress)
    cpu_sets = [None] if in_process else lanes(jobs)
    result["lanes"] = [c for c in cpu_sets if c is not None]
    free = queue.Queue()
    for c in cpu_sets:
        free.put(c)

    def one(method, entry):
        cpus = free.get()
        try:
            if progress:
                print(f"compare: {method} ({entry['description']}), N = {', '.join(map(str, entry['n_train']))}"
                      + (f" [CPUs {','.join(map(str, cpus))}]" if cpus else ""), file=sys.stderr, flush=True)
            t = time.perf_counter()
            if in_process:
                res = run_method(method, ctx["budget"], data, proto, test, ctx["target"], ctx["kind"], out_dir,
                                 progress, seed=ctx.get("seed", 0))
            else:
                res = run_in_worker({**base, "method": method, "cpus": cpus},
                                    prefix=f"[{method}] " if len(cpu_sets) > 1 else "")
            res["wall_s"] = time.perf_counter() - t
            if "error" in res and progress:
                print(f"compare: {method} failed: {res['error']}", file=sys.stderr, flush=True)
            entry.update(res)
        finally:
            free.put(cpus)

    todo = [(m, e) for m, e in ctx["plan"].items() if e["applicable"]]
    if len(cpu_sets) == 1:  # one lane: in this thread (Ctrl-C stops it at once)
        for m, e in todo:
            one(m, e)
    else:
        with ThreadPoolExecutor(max_workers=len(cpu_sets)) as pool:
            for f in [pool.submit(one, m, e) for m, e in todo]:
                f.result()
    result["rows"] = report.table_rows(ctx["plan"])
    result["plots"] = report.make_plots(result, out_dir, all_methods())
    result["wall_s"] = time.perf_counter() - t0
    (out_dir / "compare.json").write_text(json.dumps(result, indent=1, default=json_default))
    result["out"] = str(out_dir / "compare.json")
    return result


def main(args) -> int:
    """The `jaxqc compare` command (args from cli.build_parser)."""
    import json

    parse_jobs(getattr(args, "jobs", "auto"))
    if args.out and Path(args.out).exists() and not Path(args.out).is_dir():
        raise JaxqcError(f"--out {args.out}: a file is already there; give a folder for compare.json and the plots")
    ctx = build(args)
    ctx["command"] = report.command_line(args, parse_methods(args.methods) if args.methods else None)
    if args.plan:
        plan = plan_json(ctx)
        print(json.dumps(plan, default=json_default) if args.json else report.format_plan(plan))
        return 0
    result = run(ctx, args.out or f"compare_{ctx['info']['name']}", in_process=args.in_process,
                 progress=not args.quiet, jobs=getattr(args, "jobs", "auto"))
    if args.json:
        print(json.dumps(result, default=json_default))
    else:
        print(report.format_table(result))
        print(f"wrote {result['out']}" + "".join(f", {p}" for k, p in result["plots"].items() if k != "error"))
    return 0

