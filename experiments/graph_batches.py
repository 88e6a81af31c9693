"""Graph batches: the networks on dense atom pairs against the same networks on the batches' edge lists.

In one run, on the same QM9 batches (the training loop's atom-count buckets, float32, after compiling every
bucket), interleaved so machine load hits every variant alike:
  Cormorant train step (energy loss; channels 8, CG levels 3, l_max 2, compare's quick plan), batch 32:
    dense, before     the aggregation as it was (neighbours summed before the CG contraction),
    dense             the aggregation now (CG on the atoms first, one GEMM per path; the default),
    edges, before     the edge list with the message as a broadcast product summed over the edge's components,
    edges             the edge list now (a batched GEMM per edge, segment sums over receivers);
  SchNet (128 features, 6 interactions, 5 Å), batch 100, train step (energy loss) and inference (energy):
    dense             symmetric pairs i < j (the default), and edges.
Times are per batch, averaged over the same batches; the JSON holds molecules/s and ratios to the baseline.

    python experiments/graph_batches.py            # ~10 minutes on a shared 2-core CPU
    python experiments/graph_batches.py --quick    # tiny networks, synthetic molecules (tests run this)
    python experiments/graph_batches.py --cormorant-only --batches 6 --passes 2   # Cormorant rows only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import e3nn_jax as e3nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxqc.data.molecules import atom_buckets, batches, edge_options
from jaxqc.nn import cormorant as cm
from jaxqc.nn import model as nnmodel

# ---- configuration (edit here) --------------------------------------------------------------
POOL = 2000            # QM9 molecules batched (a random subset, seed 0)
N_BUCKETS = 4          # atom-count buckets (the loop uses 8; 4 keeps compile time down)
BATCHES = 12           # timed batches per variant and pass
PASSES = 3             # interleaved passes (variant A, B, C, A, B, C, ...); the mean of the passes is reported
CORMORANT = dict(channels=8, cg_levels=3, l_max=2)
SCHNET = dict(features=128, interactions=6)
QUICK = dict(pool=40, batches=2, passes=1, cormorant=dict(channels=3, cg_levels=2, l_max=1),
             schnet=dict(features=16, interactions=2))
OUT = Path(__file__).parent / "results" / "graph_batches.json"


def aggregate_before(E, F, allowed):
    """The dense aggregation before this change (for the baseline row): P = sum_j E_ij F_j, then P . CG."""
    B, A = F.shape[:2]
    irreps, chunks = [], []
    for (mul1, ir1), e in zip(E.irreps, E.chunks):
        for (mul2, ir2), f in zip(F.irreps, F.chunks):
            outs = [ir for ir in ir1 * ir2 if cm._allowed(ir, allowed)]
            P = jnp.einsum("bijcx,bjdy->bicdxy", e, f) if outs else None
            for ir in outs:
                out = jnp.einsum("bicdxy,xyz->bicdz", P, cm._cg(ir1.l, ir2.l, ir.l, P.dtype))
                irreps.append((mul1 * mul2, ir))
                chunks.append(out.reshape(B, A, mul1 * mul2, ir.dim))
    return e3nn.from_chunks(irreps, chunks, (B, A), F.dtype)


def aggregate_edges_before(E, F, allowed, senders, receivers, n_atoms):
    """The edge-list aggregation before its per-edge GEMM (for the baseline row): the message as a broadcast
    product [n_edges, mul1, 2l1+1, mul2, 2l+1] summed over the edge's components."""
    n_edges = E.shape[0]
    irreps, chunks = [], []
    for k1, k2, ir in cm._paths(E, F, allowed):
        (mul1, ir1), e = E.irreps[k1], E.chunks[k1]
        (mul2, ir2), f = F.irreps[k2], F.chunks[k2]
        irreps.append((mul1 * mul2, ir))
        if e is None or f is None:
            chunks.append(None)
            continue
        fp = jnp.einsum("jdy,xyz->jxdz", f, cm._cg(ir1.l, ir2.l, ir.l, f.dtype))[senders]
        msg = jnp.sum(e[:, :, :, None, None] * fp[:, None], axis=2)
        out = jax.ops.segment_sum(msg.reshape(n_edges, -1), receivers, n_atoms, indices_are_sorted=True)
        chunks.append(out.reshape(n_atoms, mul1 * mul2, ir.dim))
    return e3nn.from_chunks(irreps, chunks, (n_atoms,), F.dtype)


