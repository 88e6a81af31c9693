"""What a comparison reports: flat rows, the text table and plan, the learning-curve and parity plots, and
the provenance of a run (version, date, machine, how memory and time were measured, the command)."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

ROW_KEYS = ("n_train", "energy_mae", "forces_mae", "fit_s", "predict_per_s", "peak_rss_mb", "hit_time_guard", "note")


def table_rows(plan: dict) -> list:
    """One flat row per (method, N) run, and one per method that is not applicable or failed."""
    rows = []
    for m, e in plan.items():
        if not e["applicable"]:
            rows.append({"method": m, "applicable": False, "note": "not applicable: " + e["reason"]})
            continue
        for r in e.get("runs", []):
            rows.append({"method": m, "applicable": True, **{k: r[k] for k in ROW_KEYS if k in r}})
        if "error" in e:
            rows.append({"method": m, "applicable": True, "note": "failed: " + e["error"]})
    return rows


def summary(row: dict) -> str:
    """One progress line of a run."""
    parts = [f"{label} MAE {row[k]:.4g}" for k, label in (("energy_mae", "E"), ("forces_mae", "F")) if k in row]
    parts.append(f"fit {row['fit_s']:.1f} s, {row['predict_per_s']:.0f} molecules/s, peak {row['peak_rss_mb']:.0f} MB")
    if row.get("hit_time_guard"):
        parts.append("hit the wall-clock guard")
    return ", ".join(parts)


# ---- provenance --------------------------------------------------------------------------------------
def version() -> str:
    from .. import __version__

    return __version__


def machine() -> dict:
    import jax

    return {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()]}


def provenance(command: str | None, in_process: bool) -> dict:
    return {"jaxqc_version": version(), "date": time.strftime("%Y-%m-%d"), "machine": machine(), "command": command,
            "memory": ("peak_rss_mb: resident-set high-water mark (Linux VmHWM) of the process that ran the "
                       "method, over one run (fit + test prediction), reset before each run; includes Python, "
                       "the JAX runtime and the data set (rss_start_mb: the RSS when the run began). "
                       + ("Every method ran in this process (--in-process): later methods' numbers include "
                          "memory kept from earlier ones." if in_process else
                          "Each method ran in its own worker process.")),
            "timing": ("fit_s: wall time of the whole fit (symmetry search, every sigma/lambda of the grid with "
                       "its validation, network training incl. compilation, preparing the model for prediction); "
                       "predict_per_s: test molecules per second of a second prediction pass (energies and forces "
                       "where the method has forces; the first pass compiled). Budgets count epochs, not time, so "
                       "the errors do not depend on the machine's load (except rows with hit_time_guard); the "
                       "times do, and the CPU may be shared with other jobs. Without --in-process, worker "
                       "processes run side by side, each on its own CPUs (`lanes`: the CPU sets; --jobs).")}


def command_line(args, methods=None) -> str:
    """The compare command that reproduces this run (options that change what is computed)."""
    parts = ["jaxqc compare", f"--data {args.data}"]
    parts += [f"--test {args.test}"] if args.test else []
    parts += [f"--target {args.target}"] if args.target else []
    parts += [f"--budget {args.budget}"]
    parts += [f"--methods {','.join(methods)}"] if methods else []
    parts += [f"--seed {args.seed}"] if args.seed else []
    parts += [f"--{k.replace('_', '-')} '{getattr(args, k)}'" for k in ("energy_unit", "force_unit", "length_unit")
              if getattr(args, k, None)]
    return " ".join(parts)


# ---- text --------------------------------------------------------------------------------------------
def _fmt(x, spec) -> str:
    return "—" if x is None else format(x, spec)


def format_table(result: dict) -> str:
    d = result["data"]
    eunit = result["units"]["energy"]
    elabel = "E" if result["target"] == "energy" else result["target"]
    lines = [f"{d['name']}: {d['n_molecules']} {'frames' if d['kind'] == 'frames' else 'molecules'}"
             + (f" of {d['formula']}" if d.get("formula") else "") + f"; budget {result['budget']}",
             f"protocol: {result['protocol']['description']}"]
    head = ["method", "N train", f"{elabel} MAE ({eunit})", "F MAE (kcal/mol/Å)", "fit (s)", "predict (mol/s)",
            "peak RSS (MiB)", "note"]
    body = []
    for r in result["rows"]:
        if "n_train" not in r:
            body.append([r["method"], "—", "—", "—", "—", "—", "—", r["note"]])
            continue
        body.append([r["method"], str(r["n_train"]), _fmt(r.get("energy_mae"), ".3f"), _fmt(r.get("forces_mae"), ".3f"),
                     _fmt(r.get("fit_s"), ".1f"), _fmt(r.get("predict_per_s"), ",.0f"),
                     _fmt(r.get("peak_rss_mb"), ",.0f"), r.get("note", "")])
    widths = [max(len(str(x[i])) for x in [head] + body) for i in range(len(head) - 1)]
    for row in [head] + body:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row[:-1], widths)) + ("  " + row[-1] if row[-1] else ""))
    if any(r.get("hit_time_guard") for r in result["rows"]):
        lines.append("note: rows that hit the wall-clock guard trained fewer epochs than the budget: their errors "
                     "depend on the machine's speed and load")
    return "\n".join(line.rstrip() for line in lines)


def format_plan(plan: dict) -> str:
    lines = [f"plan ({plan['budget']}): {plan['data']['name']}, {plan['data']['kind']} data, target "
             f"{plan['target']}", f"protocol: {plan['protocol']['description']}"]
    for m, e in plan["methods"].items():
        if not e["applicable"]:
            lines.append(f"  {m:8s} not applicable: {e['reason']}")
            continue
        lines.append(f"  {m:8s} N = {', '.join(map(str, e['n_train']))}; {json.dumps(e['settings'])}"
                     + (f"; model {json.dumps(e['model_settings'])}" if e.get("model_settings") else ""))
    return "\n".join(lines)


# ---- plots -------------------------------------------------------------------------------------------
def make_plots(result: dict, out_dir: Path, order: list) -> dict:
    """learning_curve.png (test MAE against N, every method) and parity_<method>.png (largest N);
    `order` fixes each method's colour across runs."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return {"error": "matplotlib not installed (pip install 'jaxqc[plot]')"}
    methods = {m: e for m, e in result["methods"].items() if e.get("runs")}
    plots = {"learning_curve": learning_curve(plt, result, methods, out_dir / "learning_curve.png", order)}
    for m, e in methods.items():
        if "predictions" in e:
            plots[f"parity_{m}"] = parity(plt, result, m, e["predictions"], out_dir / f"parity_{m}.png")
    return plots


