"""Why did jaxqc's SchNet learn less per epoch on QM9 than schnetpack's? Batches, clipping, initialisation.

This experiment trains the same SchNet (64 features, 3 interactions, QM9 U0, N = 10,000 on the fixed split,
the recipe of qm9_nn.py --accuracy) for the same number of EPOCHS (not wall time, so the result does not
depend on the machine's load), one suspect changed at a time, and schnetpack 2.1.1 (when installed) on the
same data with the same recipe; it records the validation MAE after every epoch and the test MAE of the
best model. Suspects (VARIANTS): size-homogeneous batches (jaxqc's atom-count buckets; 1 bucket = random
mixes of sizes, as schnetpack's), gradient clipping, and the initialisation (flax's: embeddings
N(0, 1/F), LeCun-normal kernels; schnetpack's: embeddings N(0, 1), Xavier-uniform kernels).
Result (20 epochs, experiments/results/qm9_batch_mix.json): the initialisation is the cause; neither
batch composition nor clipping is. Test MAE: flax init 4.30, 1 bucket 4.92, no clipping 5.07, N(0, 1)
embeddings 3.60, both of schnetpack's 3.12 (SchNet's default since), schnetpack 2.83 kcal/mol.

    python experiments/qm9_batch_mix.py --epochs 20                 # ~10 min per run on 2 cores
    python experiments/qm9_batch_mix.py --only 4                    # one jaxqc variant (merged into the JSON)
    python experiments/qm9_batch_mix.py --quick --no-peer           # CI-sized
"""
from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from jaxqc.benchmark import nn_peer

OUT = Path(__file__).parent / "results" / "qm9_batch_mix.json"
FLAX_INIT = {"embedding_std": None, "kernel_init": "lecun_normal"}  # SchNet's initialisation until 2026-11-30
VARIANTS = {  # label -> TrainConfig overrides of jaxqc's run ("arch": SchNet config overrides)
    "jaxqc, 8 buckets (size-homogeneous batches)": {"n_buckets": 8, "arch": FLAX_INIT},
    "jaxqc, 1 bucket (mixed-size batches)": {"n_buckets": 1, "arch": FLAX_INIT},
    "jaxqc, 8 buckets, no gradient clipping (as schnetpack)": {"n_buckets": 8, "clip_norm": None, "arch": FLAX_INIT},
    "jaxqc, 8 buckets, embeddings ~ N(0, 1) (as schnetpack)": {"n_buckets": 8,
                                                              "arch": {**FLAX_INIT, "embedding_std": 1.0}},
    "jaxqc, 8 buckets, embeddings ~ N(0, 1) and Xavier-uniform dense layers (schnetpack's initialisation)":
        {"n_buckets": 8},  # SchNet's defaults now
}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-train", type=int, default=10_000)
    p.add_argument("--quick", action="store_true", help="200 molecules, tiny SchNet, 3 epochs")
    p.add_argument("--no-peer", action="store_true", help="skip schnetpack")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--only", nargs="+", type=int, metavar="K",
                   help="run only these jaxqc variants (0-based, in VARIANTS order) and no peer; merge into --out")
    args = p.parse_args(argv)
    nn_peer.set_single_thread()
    data, split = nn_peer.qm9_data(args.quick)
    n = min(args.n_train, len(split["train"]))
    split = {**split, "train": split["train"][:n], "protocol": "QM9 fixed split (seed 0), train[:N]"}
    arch = dict(features=16, interactions=2, cutoff_ang=5.0, n_rbf=8) if args.quick else nn_peer.QM9_ARCH
    epochs = 3 if args.quick else args.epochs
    runs = {}
    with tempfile.TemporaryDirectory(prefix="jaxqc_qm9_mix_") as tmp:
        for k, (label, overrides) in enumerate(VARIANTS.items()):
            if args.only is not None and k not in args.only:
                continue
            t0 = time.perf_counter()
            overrides = dict(overrides)
            arch_k = {**arch, **overrides.pop("arch", {})}
            runs[label] = nn_peer.run_jaxqc(data, split, arch_k, nn_peer.QM9_RECIPE, 24 * 60.0, "U0", False,
                                           Path(tmp) / f"v{k}", epochs=epochs, **overrides)
            runs[label]["wall_s"] = time.perf_counter() - t0
            print(f"{label}: {_line(runs[label])}", flush=True)
    if not args.no_peer and args.only is None:
        try:
            runs["schnetpack"] = nn_peer.run_schnetpack(data, split, arch, nn_peer.QM9_RECIPE, 24 * 60.0, "U0", False,
                                                        epochs=epochs)
            print(f"schnetpack: {_line(runs['schnetpack'])}", flush=True)
        except ImportError as err:
            runs["schnetpack"] = {"error": f"not installed: {err}"}
    result = {"experiment": "qm9_batch_mix", "n_train": n, "epochs": epochs, "arch": arch,
              "recipe": nn_peer.QM9_RECIPE, "date": time.strftime("%Y-%m-%d"),
              "machine": {"platform": platform.platform(), "python": platform.python_version()},
              "runs": runs}
    out = Path(args.out)
    if args.only is not None and out.exists():  # merge into the earlier runs of the same settings
        result["runs"] = {**json.loads(out.read_text())["runs"], **runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float))
    return result


def _line(r: dict) -> str:
    curve = r.get("curve", [])
    valid = ", ".join(f"{c['valid_energy_mae']:.2f}" for c in curve[:: max(1, len(curve) // 5)])
    return f"validation MAE by epoch {valid}; test MAE {r['test']['energy_mae']:.3f} kcal/mol"


if __name__ == "__main__":
    main()