def qm9_or_synthetic(quick: bool):
    """(Dataset, target, description): QM9 U0, or small synthetic molecules for --quick."""
    if quick:
        from jaxqc.data.molecules import Dataset

        rng = np.random.default_rng(0)
        n, a = QUICK["pool"], 9
        Z = np.zeros((n, a), int)
        R = np.zeros((n, a, 3))
        for m in range(n):
            k = int(rng.integers(4, a + 1))
            grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3) * 1.4
            R[m, :k] = grid[rng.permutation(27)[:k]] + 0.05 * rng.normal(size=(k, 3))
            Z[m, :k] = rng.choice([1, 6, 7, 8], size=k)
        return Dataset(Z=Z, R=R, props={"U0": rng.normal(size=n)}), "U0", "synthetic (--quick)"
    from jaxqc.data import registry

    return registry.load("qm9"), "U0", "QM9"


def fixed_batches(data, idx, batch_size: int, model_config, n: int) -> list:
    """n batches from the loop's batcher (buckets over idx), spread over the buckets, with edges if asked."""
    buckets = atom_buckets(data.n_atoms[idx], n_buckets=N_BUCKETS, multiple=1)
    kw = edge_options(model_config, data, idx, buckets)
    out = list(batches(data, idx, batch_size, buckets, shuffle=True, seed=0, **kw))
    return out[:n]


def step_fns(kind: str, config, example, target: str):
    """(params, {"train step": jit fn(net, batch), "inference": jit fn(params, batch)})."""
    stats = {"scale": 1.0, "shift": 0.0, "atom_ref": np.zeros(config.max_z + 1)}
    params = nnmodel.init_params(kind, config, jax.random.PRNGKey(0), example, stats)
    energy = nnmodel.make_energy(kind, config)

    def loss(net, batch):
        e = energy({"net": net, "stats": params["stats"]}, batch)
        return jnp.sum(jnp.where(batch.mol_mask, (e - batch.props[target]) ** 2, 0.0))

    return params, {"train step": jax.jit(jax.value_and_grad(loss)), "inference": jax.jit(energy)}


def run_pass(fn, first_arg, batch_list) -> float:
    """Mean seconds per batch over batch_list."""
    t0 = time.perf_counter()
    for b in batch_list:
        jax.block_until_ready(fn(first_arg, b))
    return (time.perf_counter() - t0) / len(batch_list)


def compare(variants: dict, what: str, passes: int) -> dict:
    """variants {name: (fn, first_arg, batches)}: compile every bucket, then interleaved timed passes."""
    for fn, arg, bl in variants.values():
        for b in bl:
            jax.block_until_ready(fn(arg, b))
    times = {name: [] for name in variants}
    for _ in range(passes):
        for name, (fn, arg, bl) in variants.items():
            times[name].append(run_pass(fn, arg, bl))
    out = {}
    for name, ts in times.items():
        n_mol = np.mean([float(np.sum(np.asarray(b.mol_mask))) for b in variants[name][2]])
        out[name] = {"s_per_batch": float(np.mean(ts)), "passes_s": ts, "molecules_per_s": float(n_mol / np.mean(ts))}
        print(f"{what:28s} {name:14s} {np.mean(ts) * 1e3:9.1f} ms/batch  {n_mol / np.mean(ts):8.1f} molecules/s",
              flush=True)
    return out


def cormorant_rows(data, idx, target, arch, n_batches, passes) -> dict:
    dense = nnmodel.config_for("cormorant", **arch)
    edges = dataclasses.replace(dense, pair_list="edges")
    bd = fixed_batches(data, idx, 32, dense, n_batches)
    be = fixed_batches(data, idx, 32, edges, n_batches)
    params, fd = step_fns("cormorant", dense, bd[0], target)
    _, fe = step_fns("cormorant", edges, be[0], target)
    now, now_e = cm.aggregate_fused, cm.aggregate_edges
    cm.aggregate_fused, cm.aggregate_edges = aggregate_before, aggregate_edges_before  # traced now, old forms
    try:
        _, fb = step_fns("cormorant", dense, bd[0], target)
        jax.block_until_ready([fb["train step"](params["net"], b) for b in bd])
        _, feb = step_fns("cormorant", edges, be[0], target)
        jax.block_until_ready([feb["train step"](params["net"], b) for b in be])
    finally:
        cm.aggregate_fused, cm.aggregate_edges = now, now_e
    net = params["net"]
    res = compare({"dense, before": (fb["train step"], net, bd), "dense": (fd["train step"], net, bd),
                   "edges, before": (feb["train step"], net, be), "edges": (fe["train step"], net, be)},
                  "cormorant train step", passes)
    base = res["dense, before"]["s_per_batch"]
    return {"config": {**dataclasses.asdict(dense), "pair_list": "dense | edges"}, "batch_size": 32,
            "rows": res, "speedup_over_dense_before": {k: base / v["s_per_batch"] for k, v in res.items()},
            "edges_per_batch": float(np.mean([float(np.sum(np.asarray(b.edges.mask))) for b in be])),
            "edge_budget_slots_per_batch": float(np.mean([b.edges.mask.size for b in be])),
            "atom_pairs_per_batch": float(np.mean([b.R.shape[0] * b.R.shape[1] ** 2 for b in bd]))}


