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
jaxqc.runtime.huge_page_command); JAXQC_HUGE_PAGES=0 turns that off.
"""
from __future__ import annotations

import argparse
import os
import sys


def _add_units(p, unit_check: bool = True):
    p.add_argument("--energy-unit", help="unit of energies in the file (kcal/mol, eV, meV, Ha, kJ/mol)")
    p.add_argument("--force-unit", help="unit of forces in the file (e.g. eV/Å, kcal/mol/Å, Ha/bohr)")
    p.add_argument("--length-unit", help="unit of positions in the file (Å, bohr, nm)")
    if unit_check:
        p.add_argument("--no-unit-check", action="store_true",
                       help="read energies and forces even where they are far beyond what molecules have (by "
                            "default that is refused as the sign of a wrong --energy-unit)")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like every other jaxqc error; exit code 2.
    Its subcommand parsers are of this class too (add_subparsers takes the parent's class)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    from .models.registry import BUILTIN_NAMES

    parser = OneLineParser(prog="jaxqc", description="Machine learning for quantum chemistry in JAX.")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an internal error")
    parser.add_argument("--plugin", action="append", metavar="FILE_OR_MODULE",
                        help="import a Python file or module that registers models (jaxqc.models.register); "
                             "also JAXQC_PLUGINS and the jaxqc.models entry-point group")
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

    gen.add_argument("--hamiltonian", action="store_true",
                     help="with --relabel-dft: also store the Kohn-Sham matrix H, overlap S and orbitals per frame")
    gen.add_argument("--grid-level", type=int, help="with --relabel-dft: PySCF's DFT grid level (default 3)")

    lab = dsub.add_parser("label", help="label a data set's frames with PySCF DFT (E, F; --hamiltonian: H, S, "
                                        "orbitals, dipole)")
    lab.add_argument("source", help="registered name (ethanol-xtb) or file of frames")
    lab.add_argument("--dft", required=True, metavar="XC/BASIS", help="e.g. PBE/def2-SVP")
    lab.add_argument("--out", required=True, help="output npz (an existing file is kept unless --overwrite)")
    lab.add_argument("--hamiltonian", action="store_true",
                     help="store per frame H (Kohn-Sham matrix, Ha), S, orbital energies and occupations, AO "
                          "dipole integrals and the dipole (Debye), with the basis and AO order")
    lab.add_argument("--frames", type=int, help="label only the first N frames (after --every)")
    lab.add_argument("--every", type=int, default=1, help="take every k-th frame")
    lab.add_argument("--grid-level", type=int, help="PySCF's DFT integration grid level (default 3)")
    lab.add_argument("--no-forces", action="store_true", help="skip the forces (about half the cost)")
    lab.add_argument("--jobs", type=int, default=1, help="worker processes, one thread each")
    lab.add_argument("--resume", action="store_true", help="continue from the finished frames kept in OUT.partial/")
    lab.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _add_units(lab)

    dl = dsub.add_parser("download", help="explicit, checksummed download of a public data set")
    dl.add_argument("name", help="what to download (see `jaxqc data download --list`)", nargs="?")
    dl.add_argument("--dest", default=None, help="folder to put the file in (default: $JAXQC_CACHE)")
    dl.add_argument("--list", action="store_true", help="list what can be downloaded")
    dl.add_argument("--sha256", help="expected SHA-256 of the file (checked before it is kept)")
    train = sub.add_parser("train", help="train a model")
    train.add_argument("method", metavar="MODEL",
                       help=f"a registered model: {', '.join(BUILTIN_NAMES)}, or one that a --plugin registers")
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
                       help="networks: feature width (cormorant, mace: channels per irrep)")
    train.add_argument("--interactions", type=int, default=None,
                       help="networks: interaction blocks (cormorant: CG levels; mace: layers)")
    train.add_argument("--l-max", type=int, default=None, help="cormorant, mace: largest l of the spherical harmonics")
    train.add_argument("--max-heavy-atoms", type=int, default=None, metavar="K",
                       help="gschnet: train on the molecules with at most K heavy atoms")
    train.add_argument("--covariant", action="store_true",
                       help="schnorb: the covariant variant (PhiSNet/QHNet-style blocks from Clebsch-Gordan products)")
    train.add_argument("--baseline", choices=["none", "sad"], default=None,
                       help="schnorb: learn H - H0, H0 the data's Kohn-Sham matrix of the 'minao' guess (hybrid)")
    train.add_argument("--eps-weight", type=float, default=None, metavar="W",
                       help="schnorb: weight of the orbital-energy loss (occupied + LUMO, exact S; default 0)")
    train.add_argument("--cutoff", type=float, default=None, help="networks cutoff in Å")
    train.add_argument("--resume", action="store_true", help="networks: continue the run in --out")
    train.add_argument("--overwrite", action="store_true", help="replace the model or run already at --out")
    train.add_argument("--devices", type=int, default=None, help="networks: local devices to use (default all)")
    train.add_argument("--coordinator", default=None, help="multi-host: coordinator address host:port")
    train.add_argument("--num-processes", type=int, default=None, help="multi-host: number of processes")
    train.add_argument("--process-id", type=int, default=None, help="multi-host: this process's index")
    train.add_argument("--config", metavar="FILE.py",
                       help="a Python file whose get_config() returns the model settings (keys of the model's "
                            "config; 'budget': {'epochs', 'max_minutes', 'train': {...}})")
    train.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override one setting (repeatable), e.g. --set features=64 --set budget.train.lr=1e-3")
    train.add_argument("--out", required=True,
                       help="model file to write (.npz), or a run directory (networks keep checkpoints there)")
    _add_units(train)

    ev = sub.add_parser("evaluate", help="evaluate a saved model on a data split")
    ev.add_argument("model")
    ev.add_argument("--data", default=None, help="data set to evaluate on (required unless --generated)")
    ev.add_argument("--generated", metavar="MOLS.extxyz", default=None,
                    help="generative models: validity, uniqueness, novelty, distributions and the xTB relaxation "
                         "test of molecules written by `jaxqc generate`")
    ev.add_argument("--no-relax", action="store_true", help="with --generated: skip the GFN2-xTB relaxation")
    ev.add_argument("--relax-max", type=int, default=None, metavar="N",
                    help="with --generated: relax only the first N valid molecules")
    ev.add_argument("--split", default="test", choices=["test", "valid", "train", "all"],
                    help="which molecules: the split saved with the model, or all of --data (gdml/sgdml have no "
                         "saved test split: 'test' is every frame of --data not used for training or validation)")
    ev.add_argument("--json", action="store_true")
    _add_units(ev)

    gen_m = sub.add_parser("generate", help="generate molecules with a trained generative model (gschnet)",
                           description="Sample new molecules in 3D from a trained generative model. Writes OUT "
                                       "(extended XYZ, Å) with each molecule's SMILES and validity flags, and OUT.csv.")
    gen_m.add_argument("model", help="model file (.npz) or run directory")
    gen_m.add_argument("--n", type=int, default=1000, help="molecules to generate (default 1000)")
    gen_m.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the model's)")
    gen_m.add_argument("--seed", type=int, default=0)
    gen_m.add_argument("--batch", type=int, default=50, help="molecules generated at once (one compilation)")
    gen_m.add_argument("--out", required=True, help="output .extxyz (an existing file is kept unless --overwrite)")
    gen_m.add_argument("--overwrite", action="store_true")

    mdp = sub.add_parser("md", help="molecular dynamics (NVE velocity Verlet, NVT Langevin) on a saved force field",
                         description="Molecular dynamics on a saved force field (a model file or a network run directory). "
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
    mdp.add_argument("--max-temperature-k", type=float, default=-1.0,
                     help="guard: stop above this temperature (default max(5000 K, 10 x --temperature-k))")
    mdp.add_argument("--max-drift-kcal-mol-atom", type=float, default=1.0,
                     help="guard (NVE): stop when the total energy drifts by more than this per atom (default 1)")
    mdp.add_argument("--bond-range-ang", type=float, nargs=2, default=(0.5, 3.0), metavar=("MIN", "MAX"),
                     help="guard: stop when a bond of the start geometry leaves [MIN, MAX] Å (default 0.5 3.0)")
    mdp.add_argument("--no-guards", action="store_true", help="turn the three guards off (non-finite still stops)")
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
                     help="subset of krr-cm, krr-bob, gdml, sgdml, schnet, dtnn, cormorant, mace and the methods that plugins "
                          "register (comma or space separated)")
    cmp.add_argument("--plan", action="store_true", help="print the plan (protocol, N, settings) without training")
    cmp.add_argument("--json", action="store_true", help="print the JSON result to stdout instead of the table")
    cmp.add_argument("--out", default=None, metavar="DIR",
                     help="folder for compare.json, plots, predictions and network runs (default ./compare_<data>/)")
    cmp.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
    cmp.add_argument("--in-process", action="store_true",
                     help="run every method in this process instead of one worker process each (quicker start; "
                          "peak memory then includes what earlier methods left)")
    cmp.add_argument("--jobs", default="auto", metavar="N|auto",
                     help="worker processes at once, each on its own share of the CPUs (default auto: 2 on a "
                          "CPU-only machine with 2 or more cores, else 1); the errors do not depend on it")
    cmp.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    _add_units(cmp, unit_check=False)
    return parser


COMMANDS = {  # (command, subcommand) -> function name in jaxqc.commands
    ("data", "info"): "cmd_data_info",
    ("data", "convert"): "cmd_data_convert",
    ("data", "generate"): "cmd_data_generate",
    ("data", "download"): "cmd_data_download",
    ("data", "label"): "cmd_data_label",
    ("train", None): "cmd_train",
    ("evaluate", None): "cmd_evaluate",
    ("md", None): "cmd_md",
    ("generate", None): "cmd_generate",
    ("compare", None): "cmd_compare",
}


def load_plugins(argv: list) -> None:
    """Import the --plugin FILE.py / module arguments first, so that their models are choices of `train`."""
    from .models.registry import load_plugin

    for k, a in enumerate(argv):
        if a == "--plugin" and k + 1 < len(argv):
            load_plugin(argv[k + 1])
        elif a.startswith("--plugin="):
            load_plugin(a.split("=", 1)[1])


def main(argv=None) -> int:
    from . import runtime
    from .errors import JaxqcError

    if argv is None:  # the `jaxqc` command itself (not a call from Python)
        rerun = runtime.huge_page_command(sys.argv[1:], dict(os.environ))
        if rerun is not None:
            os.execve(rerun[0][0], rerun[0], rerun[1])
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        load_plugins(argv)
        args = build_parser().parse_args(argv)
        key = (args.command, getattr(args, f"{args.command}_command", None))
        from . import commands

        return getattr(commands, COMMANDS[key])(args)
    except JaxqcError as err:
        print(f"jaxqc: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxqc: interrupted (a network run keeps its last checkpoint: add --resume)", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the safety net: a bug, not a bad input; the checks come first
        if "--debug" in argv:
            raise
        return runtime.internal_error(err)


if __name__ == "__main__":
    sys.exit(main())
