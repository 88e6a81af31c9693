"""SchNet on QM9: jaxqc against schnetpack, same architecture, same molecules, same run.

Speed (`--speed`): training-step and inference throughput (molecules/s) for energy and energy+forces,
batch 100 of QM9 molecules (seeded sample of the training split), SchNet with 128 features, 6
interactions, 5 Å cosine cutoff, 20 Gaussians, float32, after a warm-up (compile time reported
separately). schnetpack gets all pairs within the cutoff as its neighbour list, built once outside the
timing (its own neighbour-list transforms would only slow it down).

Not yet here (issue 5, open): the accuracy at equal wall-clock budgets (U0 at 10k and 110k).

    python experiments/qm9_nn.py                  # both codes, a few minutes
    python experiments/qm9_nn.py --quick --no-peer  # CI-sized (tests run this)
Peer: pip install torch==2.13.0 (CPU) then schnetpack 2.1.1 --no-deps (see experiments/README.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxqc.data.molecules import Dataset, atom_buckets, batches
from jaxqc.nn import model as nnmodel
from jaxqc.potential import energy_and_forces_fn
from jaxqc.train import loop

# ---- configuration (edit here) --------------------------------------------------------------
ARCH = dict(features=128, interactions=6, cutoff_ang=5.0, n_rbf=20)
BATCH = 100
N_BATCHES = 10        # timed batches per measurement
LR = 5e-4
QUICK = dict(arch=dict(features=16, interactions=2, cutoff_ang=5.0, n_rbf=8), batch=10, n_batches=2)
OUT = Path(__file__).parent / "results" / "qm9_nn"


def load_data(quick: bool) -> tuple[Dataset, dict]:
    from jaxqc.data.qm9 import load_qm9, qm9_protocol_split

    data = load_qm9()
    split = qm9_protocol_split(len(data))
    if quick:  # a few hundred molecules: enough to time and to train a step
        keep = np.concatenate([split["train"][:200], split["valid"][:50], split["test"][:50]])
        data = data.subset(keep)
        split = {"train": np.arange(200), "valid": np.arange(200, 250), "test": np.arange(250, 300)}
    return data, split


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
def spk_model(arch, forces: bool):
    import schnetpack as spk

    rep = spk.representation.SchNet(n_atom_basis=arch["features"], n_interactions=arch["interactions"],
                                     radial_basis=spk.nn.GaussianRBF(n_rbf=arch["n_rbf"], cutoff=arch["cutoff_ang"]),
                                     cutoff_fn=spk.nn.CosineCutoff(arch["cutoff_ang"]))
    outputs = [spk.atomistic.Atomwise(n_in=arch["features"], output_key="energy")]
    if forces:
        outputs.append(spk.atomistic.Forces(energy_key="energy", force_key="forces"))
    return spk.model.NeuralNetworkPotential(representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
                                            output_modules=outputs)


def spk_batch(data, idx, cutoff):
    """schnetpack's input dict for molecules idx: all pairs within the cutoff (no periodicity)."""
    import torch
    import schnetpack.properties as P

    Zs, Rs, idx_m, ii, jj = [], [], [], [], []
    off = 0
    for m, k in enumerate(idx):
        n = int(data.n_atoms[k])
        R = data.R[k, :n]
        d = np.linalg.norm(R[:, None] - R[None], axis=-1)
        i, j = np.nonzero((d < cutoff) & ~np.eye(n, dtype=bool))
        Zs.append(data.Z[k, :n]), Rs.append(R), idx_m.append(np.full(n, m)), ii.append(i + off), jj.append(j + off)
        off += n
    cat = np.concatenate
    n_pairs = sum(len(i) for i in ii)
    return {P.Z: torch.as_tensor(cat(Zs), dtype=torch.long), P.R: torch.as_tensor(cat(Rs), dtype=torch.float32),
            P.idx_m: torch.as_tensor(cat(idx_m), dtype=torch.long), P.idx_i: torch.as_tensor(cat(ii), dtype=torch.long),
            P.idx_j: torch.as_tensor(cat(jj), dtype=torch.long), P.offsets: torch.zeros((n_pairs, 3)),
            P.n_atoms: torch.as_tensor(data.n_atoms[idx], dtype=torch.long),
            P.cell: torch.zeros((len(idx), 3, 3)), P.pbc: torch.zeros((len(idx), 3), dtype=torch.bool),
            "U0": torch.as_tensor(data.props["U0"][idx], dtype=torch.float32),
            "forces_true": torch.zeros((off, 3))}


def spk_speed(data, idx, arch, batch, n_batches) -> dict:
    import torch

    torch.set_num_threads(os.cpu_count())
    rng = np.random.default_rng(0)
    groups = [rng.choice(idx, batch, replace=False) for _ in range(n_batches)]
    out = {"torch_threads": torch.get_num_threads()}
    for forces in (False, True):
        key = "energy+forces" if forces else "energy"
        model = spk_model(arch, forces)
        opt = torch.optim.Adam(model.parameters(), lr=LR)
        inputs = [spk_batch(data, g, arch["cutoff_ang"]) for g in groups]

        def train_one(b):
            b = {k: v.clone() for k, v in b.items()}
            res = model(b)
            loss = torch.mean((res["energy"] - b["U0"]) ** 2)
            if forces:
                loss = loss + torch.mean((res["forces"] - b["forces_true"]) ** 2)
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


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    peer = not args.no_peer and importlib.util.find_spec("schnetpack") is not None
    arch, batch, n_batches = (QUICK["arch"], QUICK["batch"], QUICK["n_batches"]) if args.quick else (ARCH, BATCH, N_BATCHES)
    data, split = load_data(args.quick)
    idx = np.random.default_rng(0).permutation(split["train"])[:20_000]  # a pool: batches are drawn from it
    results = {"experiment": "qm9_nn", "quick": args.quick, "arch": arch, "batch": batch, "n_batches": n_batches,
               "date": time.strftime("%Y-%m-%d"),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                           "jax": jax.__version__}}
    print("jaxqc ...", flush=True)
    results["jaxqc"] = jaxqc_speed(data, idx, arch, batch, n_batches)
    print(json.dumps(results["jaxqc"]), flush=True)
    if peer:
        import schnetpack
        import torch
        print(f"schnetpack {schnetpack.__version__} ...", flush=True)
        results["schnetpack"] = {"version": schnetpack.__version__, "torch": torch.__version__,
                                 **spk_speed(data, idx, arch, batch, n_batches)}
        print(json.dumps(results["schnetpack"]), flush=True)
        results["speedup_jaxqc"] = {k: results["jaxqc"][k] / results["schnetpack"][k]
                                    for k in results["jaxqc"] if k.endswith("mol_per_s")}
        print(json.dumps(results["speedup_jaxqc"]), flush=True)
    out = Path(args.out + "_speed").with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, default=float))
    return results


if __name__ == "__main__":
    main()
