"""MACE on an accelerator, one prepared run (within 8 minutes on one GPU): train-step and inference
throughput (energy + forces), MD steps/s (one trajectory, and many replicas at once) and compile times.

Throughput: jaxqc's MACE (default config: 32 channels, l_max 2; `paper`: 256 channels, l_max 3) on rMD17
aspirin (batches of 5 and 32) and QM9 (batches of 32 and 128), float32, the batches built as the trainer
builds them (experiments/mace_peer.py's jaxqc_speed: warm-up call with its compilation reported as
*_first_call_s, then N_BATCHES timed batches). MD: Langevin at 500 K, dt 0.5 fs, aspirin, default config
(random weights): jaxqc.md.run.run_md (one trajectory, float32 and float64) and
jaxqc.md.replicas.langevin_replicas (REPLICAS trajectories in one vmapped step, float32), compile time apart.
Each item is skipped (and says so) once the run has used BUDGET_MIN minutes: the JSON is written after
every item, so a run stopped from outside keeps what it measured.

    python experiments/mace_gpu.py                 # on the GPU machine (~5-8 min)
    python experiments/mace_gpu.py --quick         # CPU, tiny sizes (tests run this)
Without ../shared/data, aspirin falls back to ethanol-xtb (mace_peer.load_case_data); an item that fails (e.g. QM9 absent) records its error and the run goes on.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

import numpy as np

# ---- configuration (edit here) --------------------------------------------------------------------
CONFIGS = ("default", "paper")
CASES = (("aspirin", 5), ("aspirin", 32), ("qm9", 32), ("qm9", 128))
N_BATCHES = 20
MD_STEPS, REPLICAS = 4000, (1, 32, 256)
BUDGET_MIN = 7.0
QUICK = dict(configs=("quick",), cases=(("aspirin", 5),), n_batches=2, md_steps=40, md_dtypes=("float32",),
             replicas=(3,))
OUT = Path(__file__).parent / "results" / "mace_gpu.json"


def peer_module():
    spec = importlib.util.spec_from_file_location("mace_peer", Path(__file__).parent / "mace_peer.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def md_items(mp, quick: bool, steps: int, replicas, dtypes=("float32", "float64")) -> list:
    """[(name, fn)] of the MD measurements on aspirin (default config, random weights)."""
    import jax

    from jaxqc.md.replicas import langevin_replicas
    from jaxqc.md.run import MDConfig, run_md
    from jaxqc.nn import model as nnmodel

    def setup():
        data, pool, _ = mp.load_case_data("aspirin", quick)
        overrides = mp.QUICK["configs"]["quick"] if quick else {}
        config, stats = mp.jaxqc_setup(data, pool, overrides)
        params = nnmodel.init_params("mace", config, jax.random.PRNGKey(0), data.molecules(pool[:2]), stats)
        real = np.asarray(data.Z[0]) > 0
        return nnmodel.make_energy("mace", config), params, np.asarray(data.Z[0])[real], np.asarray(data.R[:max(replicas)])[:, real]

    cache = {}

    def one(dtype):
        energy, params, Z, R = cache.setdefault("m", setup())
        cfg = MDConfig(steps=steps, dt_fs=0.5, temperature_k=500.0, ensemble="nvt", write_every=100,
                       float64=dtype == "float64", bond_range_ang=None)
        r = run_md(energy, params, Z, R[0], cfg)
        return {"steps": r.steps_done, "steps_per_s": r.steps_per_s, "compile_s": r.compile_s, "stopped": r.stopped}

    def many(n):
        energy, params, Z, R = cache.setdefault("m", setup())
        R = np.concatenate([R] * (-(-n // len(R))))[:n]
        r = langevin_replicas(energy, params, Z, R, steps, temperature_k=500.0, block_steps=steps)
        return {k: r[k] for k in ("steps", "run_s", "compile_s", "replica_steps_per_s")} | {
            "failed": sum(b >= 0 for b in r["first_bad_step"]), "replicas": n}

    return ([(f"md_one_{d}", (lambda d=d: one(d))) for d in dtypes]
            + [(f"md_replicas_{n}", (lambda n=n: many(n))) for n in replicas])


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CPU-sized: a tiny MACE, one case, 40 MD steps")
    p.add_argument("--budget-min", type=float, default=BUDGET_MIN, help="skip the items left after this many minutes")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    import jax

    from jaxqc.data.io import atomic_write_text

    mp = peer_module()
    q = args.quick
    configs, cases = (QUICK["configs"], QUICK["cases"]) if q else (CONFIGS, CASES)
    n_batches = QUICK["n_batches"] if q else N_BATCHES
    items = []
    for config in configs:
        overrides = mp.config_overrides(config, q) if q or config != "default" else {}
        for case, batch in cases:
            items.append((f"{config}_{case}_b{batch}",
                          (lambda c=case, b=batch, o=overrides: mp.jaxqc_speed(c, b, n_batches, o, q))))
    items += (md_items(mp, q, QUICK["md_steps"], QUICK["replicas"], QUICK["md_dtypes"]) if q
              else md_items(mp, q, MD_STEPS, REPLICAS))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    results = {"experiment": "mace_gpu", "quick": q, "date": time.strftime("%Y-%m-%d %H:%M"),
               "devices": [str(d) for d in jax.devices()], "backend": jax.default_backend(),
               "machine": mp.machine(), "budget_min": args.budget_min, "items": {}}
    t0 = time.perf_counter()
    for name, fn in items:
        if time.perf_counter() - t0 > 60 * args.budget_min:
            results["items"][name] = {"skipped": f"the {args.budget_min:g}-min budget was used"}
            continue
        t = time.perf_counter()
        try:
            row = fn()
        except Exception as err:  # noqa: BLE001 - one failed measurement is a result, the others go on
            row = {"error": f"{type(err).__name__}: {err}"}
        row["item_wall_s"] = time.perf_counter() - t
        results["items"][name] = row
        results["wall_s"] = time.perf_counter() - t0
        atomic_write_text(out, json.dumps(results, indent=1, default=float))
        shown = {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}
        print(f"{name}: {shown}" + (f" {row['error']}" if "error" in row else ""), flush=True)
    print(f"wrote {out} ({results['wall_s']:.0f} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
