"""SchNet on QM9: jaxqc against schnetpack, same architecture, same molecules, same run.

Speed (the default): training-step and inference throughput (molecules/s) for energy and energy+forces,
batch 100 of QM9 molecules (seeded sample of the training split), SchNet with 128 features, 6
interactions, 5 Å cosine cutoff, 20 Gaussians, float32, after a warm-up (compile time reported
separately). schnetpack gets all pairs within the cutoff as its neighbour list, built once outside the
timing (its own neighbour-list transforms would only slow it down). Each code runs in its own worker
process once per malloc setting (ENVS: glibc's default and huge pages, the setting the jaxqc command
uses), one after the other; each code's figure is its best setting, and the same-setting ratios are
kept. jaxqc is timed with its default tabulated filters and with the filter network on every pair.

Accuracy (`--accuracy`): U0 on the fixed QM9 protocol (10k test, 2k validation, train[:N]), both codes
with the same recipe and the same wall-clock budget, at the same time on one CPU core each
(jaxqc/benchmark/nn_peer.py): validation MAE against time, test MAE of the best-on-validation model,
against KRR + bag of bonds at the same N (3.23 kcal/mol at 10k, ANCHORS.md).

    python experiments/qm9_nn.py                  # speed, both codes, a few minutes
    python experiments/qm9_nn.py --accuracy --n-train 10000 --budget-min 40
    python experiments/qm9_nn.py --quick --no-peer  # CI-sized (tests run this; add --accuracy for that part)
Peer: pip install torch==2.13.0 (CPU) then schnetpack 2.1.1 --no-deps (see experiments/README.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxqc.data.molecules import Dataset, atom_buckets, batches
from jaxqc.nn import model as nnmodel
from jaxqc.potential import energy_and_forces_fn
from jaxqc.train import loop

from jaxqc.benchmark import nn_peer as nn_compare  # noqa: E402

# ---- configuration (edit here) --------------------------------------------------------------
ARCH = dict(features=128, interactions=6, cutoff_ang=5.0, n_rbf=20)
BATCH = 100
N_BATCHES = 10        # timed batches per measurement
LR = 5e-4
QUICK = dict(arch=dict(features=16, interactions=2, cutoff_ang=5.0, n_rbf=8), batch=10, n_batches=2, epochs=15)
OUT = Path(__file__).parent / "results" / "qm9_nn"
ACC_ARCH = nn_compare.QM9_ARCH      # accuracy at equal budgets (jaxqc.benchmark.nn_peer)
ACC_RECIPE = nn_compare.QM9_RECIPE
KRR_BOB_10K = nn_compare.KRR_BOB_10K
load_data = nn_compare.qm9_data


# ---- jaxqc ------------------------------------------------------------------------------------------
def jaxqc_setup(data, idx, arch):
    config = nnmodel.config_for("schnet", **arch)
    ref = nnmodel.atom_reference(data, "U0", config.max_z)
    stats = nnmodel.fit_stats(data, idx, "U0", ref, use_forces=False, readout="sum")
    params = nnmodel.init_params("schnet", config, jax.random.PRNGKey(0), data.molecules(idx[:2]), stats)
    return config, nnmodel.make_energy("schnet", config), params


def _qm9_with_forces(data):
    """QM9 has no forces: the timing of a force step uses zero force labels (same work, same shapes)."""
    return Dataset(Z=data.Z, R=data.R, E=data.props["U0"], F=np.zeros_like(data.R), props=data.props, meta=data.meta)


def time_calls(fn, items, reps=1) -> tuple[float, float]:
    """(first-call seconds incl. compile, seconds per item after it)."""
    t = time.perf_counter()
    jax.block_until_ready(fn(items[0]))
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(reps):
        for it in items:
            out = fn(it)
    jax.block_until_ready(out)
    return first, (time.perf_counter() - t) / (reps * len(items))


def jaxqc_speed(data, idx, arch, batch, n_batches) -> dict:
    config, energy, params = jaxqc_setup(data, idx, arch)
    dataf = _qm9_with_forces(data)
    buckets = atom_buckets(data.n_atoms[idx], n_buckets=loop.TrainConfig.n_buckets, multiple=1)
    out = {"buckets": list(buckets)}
    for forces in (False, True):
        cfg = loop.TrainConfig(batch_size=batch, lr=LR, force_weight=1.0 if forces else 0.0, ema_decay=None,
                               clip_norm=None)
        tx, train_step, _ = loop.make_steps(energy, cfg, "energy")
        step = jax.jit(train_step)
        state = loop.TrainState(net=params["net"], stats=params["stats"], opt_state=tx.init(params["net"]),
                                ema=params["net"], step=jnp.zeros((), jnp.int32))
        # full batches in the order training draws them (buckets weighted by how many molecules they hold)
        mols = [m for m in batches(dataf, idx, batch, buckets, shuffle=True) if bool(np.all(m.mol_mask))][:n_batches]
        holder = {"s": state}

        def one(b):
            holder["s"], loss = step(holder["s"], b, LR)
            return loss

        # one warm-up call per bucket shape, then the timed pass
        for b in {m.R.shape[1]: m for m in mols}.values():
            jax.block_until_ready(one(b))
        first, per = time_calls(one, mols)
        key = "energy+forces" if forces else "energy"
        out[f"train_{key}_mol_per_s"] = batch / per
        infer = jax.jit(energy_and_forces_fn(energy) if forces else energy)
        for b in {m.R.shape[1]: m for m in mols}.values():
            jax.block_until_ready(infer(params, b))
        first, per = time_calls(lambda b: infer(params, b), mols)
        out[f"infer_{key}_mol_per_s"] = batch / per
    return out


# ---- schnetpack -------------------------------------------------------------------------------------
def spk_speed(data, idx, arch, batch, n_batches) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    groups = [rng.choice(idx, batch, replace=False) for _ in range(n_batches)]
    out = {"torch_threads": torch.get_num_threads()}
    for forces in (False, True):
        key = "energy+forces" if forces else "energy"
        model = nn_compare.spk_model(arch, forces)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        pairs = nn_compare.SpkPairs(data, np.concatenate(groups), arch["cutoff_ang"])
        inputs = [pairs.batch(g, data.props["U0"][g], np.zeros_like(data.R[g])) for g in groups]

        def train_one(b):
            b = {k: v.clone() for k, v in b.items()}
            res = model(b)
            loss = torch.mean((res["energy"] - b["y"]) ** 2)
            if forces:
                loss = loss + torch.mean((res["forces"] - b["F"]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()

        model.train()
        train_one(inputs[0])
        t = time.perf_counter()
        for b in inputs:
            train_one(b)
        out[f"train_{key}_mol_per_s"] = batch * len(inputs) / (time.perf_counter() - t)
        model.eval()

        def infer_one(b):
            b = {k: v.clone() for k, v in b.items()}
            if forces:
                return model(b)
            with torch.no_grad():
                return model(b)

        infer_one(inputs[0])
        t = time.perf_counter()
        for b in inputs:
            infer_one(b)
        out[f"infer_{key}_mol_per_s"] = batch * len(inputs) / (time.perf_counter() - t)
    return out


def accuracy_worker(args) -> dict:
    nn_compare.set_single_thread()
    data, split = load_data(args.quick)
    arch = QUICK["arch"] if args.quick else ACC_ARCH
    n = min(args.n_train, len(split["train"]))
    split = {"train": split["train"][:n], "valid": split["valid"], "test": split["test"],
             "protocol": "QM9 fixed split (seed 0): 10k test, 2k validation, train[:N]"}
    if args.code == "jaxqc":
        run_dir = Path(args.run_dir or Path.home() / ".cache" / "jaxqc" / "runs" / f"qm9_nn_U0_{n}")
        quick = dict(epochs=QUICK["epochs"], n_buckets=2) if args.quick else {}
        return nn_compare.run_jaxqc(data, split, arch, ACC_RECIPE, args.budget_min, "U0", False, run_dir, **quick)
    return nn_compare.run_schnetpack(data, split, arch, ACC_RECIPE, args.budget_min, "U0", False,
                                     **({"epochs": QUICK["epochs"]} if args.quick else {}))


def accuracy(args, peer: bool) -> dict:
    out = Path(args.out + f"_U0_{args.n_train}").with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    argv_w = ["--accuracy", "--n-train", str(args.n_train), "--budget-min", str(args.budget_min)]
    argv_w += (["--quick"] if args.quick else []) + (["--run-dir", args.run_dir] if args.run_dir else [])
    t0 = time.perf_counter()
    runs = nn_compare.run_both(Path(__file__).resolve(), argv_w, out, ("jaxqc", "schnetpack") if peer else ("jaxqc",))
    for res in runs.values():
        if "curve" in res:
            res["time_to_krr_bob_s"] = nn_compare.time_to(res["curve"], "valid_energy_mae", KRR_BOB_10K)
            res["best_valid_energy_mae"] = min(r["valid_energy_mae"] for r in res["curve"])
    results = {"experiment": "qm9_nn_accuracy", "target": "U0", "n_train": args.n_train, "quick": args.quick,
               "arch": QUICK["arch"] if args.quick else ACC_ARCH, "recipe": ACC_RECIPE, "budget_min": args.budget_min,
               "krr_bob_10k_mae": KRR_BOB_10K, "resources": "each code on its own CPU core, one thread, both at the "
               "same time", "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "jax": jax.__version__}, "runs": runs}
    if len(runs) == 2 and all("test" in r for r in runs.values()):
        results["ratios_jaxqc_over_schnetpack"] = {
            "test_energy_mae": runs["jaxqc"]["test"]["energy_mae"] / runs["schnetpack"]["test"]["energy_mae"],
            "epochs_in_budget": runs["jaxqc"]["epochs"] / runs["schnetpack"]["epochs"]}
    results["plot"] = str(out.with_suffix(".png")) if nn_compare.plot_curves(
        runs, "valid_energy_mae", out.with_suffix(".png"), f"QM9 U0, SchNet, N = {args.n_train}", KRR_BOB_10K) else None
    from jaxqc.data.io import atomic_write_text
    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    for code, r in runs.items():
        print(f"{code}: " + (f"{r['epochs']} epochs in {r['train_s']:.0f} s; test U0 MAE {r['test']['energy_mae']:.3f} "
                             f"kcal/mol" if "test" in r else str(r.get("error"))), flush=True)
    return results


# malloc settings each code is timed under (a process-start setting: one worker process each). The jaxqc
# command runs under huge_pages (jaxqc.runtime.huge_page_command); schnetpack is fastest with the default.
ENVS = {"default": {}, "huge_pages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}


def speed_sizes(quick: bool) -> tuple:
    """(arch, batch, timed batches) of the speed measurement."""
    return (QUICK["arch"], QUICK["batch"], QUICK["n_batches"]) if quick else (ARCH, BATCH, N_BATCHES)


def speed_worker(args) -> dict:
    """One code's throughput in this process's environment."""
    data, split = load_data(args.quick)
    idx = np.random.default_rng(0).permutation(split["train"])[:20_000]  # a pool: batches are drawn from it
    arch, batch, n_batches = speed_sizes(args.quick)
    if args.speed_worker == "jaxqc":
        return {"jaxqc": jaxqc_speed(data, idx, arch, batch, n_batches),
                "jaxqc_exact_filters": jaxqc_speed(data, idx, dict(arch, filter_grid_ang=0.0), batch, n_batches)}
    import schnetpack
    import torch
    return {"schnetpack": {"version": schnetpack.__version__, "torch": torch.__version__,
                           **spk_speed(data, idx, arch, batch, n_batches)}}


def speed(args, peer: bool) -> dict:
    """Each code in its own worker process per malloc setting, one after the other (the machine otherwise
    idle); each code's figure is its best setting, and the same-setting ratios are kept too."""
    import subprocess
    import tempfile

    arch, batch, n_batches = speed_sizes(args.quick)
    results = {"experiment": "qm9_nn", "quick": args.quick, "arch": arch, "batch": batch, "n_batches": n_batches,
               "filter_grid_ang": nnmodel.config_for("schnet").filter_grid_ang,  # the default: tabulated filters
               "date": time.strftime("%Y-%m-%d"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "jax": jax.__version__, "xla_flags": os.environ.get("XLA_FLAGS", "")},
               "envs": ENVS, "runs": {}}
    envs = ["default"] if args.quick else list(ENVS)  # CI: one setting
    for code in ("jaxqc", "schnetpack") if peer else ("jaxqc",):
        for env in envs:
            with tempfile.TemporaryDirectory() as tmp:
                out_w = Path(tmp) / "w.json"
                cmd = [sys.executable, str(Path(__file__).resolve()), "--speed-worker", code, "--worker-out", str(out_w)]
                environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | ENVS[env]
                print(f"{code}, malloc {env} ...", flush=True)
                subprocess.run(cmd + (["--quick"] if args.quick else []), env=environ, check=True)
                for name, res in json.loads(out_w.read_text()).items():
                    results["runs"].setdefault(name, {})[env] = res
                    print(name, env, json.dumps(res), flush=True)
    for name, by_env in results["runs"].items():  # each code's best setting, metric by metric
        keys = [k for k in next(iter(by_env.values())) if k.endswith("mol_per_s")]
        best = {k: max(by_env, key=lambda e: by_env[e][k]) for k in keys}
        results[name] = {k: by_env[best[k]][k] for k in keys} | {"env": best}
    if peer:
        for name in ("jaxqc", "jaxqc_exact_filters"):
            results[f"speedup_{name}"] = {k: results[name][k] / results["schnetpack"][k]
                                          for k in results[name] if k.endswith("mol_per_s")}
            print(name, "/ schnetpack, each at its best setting:", json.dumps(results[f"speedup_{name}"]), flush=True)
        results["speedup_jaxqc_same_env"] = {
            env: {k: results["runs"]["jaxqc"][env][k] / results["runs"]["schnetpack"][env][k]
                  for k in results["jaxqc"] if k.endswith("mol_per_s")} for env in envs}
    out = Path(args.out + "_speed").with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if plot_speed(results, out.with_suffix(".png")):
        results["plot"] = str(out.with_suffix(".png"))
    out.write_text(json.dumps(results, indent=1, default=float))
    return results


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--accuracy", action="store_true", help="U0 accuracy at equal wall-clock budgets (not speed)")
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--budget-min", type=float, default=40.0, help="training budget per code (min)")
    p.add_argument("--run-dir", help="jaxqc's run directory (default ~/.cache/jaxqc/runs/qm9_nn_U0_<N>)")
    p.add_argument("--code", choices=["jaxqc", "schnetpack"], help=argparse.SUPPRESS)
    p.add_argument("--speed-worker", choices=["jaxqc", "schnetpack"], help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:  # CI: 15 epochs of 200 molecules (the epochs are the budget; 30 min is only a guard)
        args.budget_min = min(args.budget_min, 30.0)
    if args.code or args.speed_worker:  # a worker process
        res = accuracy_worker(args) if args.code else speed_worker(args)
        Path(args.worker_out).write_text(json.dumps(res, default=float))
        return res
    peer = not args.no_peer and importlib.util.find_spec("schnetpack") is not None
    return accuracy(args, peer) if args.accuracy else speed(args, peer)


def plot_speed(results: dict, path: Path) -> bool:
    """Grouped bars: molecules/s of each code for the four measurements."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    codes = [c for c in ("jaxqc", "jaxqc_exact_filters", "schnetpack") if c in results]
    keys = [k for k in results["jaxqc"] if k.endswith("mol_per_s")]
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    width = 0.8 / len(codes)
    for n, code in enumerate(codes):
        ax.bar(np.arange(len(keys)) + n * width, [results[code][k] for k in keys], width, label=code)
    labels = [k.replace("_mol_per_s", "").replace("_", " ").replace("energy", "E").replace("forces", "F") for k in keys]
    ax.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, labels)
    ax.set(ylabel="molecules / s", yscale="log",
           title=f"SchNet, batch {results['batch']} QM9, {os.cpu_count()} CPU threads, best malloc setting each")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    main()