def learning_curve(plt, result: dict, methods: dict, path: Path, order: list) -> str:
    import matplotlib.ticker

    eunit, target = result["units"]["energy"], result["target"]
    panels = [("energy_mae", f"{'energy' if target == 'energy' else target} MAE ({eunit})")]
    if result["data"]["kind"] == "frames" and any("forces_mae" in r for e in methods.values() for r in e["runs"]):
        panels.append(("forces_mae", "force MAE (kcal/mol/Å)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for m, e in methods.items():
            pts = [(r["n_train"], r[key]) for r in e["runs"] if key in r]
            if pts:
                ax.loglog(*zip(*pts), "o-", label=m, color=f"C{order.index(m) % 10 if m in order else 0}")
        ax.set(xlabel="N training molecules", ylabel=label, title=f"{result['data']['name']} ({result['budget']})")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def parity(plt, result: dict, method: str, predictions: str, path: Path) -> str:
    eunit, target = result["units"]["energy"], result["target"]
    p = np.load(predictions)
    quantities = [("E", "E_ref", f"{'energy' if target == 'energy' else target} ({eunit})")]
    if "F" in p.files:
        quantities.append(("F", "F_ref", "force components (kcal/mol/Å)"))
    fig, axes = plt.subplots(1, len(quantities), figsize=(4.5 * len(quantities), 4.2), squeeze=False)
    for ax, (k, kref, label) in zip(axes[0], quantities):
        pred, ref = p[k], p[kref]
        if len(ref) > 20_000:
            keep = np.random.default_rng(0).choice(len(ref), 20_000, replace=False)
            pred, ref = pred[keep], ref[keep]
        lo, hi = float(min(ref.min(), pred.min())), float(max(ref.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
        ax.plot(ref, pred, ".", ms=2, alpha=0.5)
        ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}",
               title=f"{method}, N = {int(p['n_train'])}: MAE {np.abs(p[k] - p[kref]).mean():.3g}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
