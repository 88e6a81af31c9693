"""MACE at equal CPU time: mace-torch trained on the same rMD17 frames, with the same recipe and architecture,
for exactly the CPU time jaxqc's MACE used (experiments/mace_rmd17.py's run at N = 950), on one core.

The jaxqc side is the measured run in results/mace_rmd17_<molecule>.json (its process CPU time `cpu_s`, its
test MAE, its validation curve). This script gives mace-torch that CPU time:
  - the same split (rMD17 split 01: a seeded permutation's first 950 frames of train_01, the next 50 for
    validation, all 1000 frames of test_01), the same scale / shift (jaxqc.nn.model.fit_stats);
  - the same architecture (experiments/mace_peer.py's torch_kwargs of jaxqc's resolved config: ScaleShiftMACE,
    32 channels, l_max 2, max_L 1, correlation 3, 2 residual layers, r_max 5 Å, 8 Bessel functions, radial
    MLP 64^3);
  - the same recipe as jaxqc's run: Adam, batch 5, lr 0.01 decaying exponentially to 1e-4 over the run, global
    gradient-norm clipping 10, EMA 0.99 (validated and kept at the best validation force MAE), loss
    0.01 MSE(E)/scale^2 + MSE(F)/scale^2, one validation pass per epoch;
  - the number of epochs is what fits in the budget: a calibration of CALIB_STEPS steps measures the CPU time
    per step, epochs = floor(0.95 x budget / (steps per epoch x that time + validation)); the lr schedule spans
    those epochs (as jaxqc's spanned its 500 / 120), and the budget (process CPU time) also stops the run.
    The epochs are recorded; `--epochs E` reruns with exactly E (reproducible).
CPU time is the process's user + system time (resource.getrusage): contention from other processes on the
machine does not change it; pin the run to one core (taskset) and one thread (set here).

    taskset -c 1 /tmp/venv-peers/bin/python experiments/mace_race.py --molecule ethanol
    python experiments/mace_race.py --quick          # CI-sized (needs torch + mace-torch; tests skip without)
Peer (benchmark only): torch==2.13.0 (CPU), mace-torch 0.3.16 --no-deps (experiments/README.md).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import mace_peer  # noqa: E402  (torch_kwargs / torch_batch: the one mapping of jaxqc's config to mace-torch)
import mace_rmd17  # noqa: E402  (ARCH, RECIPE, DECAY_TO, split constants: the jaxqc run's)

from jaxqc.benchmark import nn_peer  # noqa: E402

CALIB_STEPS = 60            # timed steps (after 3 warm-up steps) that set the number of epochs
SAFETY = 0.95               # planned epochs use this fraction of the remaining budget (the schedule should end)
EVAL_BATCH = 50             # molecules per validation / test forward pass
QUICK = {"n": 20, "n_test": 30, "budget_s": 20.0}
OUT = Path(__file__).parent / "results"
cpu_s = mace_rmd17.cpu_s   # the process's user + system CPU time (s)


def graphs(data, idx, elements, cutoff, torch):
    """Each molecule's mace-torch input (one-molecule ragged graph), built once."""
    return [mace_peer.torch_batch(data, [int(m)], elements, cutoff, torch.float32) for m in idx]


def collate(parts: list, torch) -> dict:
    """Several one-molecule graphs as one ragged batch (edge indices shifted by the atom offsets)."""
    n_at = [p["positions"].shape[0] for p in parts]
    off = np.concatenate([[0], np.cumsum(n_at)])
    cat = lambda k: torch.cat([p[k] for p in parts])  # noqa: E731
    return {"positions": cat("positions"), "node_attrs": cat("node_attrs"),
            "edge_index": torch.cat([p["edge_index"] + int(o) for p, o in zip(parts, off)], dim=1),
            "shifts": cat("shifts"), "unit_shifts": cat("unit_shifts"), "cell": cat("cell"),
            "batch": torch.cat([torch.full((n,), g, dtype=torch.int64) for g, n in enumerate(n_at)]),
            "ptr": torch.tensor(off, dtype=torch.int64), "energy": cat("energy"), "forces": cat("forces")}


def errors(model, parts, torch) -> dict:
    E, E0, F, F0 = [], [], [], []
    for s in range(0, len(parts), EVAL_BATCH):
        b = collate(parts[s:s + EVAL_BATCH], torch)
        res = model(dict(b, positions=b["positions"].clone()), training=False, compute_force=True)
        E.append(res["energy"].detach().numpy()), E0.append(b["energy"].numpy())
        F.append(res["forces"].detach().numpy()), F0.append(b["forces"].numpy())
    E, E0, F, F0 = map(np.concatenate, (E, E0, F, F0))
    return nn_peer._errors(E, E0, F, F0, np.ones(F.shape[0], bool))