def schnet_rows(data, idx, target, arch, n_batches, passes) -> dict:
    dense = nnmodel.config_for("schnet", **arch)
    edges = dataclasses.replace(dense, pair_list="edges")
    bd = fixed_batches(data, idx, 100, dense, n_batches)
    be = fixed_batches(data, idx, 100, edges, n_batches)
    params, fd = step_fns("schnet", dense, bd[0], target)
    _, fe = step_fns("schnet", edges, be[0], target)
    out = {"config": {**dataclasses.asdict(dense), "pair_list": "dense | edges"}, "batch_size": 100}
    for what, arg in (("train step", params["net"]), ("inference", params)):
        res = compare({"dense": (fd[what], arg, bd), "edges": (fe[what], arg, be)}, f"schnet {what}", passes)
        out[what] = {"rows": res, "edges_over_dense": res["dense"]["s_per_batch"] / res["edges"]["s_per_batch"]}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--batches", type=int, help=f"timed batches per variant and pass (default {BATCHES})")
    p.add_argument("--passes", type=int, help=f"interleaved passes (default {PASSES})")
    p.add_argument("--cormorant-only", action="store_true",
                   help="run the Cormorant rows only and replace them in an existing --out (SchNet rows kept)")
    args = p.parse_args(argv)
    data, target, source = qm9_or_synthetic(args.quick)
    pool = QUICK["pool"] if args.quick else POOL
    idx = np.sort(np.random.default_rng(0).permutation(len(data))[:pool])
    n_batches = args.batches or (QUICK["batches"] if args.quick else BATCHES)
    passes = args.passes or (QUICK["passes"] if args.quick else PASSES)
    t0 = time.perf_counter()
    if args.cormorant_only:
        results = json.loads(Path(args.out).read_text())
        results["cormorant"] = cormorant_rows(data, idx, target, QUICK["cormorant"] if args.quick else CORMORANT,
                                              n_batches, passes)
        results["cormorant"].update(timed_batches=n_batches, passes=passes, date=time.strftime("%Y-%m-%d"),
                                    wall_s=time.perf_counter() - t0, jax=jax.__version__)
        from jaxqc.data.io import atomic_write_text

        atomic_write_text(args.out, json.dumps(results, indent=1, default=float))
        print(json.dumps({"cormorant speedup over dense before": results["cormorant"]["speedup_over_dense_before"]},
                         indent=1))
        return results
    results = {"experiment": "graph_batches", "quick": args.quick, "data": source, "pool": int(len(idx)),
               "n_buckets": N_BUCKETS, "timed_batches": n_batches, "passes": passes,
               "cormorant": cormorant_rows(data, idx, target, QUICK["cormorant"] if args.quick else CORMORANT,
                                           n_batches, passes),
               "schnet": schnet_rows(data, idx, target, QUICK["schnet"] if args.quick else SCHNET, n_batches, passes),
               "dtype": "float32", "jax": jax.__version__, "date": time.strftime("%Y-%m-%d"),
               "device": str(jax.devices()[0]), "wall_s": None,
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                           "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}}
    results["wall_s"] = time.perf_counter() - t0
    from jaxqc.data.io import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1, default=float))
    print(json.dumps({"cormorant speedup over dense before": results["cormorant"]["speedup_over_dense_before"],
                      "schnet edges / dense": {k: results["schnet"][k]["edges_over_dense"]
                                               for k in ("train step", "inference")}}, indent=1))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
