"""Where MACE's work goes: XLA's cost analysis (floating-point operations and bytes accessed, as the compiler
counts them; deterministic, no timing) of jaxqc's MACE energy + forces and train step on rMD17 aspirin
batches, for the full model and for variants that remove one part at a time: the difference is that part's
share.

Variants of the default config (32 channels, l_max 2, max_L 1, correlation 3, radial MLP 64^3):
  full            the model
  correlation_1   the product basis reduced to its linear term (no higher-body-order contraction)
  correlation_2   up to second order
  l_max_1         spherical harmonics and messages to l = 1 (fewer CG paths, smaller product basis)
  radial_16       radial MLP with one hidden layer of 16 (instead of 64, 64, 64)

    python experiments/mace_profile.py                 # ~3 min on one core
    python experiments/mace_profile.py --quick         # tiny model (tests)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

VARIANTS = {"full": {}, "correlation_1": {"correlation": 1}, "correlation_2": {"correlation": 2},
            "l_max_1": {"l_max": 1}, "radial_16": {"radial_mlp": (16,)}}
BATCH = 5
OUT = Path(__file__).parent / "results" / "mace_profile.json"


def cost(compiled) -> dict:
    c = compiled.cost_analysis()
    c = c[0] if isinstance(c, (list, tuple)) else c
    return {"gflop": float(c.get("flops", 0.0)) / 1e9, "gbytes_accessed": float(c.get("bytes accessed", 0.0)) / 1e9}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    import jax
    import jax.numpy as jnp

    from jaxqc.data.molecules import atom_buckets, edge_options
    from jaxqc.potential import energy_and_forces_fn
    from jaxqc.train import loop

    spec = importlib.util.spec_from_file_location("mace_peer", Path(__file__).parent / "mace_peer.py")
    mp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mp)
    data, pool, desc = mp.load_case_data("aspirin", args.quick)
    base = mp.QUICK["configs"]["quick"] if args.quick else {}
    out = {"experiment": "mace_profile", "data": desc, "batch": BATCH, "date": time.strftime("%Y-%m-%d"),
           "machine": mp.machine(), "variants": {}}
    for name, change in VARIANTS.items():
        if args.quick and name not in ("full", "correlation_1"):
            continue
        config, energy, params = mp.jaxqc_model(data, pool, {**base, **change})
        buckets = atom_buckets(data.n_atoms[pool], n_buckets=1, multiple=1)
        edge_kw = edge_options(config, data, pool, buckets)
        mol = mp.jaxqc_batch(data, pool[:BATCH], BATCH, buckets, edge_kw, jnp.float32)
        infer = jax.jit(energy_and_forces_fn(energy)).lower(params, mol).compile()
        cfg = loop.TrainConfig(batch_size=BATCH, lr=1e-3, force_weight=1.0, energy_weight=1.0, ema_decay=None,
                               clip_norm=None)
        tx, train_step, _ = loop.make_steps(energy, cfg, "energy")
        state = loop.TrainState(net=params["net"], stats=params["stats"], opt_state=tx.init(params["net"]),
                                ema=params["net"], step=jnp.zeros((), jnp.int32))
        train = jax.jit(train_step).lower(state, mol, 1e-3).compile()
        row = {"change": {k: list(v) if isinstance(v, tuple) else v for k, v in change.items()},
               "n_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params["net"]))),
               "infer": cost(infer), "train": cost(train)}
        out["variants"][name] = row
        print(f"{name}: inference {row['infer']['gflop']:.3f} GFLOP, train step {row['train']['gflop']:.3f} GFLOP",
              flush=True)
    full = out["variants"]["full"]
    out["share_of_full"] = {name: {k: 1.0 - r[k]["gflop"] / full[k]["gflop"] for k in ("infer", "train")}
                            for name, r in out["variants"].items() if name != "full"}
    from jaxqc.data.io import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(args.out), json.dumps(out, indent=1, default=float))
    return out


if __name__ == "__main__":
    main()
