"""The `jaxqc` command.

    jaxqc data info SOURCE [--json]
    jaxqc data convert SOURCE OUT [--energy-unit U --force-unit U --length-unit U]
    jaxqc data generate --start FILE --out OUT [--n-frames N --interval K --temperature-k T ...]
    jaxqc data download NAME [--dest DIR]
    jaxqc md MODEL --start FILE [--frame K] --steps N --dt-fs 0.5 --temperature-k 300 --ensemble nve|nvt
             --out TRAJ.extxyz
    jaxqc compare [--data ethanol-xtb] [--test FILE] [--budget quick|paper] [--methods M ...] [--plan] [--json]

SOURCE is a registered name (`qm9`, `ethanol-xtb`) or a file. Errors print one line and exit 2.
On Linux the command re-runs itself once with GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (see
huge_page_command); JAXQC_HUGE_PAGES=0 turns that off.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time

import numpy as np

from .nn import NETWORK_KINDS


def _add_units(p):
    p.add_argument("--energy-unit", help="unit of energies in the file (kcal/mol, eV, meV, Ha, kJ/mol)")
    p.add_argument("--force-unit", help="unit of forces in the file (e.g. eV/Å, kcal/mol/Å, Ha/bohr)")
    p.add_argument("--length-unit", help="unit of positions in the file (Å, bohr, nm)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxqc", description="Machine learning for quantum chemistry in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="read, convert, generate and download data sets")
    dsub = data.add_subparsers(dest="data_command", required=True)

    info = dsub.add_parser("info", help="summarise a data set")
    info.add_argument("source", help="registered name (qm9, ethanol-xtb) or file path")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    _add_units(info)

    conv = dsub.add_parser("convert", help="convert a data set to sGDML-style npz or extended XYZ")
    conv.add_argument("source")
    conv.add_argument("out", help="output file: .npz (kcal/mol, Å) or .extxyz (eV, Å)")
    _add_units(conv)

    gen = dsub.add_parser("generate", help="Langevin MD with GFN2-xTB (tblite) -> sGDML-style npz")
    gen.add_argument("--start", required=True, help="starting geometry (xyz, Å)")
    gen.add_argument("--out", required=True, help="output npz")
    gen.add_argument("--n-frames", type=int, default=1000, help="frames to write")
    gen.add_argument("--interval", type=int, default=20, help="MD steps between written frames")
    gen.add_argument("--equilibration-steps", type=int, default=2000, help="MD steps before the first frame")
    gen.add_argument("--temperature-k", type=float, default=500.0)
    gen.add_argument("--dt-fs", type=float, default=0.5)
    gen.add_argument("--friction-per-fs", type=float, default=0.01, help="Langevin friction (1/fs)")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--method", default="GFN2-xTB", help="tblite method (GFN2-xTB, GFN1-xTB)")
    gen.add_argument("--charge", type=int, default=0)
    gen.add_argument("--relabel-dft", metavar="XC/BASIS",
                     help="relabel the frames with PySCF DFT, e.g. 'PBE/6-31G*' (slow; needs jaxqc[dft])")

    dl = dsub.add_parser("download", help="explicit, checksummed download of a public data set")
    dl.add_argument("name", help="what to download (see `jaxqc data download --list`)", nargs="?")
    dl.add_argument("--dest", default=None, help="folder to put the file in (default: $JAXQC_CACHE)")
    dl.add_argument("--list", action="store_true", help="list what can be downloaded")
    dl.add_argument("--sha256", help="expected SHA-256 of the file (checked before it is kept)")
    train = sub.add_parser("train", help="train a model")
    train.add_argument("method", choices=["krr", "gdml", "sgdml", *NETWORK_KINDS],
                       help="krr: kernel ridge regression of molecular properties; gdml/sgdml: kernel force "
                            "field of one molecule from forces (sgdml: symmetrised over its permutations); "
                            "schnet/dtnn/cormorant: neural networks (energies, forces or a QM9 property)")
    train.add_argument("--data", required=True,
                       help="registered name (qm9, ethanol-xtb) or file (per-molecule properties for krr; "
                            "frames of one molecule with energies and forces for gdml/sgdml)")
    train.add_argument("--representation", default="cm", choices=["cm", "cm-eigen", "bob"])
    train.add_argument("--kernel", default="laplacian", choices=["laplacian", "gaussian"])
    train.add_argument("--target", action="append", default=None,
                       help="target property (repeat for several; 'all' for every QM9 target); default U0")
    train.add_argument("--n-train", type=int, required=True)
    train.add_argument("--n-valid", type=int, default=None,
                       help="validation molecules for the grid (krr QM9: 2000; gdml/sgdml: frames of --data "
                            "disjoint from training, default min(1000, rest))")
    train.add_argument("--sigma-grid", type=float, nargs="+", default=None, help="kernel widths to try")
    train.add_argument("--lambda-grid", type=float, nargs="+", default=None,
                       help="regularisers to try (gdml/sgdml: one value, the diagonal regulariser)")
    train.add_argument("--seed", type=int, default=0, help="split seed")
    train.add_argument("--solver", default="auto", choices=["auto", "dense", "cg"],
                       help="gdml/sgdml: dense Cholesky, matrix-free preconditioned CG, or auto (dense while "
                            "small and in memory)")
    train.add_argument("--cg-tol", type=float, default=None, help="gdml/sgdml CG: relative residual to stop at (1e-4)")
    train.add_argument("--cg-rank", type=int, default=None,
                       help="gdml/sgdml CG: most preconditioner columns (default 2500)")
    train.add_argument("--forces", action="store_true", help="networks: train on energies and forces")
    train.add_argument("--epochs", type=int, default=None, help="networks: most epochs (default 1000)")
    train.add_argument("--time-budget", type=float, default=None, metavar="MIN",
                       help="networks: stop after this many minutes of training")
    train.add_argument("--batch-size", type=int, default=None, help="networks (default 32)")
    train.add_argument("--lr", type=float, default=None, help="networks learning rate (default 5e-4)")
    train.add_argument("--features", type=int, default=None,
                       help="networks: feature width (cormorant: channels per irrep)")
    train.add_argument("--interactions", type=int, default=None,
                       help="networks: interaction blocks (cormorant: CG levels)")
    train.add_argument("--l-max", type=int, default=None, help="cormorant: largest l of the spherical features")
    train.add_argument("--cutoff", type=float, default=None, help="networks cutoff in Å")
    train.add_argument("--resume", action="store_true", help="networks: continue the run in --out")
    train.add_argument("--devices", type=int, default=None, help="networks: local devices to use (default all)")
    train.add_argument("--coordinator", default=None, help="multi-host: coordinator address host:port")
    train.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
    train.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
    train.add_argument("--out", required=True,
                       help="model file to write (.npz); networks (schnet, dtnn, cormorant): a run directory")

    ev = sub.add_parser("evaluate", help="evaluate a saved model on a data split")
    ev.add_argument("model")
    ev.add_argument("--data", required=True)
    ev.add_argument("--split", default="test", choices=["test", "valid", "train", "all"],
                    help="which molecules: the split saved with the model, or all of --data (gdml/sgdml have no "
                         "saved test split: 'test' is every frame of --data not used for training or validation)")
    ev.add_argument("--json", action="store_true")

    mdp = sub.add_parser("md", help="molecular dynamics (NVE velocity Verlet, NVT Langevin) on a saved force field",
                         description="Molecular dynamics on a gdml/sgdml model file or a schnet/dtnn/cormorant run directory. "
                                     "Writes TRAJ (extended XYZ, eV), TRAJ.csv (time_fs, potential, kinetic, total "
                                     "energy in kcal/mol, temperature_K), TRAJ.json (summary) and TRAJ.png.")
    mdp.add_argument("model", help="model file (.npz) or network run directory")
    mdp.add_argument("--start", required=True, help="start geometry: xyz/extxyz/npz file or registered data set name")
    mdp.add_argument("--frame", type=int, default=0, help="frame of --start to begin from (default 0; -1: last)")
    mdp.add_argument("--steps", type=int, required=True, help="time steps to integrate")
    mdp.add_argument("--dt-fs", type=float, default=0.5, help="time step in fs (default 0.5)")
    mdp.add_argument("--temperature-k", type=float, default=300.0,
                     help="initial Maxwell-Boltzmann velocities and NVT target temperature, K (default 300)")
    mdp.add_argument("--ensemble", default="nve", choices=["nve", "nvt"],
                     help="nve: velocity Verlet; nvt: Langevin thermostat, BAOAB (default nve)")
    mdp.add_argument("--friction-per-fs", type=float, default=0.01, help="Langevin friction, 1/fs (default 0.01)")
    mdp.add_argument("--seed", type=int, default=0, help="seed of the initial velocities and the Langevin noise")
    mdp.add_argument("--write-every", type=int, default=10, help="steps between written frames (default 10)")
    mdp.add_argument("--float32", action="store_true", help="integrate in float32 (default float64)")
    mdp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    mdp.add_argument("--out", required=True, help="trajectory file to write (.extxyz)")

    cmp = sub.add_parser("compare", help="train and evaluate every method that applies on one data set",
                         description="Trains and evaluates every method that applies to --data with one protocol "
                                     "and prints a table (method, N train, energy/property MAE, force MAE, fit time, "
                                     "prediction throughput, peak memory); writes compare.json, learning_curve.png "
                                     "and parity_<method>.png to --out. Methods that do not apply are listed.")
    cmp.add_argument("--data", default="ethanol-xtb",
                     help="registered name (ethanol-xtb, qm9) or file: frames of one molecule (rMD17/sGDML npz, "
                          "extxyz) or molecules with properties (default ethanol-xtb)")
    cmp.add_argument("--test", default=None, metavar="FILE",
                     help="separate test frames of the same molecule (rMD17 protocol: --data gives 950 training + "
                          "50 validation frames, every frame of FILE is a test frame)")
    cmp.add_argument("--target", default=None, help="property to learn for property data (default U0)")
    cmp.add_argument("--budget", default="quick", metavar="quick|paper",
                     help="quick: small N and short network runs, ~10 min on 2 CPU cores (default); paper: the "
                          "published protocols (rMD17 1000 frames, QM9 N up to 110k, long network runs: GPU)")
    cmp.add_argument("--methods", nargs="+", default=None, metavar="METHOD",
                     help="subset of krr-cm, krr-bob, gdml, sgdml, schnet, dtnn, cormorant (comma or space separated)")
    cmp.add_argument("--plan", action="store_true", help="print the plan (protocol, N, settings) without training")
    cmp.add_argument("--json", action="store_true", help="print the JSON result to stdout instead of the table")
    cmp.add_argument("--out", default=None, metavar="DIR",
                     help="folder for compare.json, plots, predictions and network runs (default ./compare_<data>/)")
    cmp.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    cmp.add_argument("--in-process", action="store_true",
                     help="run every method in this process instead of one worker process each (quicker start; "
                          "peak memory then includes what earlier methods left)")
    cmp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _add_units(cmp)
    return parser


def _read(args):
    from .data import io

    return io.read(args.source, energy_unit=args.energy_unit, force_unit=args.force_unit,
                   length_unit=args.length_unit)


def cmd_data_info(args) -> int:
    data = _read(args)
    summary = data.summary()
    if args.json:
        print(json.dumps(summary))
        return 0
    n = summary["n_atoms"]
    print(f"{summary['name']}: {summary['n_molecules']} molecules, {n['min']}-{n['max']} atoms, "
          f"elements {' '.join(summary['elements'])}")
    print(f"  labels: " + ", ".join(f"{k} [{u}]" for k, u in summary["labels"].items()))
    stats = summary["statistics"]
    if "E" in stats:
        e = stats["E"]
        print(f"  energy: mean {e['mean']:.2f}, std {e['std']:.2f}, range {e['min']:.2f} .. {e['max']:.2f} kcal/mol")
    if "F" in stats:
        print(f"  forces: rms {stats['F']['rms']:.2f}, max |F| {stats['F']['max_abs']:.2f} kcal/mol/Å")
    for key in ("theory", "temperature_k", "dt_fs", "seed", "engine", "command", "md5", "source"):
        if summary.get(key) is not None:
            print(f"  {key}: {summary[key]}")
    return 0


def cmd_data_convert(args) -> int:
    from .data import io

    data = _read(args)
    io.write(data, args.out)
    print(f"wrote {len(data)} molecules to {args.out}")
    return 0


def cmd_data_generate(args) -> int:
    from .data import generate, io

    command = "jaxqc " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["data"] else None
    t0 = time.perf_counter()
    data = generate.generate_md_dataset(
        args.start, n_frames=args.n_frames, interval=args.interval, equilibration_steps=args.equilibration_steps,
        temperature_k=args.temperature_k, dt_fs=args.dt_fs, friction_per_fs=args.friction_per_fs,
        seed=args.seed, method=args.method, charge=args.charge, progress=True)
    if args.relabel_dft:
        data = generate.relabel_pyscf(data, args.relabel_dft, progress=True)
    if command:
        data.meta["command"] = command
    data.meta["generation_seconds"] = round(time.perf_counter() - t0, 1)
    io.write_npz(data, args.out)
    print(f"wrote {len(data)} frames to {args.out} in {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_data_download(args) -> int:
    from .data import download

    if args.list or not args.name:
        for name, entry in download.SOURCES.items():
            print(f"{name:24s} {entry['description']}")
        return 0
    path = download.download(args.name, dest=args.dest, sha256=args.sha256)
    print(f"{args.name}: {path}")
    return 0


ALL_QM9_TARGETS = ("U0", "U", "H", "G", "HOMO", "LUMO", "gap", "ZPVE", "mu", "alpha", "R2", "Cv")


def cmd_train(args) -> int:
    if args.method in ("gdml", "sgdml"):
        return _train_gdml(args)
    if args.method in NETWORK_KINDS:
        return _train_network(args)
    from .data import io
    from .kernels import krr

    targets = tuple(args.target or ["U0"])
    if "all" in targets:
        targets = ALL_QM9_TARGETS
    kw = {}
    if args.sigma_grid:
        kw["sigmas"] = tuple(args.sigma_grid)
    if args.lambda_grid:
        kw["lambdas"] = tuple(args.lambda_grid)
    config = krr.KRRConfig(representation=args.representation, kernel=args.kernel, targets=targets, **kw)
    data = io.read(args.data)
    t0 = time.perf_counter()
    model = krr.train_krr(data, config, args.n_train, args.n_valid, args.seed, progress=True)
    krr.save_krr(model, args.out)
    print(f"trained KRR ({config.representation}, {config.kernel}) on {args.n_train} molecules in "
          f"{time.perf_counter() - t0:.1f} s: sigma={model['sigma']:g}, lambda={model['lambda']:g}; "
          f"validation MAE " + ", ".join(f"{t} {m:.4g} {model['units'][t]}" for t, m in
                                          zip(targets, model["grid_mae"].min(axis=(0, 1)))))
    print(f"wrote {args.out}")
    return 0


def _train_gdml(args) -> int:
    from .data import io
    from .errors import JaxqcError
    from .kernels import gdml

    kw = {}
    if args.sigma_grid:
        kw["sigmas"] = tuple(args.sigma_grid)
    if args.lambda_grid:
        if len(args.lambda_grid) != 1:
            raise JaxqcError(f"{args.method} takes one --lambda-grid value (the regulariser), got {args.lambda_grid}")
        kw["lam"] = args.lambda_grid[0]
    kw["solver"] = args.solver
    if args.cg_tol is not None:
        kw["cg_tol"] = args.cg_tol
    if args.cg_rank is not None:
        kw["cg_rank"] = args.cg_rank
    config = gdml.GDMLConfig(symmetric=args.method == "sgdml", **kw)
    data = io.read(args.data)
    t0 = time.perf_counter()
    model = gdml.train_gdml(data, config, args.n_train, args.n_valid, args.seed, progress=True)
    gdml.save_gdml(model, args.out)
    v = model["validation"]
    print(f"trained {args.method} on {args.n_train} frames ({len(model['perms'])} permutation(s), {model['solver']} "
          f"solver) in "
          f"{time.perf_counter() - t0:.1f} s: sigma={model['sigma']:g}; validation ({len(model['split']['valid'])} "
          f"frames) force MAE {v['forces_mae']:.4g} kcal/mol/Å"
          + (f", energy MAE {v['energy_mae']:.4g} kcal/mol" if "energy_mae" in v else ""))
    print(f"wrote {args.out}")
    return 0


def _train_network(args) -> int:
    from .data import io
    from .errors import JaxqcError
    from .train import loop
    from .train.run import train_network

    if args.coordinator or args.num_processes:
        import jax
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    kw = {k: v for k, v in (("epochs", args.epochs), ("time_budget_min", args.time_budget),
                            ("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
    if args.time_budget is not None and args.epochs is None:
        kw["epochs"] = 10**9
    cfg = loop.TrainConfig(seed=args.seed, **kw)
    names = (("channels", "cg_levels") if args.method == "cormorant" else ("features", "interactions"))
    model_kw = {k: v for k, v in ((names[0], args.features), (names[1], args.interactions),
                                  ("cutoff_ang", args.cutoff), ("l_max", args.l_max)) if v is not None}
    if "l_max" in model_kw and args.method != "cormorant":
        raise JaxqcError("--l-max is a cormorant option")
    data = io.read(args.data)
    target = (args.target or ["U0" if "U0" in data.props else "energy"])[0]
    out = train_network(args.method, data, target, args.forces, args.n_train, args.n_valid, cfg, args.out,
                        model_kw, resume=args.resume, n_devices=args.devices, seed=args.seed)
    print(f"trained {args.method} on {args.n_train} {'frames' if target == 'energy' else 'molecules'} "
          f"({out['epochs']} epochs, {out['steps']} steps, {out['time_s']:.0f} s, stopped: {out['stop_reason']}); "
          f"best validation MAE {out['best_valid']:.4g} at epoch {out['best_epoch']}")
    print(f"wrote {args.out}/model.npz")
    return 0


def _evaluate_network(args) -> int:
    from .data import io
    from .errors import JaxqcError
    from .train.run import load_network, predict_network

    kind, config, energy, params, header = load_network(args.model)
    prov, target = header["provenance"], header["config"]["target"]
    data = io.read(args.data)
    if args.split == "all":
        idx, frames = np.arange(len(data)), "all of --data"
    elif prov["dataset_md5"] in (data.md5, data.meta.get("md5")):
        idx, frames = np.asarray(prov[f"{args.split}_idx"]), f"the model's {args.split} split"
    elif args.split == "test":
        idx, frames = np.arange(len(data)), "all of --data (not the training data set)"
    else:
        raise JaxqcError(f"{args.data} is not the data set the model was trained on; use --split test or all")
    if len(idx) == 0:
        raise JaxqcError(f"{args.data}: no molecules in {frames}")
    forces = target == "energy" and data.F is not None
    E, F = predict_network(energy, params, data, idx, forces)
    if target == "energy":
        result = {"energy": _metrics(E, data.E[idx], "kcal/mol")}
        if forces:
            mask = data.Z[idx] > 0
            result["forces"] = _metrics(F[mask], data.F[idx][mask], "kcal/mol/Å")
    else:
        result = {target: _metrics(E, data.props[target][idx], header["units"]["target"])}
    result.update(n=int(len(idx)), frames=frames)
    _print_result(result, f"{len(idx)} molecules ({frames})", args.json)
    return 0


def _evaluate_gdml(args) -> int:
    from .data import io
    from .errors import JaxqcError
    from .kernels import gdml

    model = gdml.load_gdml(args.model)
    data = io.read(args.data)
    gdml.check_molecule(data, model["z"], where=args.data)
    prov = model["provenance"]
    same = prov["dataset_md5"] in (data.md5, data.meta.get("md5"))
    used = np.concatenate([prov["train_idx"], prov["valid_idx"]])
    if args.split in ("train", "valid"):
        _require_training_data(data, prov, args.data)
        idx, frames = prov[f"{args.split}_idx"], f"the model's {args.split} frames"
    elif args.split == "test" and same:
        idx = np.setdiff1d(np.arange(len(data)), used)
        frames = "all frames of --data except the model's training and validation frames (same data set)"
    else:
        idx, frames = np.arange(len(data)), "all frames of --data"
    if len(idx) == 0:
        raise JaxqcError(f"{args.data}: no frames left to evaluate ({frames})")
    data = data.subset(idx)
    if data.F is None:
        raise JaxqcError(f"{args.data}: no forces to evaluate against")
    E, F = gdml.predict_dataset(model, data)
    result = {}
    if data.E is not None:
        result["energy"] = _metrics(E, data.E, "kcal/mol")
    result["forces"] = _metrics(F, data.F, "kcal/mol/Å")
    result.update(n=int(len(data)), frames=frames)
    _print_result(result, f"{len(data)} frames ({frames})", args.json)
    return 0


def _metrics(pred, true, unit) -> dict:
    from .metrics import mae_rmse

    return {**mae_rmse(pred, true), "unit": unit}


def _print_result(result: dict, header: str, as_json: bool) -> None:
    """The evaluate output: one JSON object, or a header and a line per quantity with MAE and RMSE."""
    if as_json:
        print(json.dumps(result))
        return
    print(header)
    for k, m in result.items():
        if isinstance(m, dict):
            print(f"  {k:7s} MAE {m['mae']:.4g}  RMSE {m['rmse']:.4g}  {m['unit']}")


def _require_training_data(data, prov, source) -> None:
    """JaxqcError unless `data` is the data set whose md5 the model's provenance records."""
    from .errors import JaxqcError

    if prov["dataset_md5"] not in (data.md5, data.meta.get("md5")):
        raise JaxqcError(f"{source} is not the data set the model was trained on (md5 {data.md5} vs "
                         f"{prov['dataset_md5']}); use --split all to evaluate on all of it")


