"""SchNet in jaxqc and in schnetpack on the same data, same architecture, same recipe, same budget.

Shared by md17_nn.py (energies + forces of one molecule) and qm9_nn.py (QM9 U0). Both codes:
- get the same training / validation / test molecules and the same label normalisation: the network's
  atom outputs y_i give E = scale * sum_i y_i + sum_i (shift + E_ref[Z_i]) with scale and shift fitted on
  the training molecules (jaxqc.nn.model.fit_stats); schnetpack is trained on the normalised labels
  (E - sum_i (shift + E_ref[Z_i])) / scale and F / scale, which is the same function and the same loss;
- use Adam with the same learning rate, batch size, energy / force loss weights, plateau decay (factor,
  patience in epochs, min_lr), no EMA, and validation after every epoch; the model kept is the best on
  validation, and it is evaluated on the test molecules at the end;
- train until the same wall-clock budget is spent (compilation / set-up included).

`run_both` runs the two codes at the same time, each pinned to its own CPU core with one thread
(taskset), so they share the machine evenly and the run takes one budget of wall time, not two.
"""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


# ---- shared recipe -------------------------------------------------------------------------------
def recipe(lr: float, batch: int, energy_weight: float, force_weight: float, patience: int,
           factor: float = 0.5, min_lr: float = 1e-6) -> dict:
    return dict(lr=lr, batch_size=batch, energy_weight=energy_weight, force_weight=force_weight,
                plateau_patience=patience, plateau_factor=factor, min_lr=min_lr)


def normalisation(data, train_idx, target: str, forces: bool, max_z: int = 100) -> dict:
    from jaxqc.nn import model as nnmodel

    ref = nnmodel.atom_reference(data, target, max_z)
    return nnmodel.fit_stats(data, train_idx, target, ref, forces, "sum")


# ---- the experiments' shared setups (md17_nn.py, qm9_nn.py, cormorant_vs_schnet.py) -----------------
# SchNet as in schnetpack's rMD17 experiment config (n_atom_basis 128, 6 interactions, 5 Å cosine
# cutoff, 20 Gaussians, lr 1e-3, batch 10, loss 0.01 E + 0.99 F, plateau factor 0.5); the plateau
# patience is in epochs (schnetpack: 50; shorter here because a CPU budget holds a few hundred epochs).
MD17_ARCH = dict(features=128, interactions=6, cutoff_ang=5.0, n_rbf=20)
MD17_RECIPE = recipe(lr=1e-3, batch=10, energy_weight=0.01, force_weight=0.99, patience=15)
MD17_PUBLISHED = {"ethanol": 0.39, "aspirin": 1.35, "benzene": 0.31, "malonaldehyde": 0.66, "toluene": 0.57,
                  "uracil": 0.56}  # SchNet, MD17 (original labels), 1000 frames, force MAE kcal/mol/Å (ANCHORS.md)
# QM9 accuracy at equal budgets: the smaller published SchNet (64 features, 3 interactions) so that a CPU
# budget holds ~100 epochs of 10k molecules; recipe as schnetpack's QM9 config but batch 32
QM9_ARCH = dict(features=64, interactions=3, cutoff_ang=5.0, n_rbf=20)
QM9_RECIPE = recipe(lr=5e-4, batch=32, energy_weight=1.0, force_weight=0.0, patience=5)
KRR_BOB_10K = 3.23  # kcal/mol, qmllib KRR + BoB, same protocol, measured here (ANCHORS.md)


