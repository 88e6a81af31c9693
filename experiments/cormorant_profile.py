"""Cormorant's Clebsch–Gordan aggregation: e3nn-jax `tensor_product` on every pair against the fused form.

Both forms compute sum_j (G_ij Y_ij) (x)_cg F_j exactly (tests/test_cormorant.py holds them equal at 1e-12 in
float64); "fused" sums over the neighbours before the CG contraction, one batched GEMM per pair of irreps.
For each form and for parity 'both' / 'natural': compile time and step time (float32, after warm-up) of
  energy            the forward pass,
  energy+forces     value and -grad in R (what MD and evaluation run),
  train step        the gradient of an energy + force loss in the parameters (what training runs),
on an ethanol-sized batch (10 x 9 atoms, as rMD17 training) and a QM9-sized one (32 x 29 atoms).

    python experiments/cormorant_profile.py            # a few minutes on 2 CPU cores
    python experiments/cormorant_profile.py --quick    # tiny network, one shape (tests run this)
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxqc.data.molecules import Molecules
from jaxqc.nn import model as nnmodel

# ---- configuration (edit here) --------------------------------------------------------------
SHAPES = {"ethanol 10 x 9": (10, 9), "QM9 32 x 29": (32, 29)}
VARIANTS = [dict(cg_product=p, parity=q) for q in ("both", "natural") for p in ("e3nn", "fused")]
REPEATS = 5
QUICK = dict(shapes={"tiny 2 x 5": (2, 5)}, arch=dict(channels=3, cg_levels=1, l_max=1), repeats=1)
OUT = Path(__file__).parent / "results" / "cormorant_profile.json"


def batch(B: int, A: int, seed: int = 0) -> Molecules:
    """B molecules of A atoms (H, C, N, O) at random positions at least 0.9 Å apart (a dense blob)."""
    rng = np.random.default_rng(seed)
    R = np.zeros((B, A, 3))
    for b in range(B):
        pts = []
        while len(pts) < A:
            p = rng.uniform(-0.55, 0.55, 3) * A ** (1 / 3) * 2.0
            if all(np.linalg.norm(p - q) > 0.9 for q in pts):
                pts.append(p)
        R[b] = pts
    Z = rng.choice([1, 6, 7, 8], size=(B, A))
    return Molecules(Z=jnp.asarray(Z), R=jnp.asarray(R, jnp.float32), mask=jnp.ones((B, A), bool),
                     mol_mask=jnp.ones(B, bool))


def time_fn(fn, args, repeats: int) -> tuple[float, float]:
    """(compile + first call s, mean s per later call)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        jax.block_until_ready(fn(*args))
    return first, (time.perf_counter() - t0) / repeats


def profile(arch: dict, mol: Molecules, repeats: int) -> dict:
    config = nnmodel.config_for("cormorant", **arch)
    stats = {"scale": 1.0, "shift": 0.0, "atom_ref": np.zeros(config.max_z + 1)}
    params = nnmodel.init_params("cormorant", config, jax.random.PRNGKey(0), mol, stats)
    energy = nnmodel.make_energy("cormorant", config)

    def e_and_f(p, m):
        e, g = jax.value_and_grad(lambda R: energy(p, dataclasses.replace(m, R=R)).sum())(m.R)
        return e, -g

    def loss(net, m):
        e, f = e_and_f({"net": net, "stats": params["stats"]}, m)
        return e ** 2 * 1e-4 + jnp.mean(f ** 2)

    out = {}
    for name, fn, args in (("energy", jax.jit(energy), (params, mol)),
                           ("energy+forces", jax.jit(e_and_f), (params, mol)),
                           ("train step", jax.jit(jax.grad(loss)), (params["net"], mol))):
        first, step = time_fn(fn, args, repeats)
        out[name] = {"compile_s": first - step, "step_s": step, "molecules_per_s": mol.R.shape[0] / step}
    out["n_params"] = int(sum(x.size for x in jax.tree_util.tree_leaves(params["net"])))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    shapes = QUICK["shapes"] if args.quick else SHAPES
    repeats = QUICK["repeats"] if args.quick else REPEATS
    rows = []
    for label, (B, A) in shapes.items():
        mol = batch(B, A)
        for v in VARIANTS:
            arch = {**(QUICK["arch"] if args.quick else {}), **v}
            res = profile(arch, mol, repeats)
            rows.append({"shape": label, **v, **res})
            print(f"{label:16s} {v['cg_product']:6s} {v['parity']:8s} " + "  ".join(
                f"{k}: {res[k]['step_s'] * 1e3:8.1f} ms (compile {res[k]['compile_s']:5.1f} s)"
                for k in ("energy", "energy+forces", "train step")), flush=True)
    speedups = {}
    for label in shapes:
        for q in ("both", "natural"):
            r = {row["cg_product"]: row for row in rows if row["shape"] == label and row["parity"] == q}
            speedups[f"{label}, {q}"] = {k: r["e3nn"][k]["step_s"] / r["fused"][k]["step_s"]
                                         for k in ("energy", "energy+forces", "train step")}
    results = {"experiment": "cormorant_profile", "quick": args.quick, "rows": rows,
               "speedup_fused_over_e3nn": speedups, "dtype": "float32", "jax": jax.__version__,
               "date": time.strftime("%Y-%m-%d"), "device": str(jax.devices()[0]),
               "machine": {"platform": platform.platform(), "cpus": os.cpu_count()}}
    from jaxqc.data.io import atomic_write_text

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out, json.dumps(results, indent=1))
    print(json.dumps(speedups, indent=1))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