def cmd_evaluate(args) -> int:
    from .data import io
    from .errors import JaxqcError
    from .kernels import krr
    from .md.models import model_kind

    kind = model_kind(args.model)
    if kind in ("gdml", "sgdml"):
        return _evaluate_gdml(args)
    if kind in NETWORK_KINDS:
        return _evaluate_network(args)
    model = krr.load_krr(args.model)
    data = io.read(args.data)
    prov = model["provenance"]
    if args.split != "all":
        _require_training_data(data, prov, args.data)
        data = data.subset(prov[f"{args.split}_idx"])
    pred = krr.predict_dataset(model, data, progress=not args.json)
    result = {t: _metrics(pred[t], data.props[t], model["units"][t]) for t in pred}
    _print_result(result, f"{len(data)} molecules ({args.split})", args.json)
    return 0


def cmd_md(args) -> int:
    from .data import io
    from .errors import JaxqcError
    from .md.models import check_geometry, formula, load_potential
    from .md.run import MDConfig, run_md, write_outputs

    cfg = MDConfig(steps=args.steps, dt_fs=args.dt_fs, temperature_k=args.temperature_k, ensemble=args.ensemble,
                   friction_per_fs=args.friction_per_fs, seed=args.seed, write_every=args.write_every,
                   float64=not args.float32).check()
    if not str(args.out).lower().endswith((".extxyz", ".xyz")):
        raise JaxqcError(f"--out {args.out}: the trajectory is extended XYZ; name it *.extxyz")
    energy, params, info = load_potential(args.model)
    start = io.read(args.start)
    if not -len(start) <= args.frame < len(start):
        raise JaxqcError(f"--frame {args.frame}: {args.start} has {len(start)} frame(s)")
    k = args.frame % len(start)
    n = int(start.n_atoms[k])
    Z, R = start.Z[k, :n], start.R[k, :n]
    where = f"{args.start} frame {k}"
    check_geometry(info, Z, where=where)
    if info["z"] is None and info["elements"] is None and not args.quiet:
        print(f"jaxqc: note: {args.model} does not record the elements it was trained on; only checked that "
              f"they are embedded (Z <= {info['max_z']})", file=sys.stderr)
    if not args.quiet:
        print(f"md: {info['description']}; {formula(Z)} from {where}; {cfg.ensemble.upper()} {cfg.steps} steps of "
              f"{cfg.dt_fs:g} fs at {cfg.temperature_k:g} K, {'float64' if cfg.float64 else 'float32'}",
              file=sys.stderr, flush=True)
    result = run_md(energy, params, Z, R, cfg, progress=not args.quiet)
    paths = write_outputs(result, args.out, info, where)
    if result.stopped:
        raise JaxqcError(f"{result.stopped}; wrote {len(result.step)} frames to {args.out}")
    log = result.log
    print(f"{cfg.ensemble.upper()} {result.steps_done} steps ({result.steps_done * cfg.dt_fs / 1000:g} ps) in "
          f"{result.run_s:.1f} s ({result.steps_per_s:.0f} steps/s, compile {result.compile_s:.1f} s): "
          f"mean T {log['temperature_K'][1:].mean():.0f} K, total energy {log['total_kcal_mol'][0]:.4f} -> "
          f"{log['total_kcal_mol'][-1]:.4f} kcal/mol")
    print(f"wrote {paths['trajectory']} ({len(result.step)} frames), {paths['log']}, {paths['summary']}"
          + (f", {paths['plot']}" if paths["plot"] else " (no plot: matplotlib not installed)"))
    return 0