def shared_root() -> Path:
    """../shared/data (or $JAXQC_SHARED_DATA): the third-party reference data of the benchmarks."""
    return Path(os.environ.get("JAXQC_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


def rmd17_data(root: Path, molecule: str, k: str, n_train: int, n_valid: int, n_test: int | None = None,
               seed: int = 0):
    """(data, split): rMD17's train_k and test_k files as one Dataset, split by splits.rmd17_files."""
    from jaxqc.data import io, splits
    from jaxqc.data.molecules import Dataset

    train = io.read(root / "rmd17" / f"rmd17_{molecule}_train_{k}.npz")
    test = io.read(root / "rmd17" / f"rmd17_{molecule}_test_{k}.npz")
    data = Dataset(Z=np.concatenate([train.Z, test.Z]), R=np.concatenate([train.R, test.R]),
                   E=np.concatenate([train.E, test.E]), F=np.concatenate([train.F, test.F]),
                   meta={"name": f"rmd17_{molecule}_{k}", "units": {"E": "kcal/mol", "F": "kcal/mol/Å", "R": "Å"}})
    return data, splits.rmd17_files(len(train), len(test), n_train, n_valid, n_test, seed, name=k)


def qm9_data(quick: bool):
    """(data, split): QM9 with the fixed protocol split; quick: 200 / 50 / 50 molecules of it."""
    from jaxqc.data.qm9 import load_qm9
    from jaxqc.data.splits import qm9_protocol

    data = load_qm9()
    split = qm9_protocol(len(data))
    if quick:  # a few hundred molecules: enough to time and to train a step
        keep = np.concatenate([split["train"][:200], split["valid"][:50], split["test"][:50]])
        data = data.subset(keep)
        split = {"train": np.arange(200), "valid": np.arange(200, 250), "test": np.arange(250, 300)}
    return data, split


# ---- jaxqc ---------------------------------------------------------------------------------------
def run_jaxqc(data, split, arch: dict, rec: dict, budget_min: float, target: str, forces: bool, run_dir,
              epochs: int = 100_000, resume: bool = False, kind: str = "schnet", **train_overrides) -> dict:
    """Train a jaxqc network (`kind`: SchNet unless told) for `budget_min` minutes (in all: `resume`
    continues run_dir's checkpoint up to the new budget); validation curve, test MAE of the best model,
    steps per second, peak resident memory of the process."""
    import jax

    from jaxqc.train import loop
    from jaxqc.train.run import load_network, predict_network, train_network

    cfg = loop.TrainConfig(**{"epochs": epochs, "time_budget_min": budget_min, "ema_decay": None,
                              "schedule": "plateau", "patience": 10**9, "seed": 0, **rec, **train_overrides})
    t0 = time.perf_counter()
    summary = train_network(kind, data, target, forces, len(split["train"]), len(split["valid"]), cfg, run_dir,
                            model_overrides=arch, split=dict(split), progress=False, resume=resume)
    wall = time.perf_counter() - t0
    rows = loop.read_log(Path(run_dir) / "metrics.jsonl")
    _, _, energy, params, _ = load_network(run_dir)
    test = evaluate_jaxqc(energy, params, data, split["test"], target, forces, predict_network)
    return {"code": "jaxqc", "kind": kind, "jax": jax.__version__, "epochs": summary["epochs"],
            "steps": summary["steps"], "steps_per_s": summary["steps"] / max(summary["time_s"], 1e-9),
            "best_epoch": summary["best_epoch"], "train_s": summary["time_s"], "wall_s": wall,
            "stop_reason": summary["stop_reason"], "curve": _curve(rows), "test": test,
            "peak_rss_mb": peak_rss_mb()}


def peak_rss_mb():
    """Resident-set high-water mark of this process (Linux VmHWM), MiB; None elsewhere."""
    from jaxqc.compare import status_mb

    return status_mb("VmHWM")


def evaluate_jaxqc(energy, params, data, idx, target, forces, predict_network) -> dict:
    E, F = predict_network(energy, params, data, idx, forces)
    from jaxqc.nn.model import label_of

    return _errors(E, label_of(data, target)[idx], F, None if F is None else data.F[idx], data.Z[idx] > 0)


def _curve(rows) -> list:
    keys = ("epoch", "time_s", "lr", "train_loss", "valid_energy_mae", "valid_forces_mae")
    return [{k: r[k] for k in keys if k in r} for r in rows]


def _errors(E, E_true, F, F_true, mask) -> dict:
    out = {"energy_mae": float(np.mean(np.abs(E - E_true))), "energy_rmse": float(np.sqrt(np.mean((E - E_true) ** 2))),
           "n": int(len(E))}
    if F is not None:
        dF = (F - F_true)[mask]
        out.update(forces_mae=float(np.mean(np.abs(dF))), forces_rmse=float(np.sqrt(np.mean(dF**2))))
    return out


# ---- schnetpack ----------------------------------------------------------------------------------
def spk_model(arch: dict, forces: bool):
    """schnetpack's SchNet with jaxqc's architecture keys (features, interactions, cutoff_ang, n_rbf)."""
    import schnetpack as spk

    rep = spk.representation.SchNet(n_atom_basis=arch["features"], n_interactions=arch["interactions"],
                                     radial_basis=spk.nn.GaussianRBF(n_rbf=arch["n_rbf"], cutoff=arch["cutoff_ang"]),
                                     cutoff_fn=spk.nn.CosineCutoff(arch["cutoff_ang"]))
    outputs = [spk.atomistic.Atomwise(n_in=arch["features"], output_key="energy")]
    if forces:
        outputs.append(spk.atomistic.Forces(energy_key="energy", force_key="forces"))
    return spk.model.NeuralNetworkPotential(representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
                                            output_modules=outputs)


class SpkPairs:
    """Per-molecule neighbour lists (all pairs within the cutoff, no periodicity), built once, and
    schnetpack input dicts for any group of molecules by concatenation."""

    def __init__(self, data, idx, cutoff: float):
        self.data, self.pairs = data, {}
        for k in np.unique(idx):
            n = int(data.n_atoms[k])
            R = data.R[k, :n]
            d = np.linalg.norm(R[:, None] - R[None], axis=-1)
            self.pairs[int(k)] = np.nonzero((d < cutoff) & ~np.eye(n, dtype=bool))

    def batch(self, idx, y=None, F=None) -> dict:
        import schnetpack.properties as P
        import torch

        data = self.data
        n = data.n_atoms[idx]
        off = np.concatenate([[0], np.cumsum(n)[:-1]])
        ii = np.concatenate([self.pairs[int(k)][0] + o for k, o in zip(idx, off)])
        jj = np.concatenate([self.pairs[int(k)][1] + o for k, o in zip(idx, off)])
        mask = data.Z[idx] > 0
        out = {P.Z: torch.as_tensor(data.Z[idx][mask], dtype=torch.long),
               P.R: torch.as_tensor(data.R[idx][mask], dtype=torch.float32),
               P.idx_m: torch.as_tensor(np.repeat(np.arange(len(idx)), n), dtype=torch.long),
               P.idx_i: torch.as_tensor(ii, dtype=torch.long), P.idx_j: torch.as_tensor(jj, dtype=torch.long),
               P.offsets: torch.zeros((len(ii), 3)), P.n_atoms: torch.as_tensor(n, dtype=torch.long),
               P.cell: torch.zeros((len(idx), 3, 3)), P.pbc: torch.zeros((len(idx), 3), dtype=torch.bool)}
        if y is not None:
            out["y"] = torch.as_tensor(y, dtype=torch.float32)
        if F is not None:
            out["F"] = torch.as_tensor(F[mask], dtype=torch.float32)
        return out


def run_schnetpack(data, split, arch: dict, rec: dict, budget_min: float, target: str, forces: bool,
                   seed: int = 0, epochs: int = 100_000) -> dict:
    """Train schnetpack's SchNet with the same recipe for `budget_min` minutes (see module docstring)."""
    import schnetpack
    import torch

    from jaxqc.nn.model import label_of

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    tr, va, te = (np.asarray(split[k]) for k in ("train", "valid", "test"))
    stats = normalisation(data, tr, target, forces)
    y_all = label_of(data, target)
    base = (stats["atom_ref"][data.Z] * (data.Z > 0)).sum(-1) + stats["shift"] * data.n_atoms
    y_norm = (y_all - base) / stats["scale"]  # [M] the label the atom outputs sum to
    F_norm = None if not forces else data.F / stats["scale"]
    pairs = SpkPairs(data, np.concatenate([tr, va, te]), arch["cutoff_ang"])
    model = spk_model(arch, forces)
    opt = torch.optim.Adam(model.parameters(), lr=rec["lr"])
    bs, wE, wF = rec["batch_size"], rec["energy_weight"], rec["force_weight"]
    rng = np.random.default_rng(seed)

    def predict(batch, grad: bool):
        b = dict(batch)
        if forces:
            res = model(b)
            return res["energy"], res["forces"]
        with torch.set_grad_enabled(grad):
            return model(b)["energy"], None

    def evaluate(idx) -> dict:
        model.eval()
        E, F = np.zeros(len(idx)), None if not forces else np.zeros((len(idx), data.R.shape[1], 3))
        for s in range(0, len(idx), 100):
            g = idx[s:s + 100]
            e, f = predict(pairs.batch(g), grad=False)
            E[s:s + len(g)] = e.detach().double().numpy() * stats["scale"] + base[g]
            if forces:
                m = data.Z[g] > 0
                Fg = np.zeros((len(g), data.R.shape[1], 3))
                Fg[m] = f.detach().double().numpy() * stats["scale"]
                F[s:s + len(g)] = Fg
        model.train()
        return _errors(E, y_all[idx], F, None if F is None else data.F[idx], data.Z[idx] > 0)

    curve, best, best_state, best_epoch, bad, lr = [], None, None, 0, 0, rec["lr"]
    epoch, stop = 0, "time budget"
    model.train()
    while True:
        order = rng.permutation(tr)
        losses = []
        for s in range(0, len(order) - bs + 1, bs):  # full batches only, as jaxqc pads the last one
            g = order[s:s + bs]
            b = pairs.batch(g, y_norm[g], None if not forces else F_norm[g])
            e, f = predict(b, grad=True)
            loss = wE * torch.mean((e - b["y"]) ** 2)
            if forces:
                loss = loss + wF * torch.mean((f - b["F"]) ** 2)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        epoch += 1
        valid = evaluate(va)
        metric = valid.get("forces_mae", valid["energy_mae"]) if forces else valid["energy_mae"]
        t = time.perf_counter() - t0
        curve.append({"epoch": epoch, "time_s": t, "lr": lr, "train_loss": float(np.mean(losses)),
                      **{f"valid_{k}": v for k, v in valid.items() if k.endswith("mae")}})
        if best is None or metric < best:
            best, best_epoch, bad, best_state = metric, epoch, 0, copy.deepcopy(model.state_dict())
        else:
            bad += 1
            if bad >= rec["plateau_patience"]:
                lr, bad = max(rec["min_lr"], lr * rec["plateau_factor"]), 0
                for grp in opt.param_groups:
                    grp["lr"] = lr
        if t >= 60 * budget_min or epoch >= epochs:
            break
        if not np.isfinite(curve[-1]["train_loss"]):
            stop = "diverged"
            break
    train_s = time.perf_counter() - t0
    model.load_state_dict(best_state)
    test = evaluate(te)
    return {"code": "schnetpack", "schnetpack": schnetpack.__version__, "torch": torch.__version__,
            "epochs": epoch, "best_epoch": best_epoch, "train_s": train_s, "stop_reason": stop, "curve": curve,
            "test": test}


# ---- running both, side by side ------------------------------------------------------------------
def run_both(script: Path, argv: list, out_json: Path, codes=("jaxqc", "schnetpack")) -> dict:
    """Run `script --code C --worker-out PART argv` for each code at once, code k pinned to CPU k with one
    thread; returns {code: result}. A code that fails gives {"error": ...}."""
    procs = {}
    cpus = sorted(os.sched_getaffinity(0))
    for k, code in enumerate(codes):
        part = out_json.with_name(out_json.stem + f".{code}.part.json")
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                              "intra_op_parallelism_threads=1").strip())
        cmd = [sys.executable, str(script), *argv, "--code", code, "--worker-out", str(part)]
        if len(cpus) > k and len(codes) <= len(cpus):
            cmd = ["taskset", "-c", str(cpus[k])] + cmd
        procs[code] = (subprocess.Popen(cmd, env=env), part)
    out = {}
    for code, (p, part) in procs.items():
        rc = p.wait()
        if rc == 0 and part.exists():
            out[code] = json.loads(part.read_text())
            part.unlink()
        else:
            out[code] = {"error": f"worker exited with code {rc}"}
    return out


def set_single_thread() -> None:
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def time_to(curve: list, key: str, level: float):
    """First training time (s) at which the validation `key` reached `level`, or None."""
    for r in curve:
        if r.get(key) is not None and r[key] <= level:
            return r["time_s"]
    return None


def plot_curves(results: dict, key: str, path: Path, title: str, level: float | None = None) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for code, res in results.items():
        if "curve" in res:
            c = res["curve"]
            ax.semilogy([r["time_s"] / 60 for r in c], [r[key] for r in c], label=code)
    if level is not None:
        ax.axhline(level, color="k", ls=":", lw=1, label=f"target {level:g}")
    ax.set(xlabel="training wall time (min, one CPU core each)", ylabel=key.replace("_", " "), title=title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