def race(molecule: str, budget_s: float, epochs: int | None, quick: bool) -> dict:
    torch = mace_peer._import_torch()
    import mace

    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    c0 = cpu_s()
    root = nn_peer.shared_root()
    n = QUICK["n"] if quick else 950
    data, split = nn_peer.rmd17_data(root, molecule, mace_rmd17.SPLIT, n, mace_rmd17.N_VALID,
                                     QUICK["n_test"] if quick else None, mace_rmd17.SEED)
    arch = mace_rmd17.QUICK["arch"] if quick else mace_rmd17.ARCH
    config, stats = mace_peer.jaxqc_setup(data, split["train"], dict(arch))
    model = mace_peer.torch_model(config, stats)
    ema = copy.deepcopy(model)
    best = copy.deepcopy(model)
    for p in (*ema.parameters(), *best.parameters()):
        p.requires_grad_(False)
    train, valid, test = (graphs(data, split[k], config.elements, config.cutoff_ang, torch)
                          for k in ("train", "valid", "test"))
    rec = mace_rmd17.RECIPE
    bs, scale2 = rec["batch_size"], float(stats["scale"]) ** 2
    opt = torch.optim.Adam(model.parameters(), lr=rec["lr"])
    rng = np.random.default_rng(mace_rmd17.SEED)
    steps_per_epoch = len(train) // bs   # full batches, as jaxqc's trainer

    def step(b, lr):
        for g in opt.param_groups:
            g["lr"] = lr
        res = model(dict(b, positions=b["positions"].clone()), training=True, compute_force=True)
        loss = (rec["energy_weight"] * torch.mean((res["energy"] - b["energy"]) ** 2)
                + rec["force_weight"] * torch.mean((res["forces"] - b["forces"]) ** 2)) / scale2
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), rec["clip_norm"])
        opt.step()
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), model.parameters()):
                pe.mul_(rec["ema_decay"]).add_(p, alpha=1 - rec["ema_decay"])
        return float(loss)

    def epoch_batches():
        order = rng.permutation(len(train))
        return [collate([train[i] for i in order[s:s + bs]], torch) for s in range(0, steps_per_epoch * bs, bs)]

    calib = None
    if epochs is None:   # calibrate on a throwaway copy of the model and optimiser state
        state = copy.deepcopy((model.state_dict(), opt.state_dict()))
        t = cpu_s()
        bl = epoch_batches()
        per_collate = (cpu_s() - t) / len(bl)
        for b in bl[:3]:
            step(b, rec["lr"])
        t = cpu_s()
        k = min(CALIB_STEPS, len(bl) - 3) if not quick else 3
        for b in bl[3:3 + k]:
            step(b, rec["lr"])
        per_step = (cpu_s() - t) / k + per_collate
        t = cpu_s()
        errors(ema, valid, torch)
        per_valid = cpu_s() - t
        model.load_state_dict(state[0]), opt.load_state_dict(state[1])
        ema.load_state_dict(model.state_dict())
        remaining = budget_s - (cpu_s() - c0)
        epochs = max(1, int(SAFETY * remaining / (steps_per_epoch * per_step + per_valid)))
        calib = {"cpu_s_per_step": per_step, "cpu_s_per_validation": per_valid, "epochs": epochs}
        print(f"calibration: {per_step * 1e3:.1f} ms/step, validation {per_valid:.2f} s -> {epochs} epochs", flush=True)
    total = epochs * steps_per_epoch
    decay_steps = max(1, total / -np.log10(mace_rmd17.DECAY_TO))
    curve, best_f, best_epoch, s, stop = [], np.inf, -1, 0, "epochs"
    for ep in range(1, epochs + 1):
        losses = []
        for b in epoch_batches():
            losses.append(step(b, rec["lr"] * 0.1 ** (s / decay_steps)))
            s += 1
        v = errors(ema, valid, torch)
        curve.append({"epoch": ep, "cpu_s": cpu_s() - c0, "lr": rec["lr"] * 0.1 ** (s / decay_steps),
                      "train_loss": float(np.mean(losses)), "valid_energy_mae": v["energy_mae"],
                      "valid_forces_mae": v["forces_mae"]})
        if v["forces_mae"] < best_f:
            best_f, best_epoch = v["forces_mae"], ep
            best.load_state_dict(ema.state_dict())
        if ep % 10 == 0 or ep == epochs:
            print(f"epoch {ep}/{epochs}: cpu {curve[-1]['cpu_s']:.0f} s, valid F {v['forces_mae']:.3f}", flush=True)
        if cpu_s() - c0 >= budget_s and ep < epochs:
            stop = "cpu budget"
            break
    train_cpu = cpu_s() - c0
    out = {"code": "mace-torch", "version": mace.__version__, "torch": torch.__version__,
           "threads": torch.get_num_threads(), "n_params": int(sum(p.numel() for p in model.parameters())),
           "epochs_planned": epochs, "epochs": len(curve), "steps": s, "best_epoch": best_epoch, "stop_reason": stop,
           "calibration": calib, "train_cpu_s": train_cpu, "curve": curve}
    out["test"] = errors(best, test, torch)
    out["cpu_s"] = cpu_s() - c0
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", default="ethanol", choices=sorted(mace_rmd17.SGDML_950))
    p.add_argument("--budget-s", type=float, help="CPU seconds (default: jaxqc's run's cpu_s)")
    p.add_argument("--epochs", type=int, help="fixed epochs instead of the calibrated number")
    p.add_argument("--jaxqc", help="jaxqc's result JSON (default results/mace_rmd17_<molecule>.json)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", help="default results/mace_race_<molecule>.json")
    args = p.parse_args(argv)
    if not (nn_peer.shared_root() / "rmd17").exists():
        raise SystemExit(f"no rMD17 data under {nn_peer.shared_root()} (set JAXQC_SHARED_DATA)")
    jx_path = Path(args.jaxqc or OUT / f"mace_rmd17_{args.molecule}.json")
    jx = None
    if not args.quick:
        if not jx_path.exists():
            raise SystemExit(f"no jaxqc result at {jx_path}: run experiments/mace_rmd17.py --n 950 first")
        jx = next(r for r in json.loads(jx_path.read_text())["runs"] if r["n_train"] == 950)["mace"]
    budget = args.budget_s or (QUICK["budget_s"] if args.quick else jx["cpu_s"])
    t0 = time.perf_counter()
    torch_res = race(args.molecule, budget, args.epochs, args.quick)
    results = {"experiment": "mace_race", "molecule": args.molecule, "quick": args.quick, "budget_cpu_s": budget,
               "arch": mace_rmd17.QUICK["arch"] if args.quick else mace_rmd17.ARCH, "recipe": mace_rmd17.RECIPE,
               "mace_torch": torch_res, "date": time.strftime("%Y-%m-%d"), "wall_s": time.perf_counter() - t0,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}}
    if jx is not None:
        results["jaxqc"] = {"source": str(jx_path.name), "cpu_s": jx["cpu_s"], "epochs": jx["epochs"],
                            "test": jx["test"], "wall_s_per_cpu_s": jx["train_s"] / jx["cpu_s"],
                            "curve": [{"epoch": r["epoch"], "time_s": r["time_s"],
                                       "valid_forces_mae": r["valid_forces_mae"]} for r in jx["curve"]]}
        results["test_forces_mae_ratio_torch_over_jaxqc"] = torch_res["test"]["forces_mae"] / jx["test"]["forces_mae"]
        results["epochs_ratio_jaxqc_over_torch"] = jx["epochs"] / torch_res["epochs"]
    out = Path(args.out or OUT / f"mace_race_{args.molecule}{'_quick' if args.quick else ''}.json")
    results["plot"] = plot(results, out.with_suffix(".png"))
    from jaxqc.data.io import atomic_write_text

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    t = torch_res["test"]
    print(f"{args.molecule}: mace-torch {torch_res['epochs']} epochs in {torch_res['cpu_s']:.0f} CPU s, test F MAE "
          f"{t['forces_mae']:.3f}, E MAE {t['energy_mae']:.3f}"
          + (f"; jaxqc {jx['epochs']} epochs, test F MAE {jx['test']['forces_mae']:.3f}" if jx else ""), flush=True)
    return results


def plot(results: dict, path: Path):
    """Validation force MAE against CPU time, both codes (jaxqc's curve is in wall time of a run that at times
    shared its core; scaled here by its CPU/wall ratio)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    c = results["mace_torch"]["curve"]
    ax.loglog([r["cpu_s"] / 60 for r in c], [r["valid_forces_mae"] for r in c], label="mace-torch")
    if "jaxqc" in results:
        j = results["jaxqc"]
        ax.loglog([r["time_s"] / j["wall_s_per_cpu_s"] / 60 for r in j["curve"]],
                  [r["valid_forces_mae"] for r in j["curve"]], label="jaxqc")
    ax.axhline(mace_rmd17.SGDML_950[results["molecule"]], color="k", ls=":", lw=1, label="sGDML N=950 (test)")
    ax.set(xlabel="CPU time (min, one core)", ylabel="valid force MAE (kcal/mol/Å)",
           title=f"MACE at equal CPU time, {results['molecule']}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


if __name__ == "__main__":
    main()