def cmd_compare(args) -> int:
    from .compare import main as compare_main

    return compare_main(args)


COMMANDS = {
    ("data", "info"): cmd_data_info,
    ("data", "convert"): cmd_data_convert,
    ("data", "generate"): cmd_data_generate,
    ("data", "download"): cmd_data_download,
    ("train", None): cmd_train,
    ("evaluate", None): cmd_evaluate,
    ("md", None): cmd_md,
    ("compare", None): cmd_compare,
}


HUGE_PAGES_TUNABLE = "glibc.malloc.hugetlb=1"


def huge_page_command(argv: list, environ: dict, platform: str = sys.platform):
    """(argv, env) to re-run this command with glibc's malloc asking for transparent huge pages, or None.

    XLA:CPU allocates a fresh temporary buffer for every call of a compiled function (~300 MB for a
    SchNet force evaluation of 100 QM9 molecules) and the kernel maps it 4 KiB page by page: 72,000 page
    faults per call, half of the call's time on one core (measured: 248 ms, with huge pages 144 ms). The
    tunable must be set before the process starts, hence the re-run. None when not on Linux, when
    GLIBC_TUNABLES is already set (also by the re-run itself) or when JAXQC_HUGE_PAGES=0."""
    if platform != "linux" or "GLIBC_TUNABLES" in environ or environ.get("JAXQC_HUGE_PAGES") == "0":
        return None
    return [sys.executable, "-m", "jaxqc.cli", *argv], {**environ, "GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}


def main(argv=None) -> int:
    from .errors import JaxqcError

    if argv is None:  # the `jaxqc` command itself (not a call from Python)
        rerun = huge_page_command(sys.argv[1:], dict(os.environ))
        if rerun is not None:
            os.execve(rerun[0][0], rerun[0], rerun[1])
    args = build_parser().parse_args(argv)
    key = (args.command, getattr(args, f"{args.command}_command", None))
    try:
        return COMMANDS[key](args)
    except JaxqcError as err:
        print(f"jaxqc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxqc: interrupted (a network run keeps its last checkpoint: add --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
