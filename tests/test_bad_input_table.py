"""The bad-input table (issue 20): every `jaxqc` command with the bad inputs a hostile but realistic user
gives it. Each row runs the CLI in-process and asserts the exit code, exactly one line on stderr (no
traceback) matching the row's pattern, and that no earlier result or output was lost or overwritten
(the `keep` paths are byte- and mtime-identical afterwards, the `absent` paths were not created).

A new command extends TABLE; test_every_command_has_rows fails until it does.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io as pyio
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from helpers import ETHANOL_R, ETHANOL_Z, ethanol_frames, mixed_molecules, write_xyz

from jaxqc.cli import build_parser, main
from jaxqc.data import io
from jaxqc.data import registry as data_registry
from jaxqc.data.molecules import Dataset

ORDER = np.array([2, 7, 0, 4, 1, 8, 3, 6, 5])  # ethanol: C C O H H H H H H -> O H C H C H H H H


@dataclasses.dataclass
class Row:
    id: str
    argv: list  # "{tmp}" is the test's tmp_path; "{gdml}", "{krr}", "{eth}", "{mixed}" the shared files
    setup: Callable | None = None  # setup(tmp: Path, monkeypatch) makes the bad input
    code: int = 2
    match: str = ""  # regex the one stderr line must match (re.search)
    keep: tuple = ()  # paths under tmp made by setup that must be unchanged afterwards
    absent: tuple = ()  # paths under tmp that must not exist afterwards
    exists: tuple = ()  # paths under tmp that must exist afterwards (e.g. the good MD frames)
    progress: bool = False  # progress lines (no error) may come before the one error line
    xfail: str | None = None

    @property
    def command(self) -> str:
        return " ".join(self.argv[:2]) if self.argv[0] == "data" else self.argv[0]


# ---- setups: each writes one bad input under tmp ------------------------------------------------------
def sgdml_npz(name, **override):
    """setup writing an sGDML-style npz of 4 ethanol frames with some arrays replaced."""
    def setup(tmp, mp):
        d = ethanol_frames(4)
        np.savez(tmp / name, **{"R": d.R, "z": d.Z[0], "E": d.E[:, None], "F": d.F, **override})
    return setup


def text(name, content):
    def setup(tmp, mp):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            (tmp / name).write_bytes(content)
        else:
            (tmp / name).write_text(content)
    return setup


def truncated(name):
    def setup(tmp, mp):
        io.write_npz(ethanol_frames(4), tmp / "full.npz")
        raw = (tmp / "full.npz").read_bytes()
        (tmp / name).write_bytes(raw[: len(raw) // 2])
    return setup


def xyz(name, symbols, R):
    def setup(tmp, mp):
        write_xyz(tmp / name, symbols, R)
    return setup


def nan_coordinates(tmp, mp):
    R = ETHANOL_R.copy()
    R[3, 1] = np.nan
    write_xyz(tmp / "nan.xyz", ["C", "C", "O"] + ["H"] * 6, R)


def overlapping(tmp, mp):
    R = ETHANOL_R.copy()
    R[4] = R[3] + 0.01
    write_xyz(tmp / "overlap.xyz", ["C", "C", "O"] + ["H"] * 6, R)


def mev_extxyz(tmp, mp):
    d = ethanol_frames(6)
    io.write_extxyz(Dataset(Z=d.Z, R=d.R, E=d.E * 1e3, F=d.F * 20e3), tmp / "mev.extxyz")


def big_z(tmp, mp):
    d = ethanol_frames(16)
    Z = np.tile(ETHANOL_Z, (16, 1))
    Z[:, 0] = 105
    np.savez(tmp / "db.npz", R=d.R, z=Z, E=d.E, F=d.F)


def both(*setups):
    def setup(tmp, mp):
        for s in setups:
            s(tmp, mp)
    return setup


def finished_run(tmp, mp):
    """A run directory as a finished `train schnet` leaves it."""
    run = tmp / "run"
    run.mkdir()
    for f in ("model.npz", "checkpoint.npz", "metrics.jsonl", "config.json"):
        (run / f).write_bytes(f"earlier result {f}".encode())


def corrupt_checkpoint(tmp, mp):
    run = tmp / "run"
    run.mkdir()
    (run / "checkpoint.npz").write_bytes(b"PK\x03\x04 not a checkpoint")


def a_dir(name):
    def setup(tmp, mp):
        (tmp / name).mkdir()
        (tmp / name / "keep.txt").write_text("earlier")
    return setup


def reordered_other_molecule(name):
    """Ethanol's formula with the elements moved to other positions (dimethyl-ether-like): no mapping exists."""
    def setup(tmp, mp):
        d = data_registry.load("ethanol-xtb").subset(np.arange(4))
        if name.endswith(".npz"):
            io.write_npz(Dataset(Z=d.Z[:, ORDER], R=d.R, E=d.E, F=d.F), tmp / name)
        else:
            io.write_extxyz(Dataset(Z=d.Z[:1, ORDER], R=d.R[:1]), tmp / name)
    return setup


SHARED: dict = {}  # the module's shared files (shared_files), for setups that copy them
HELD_FDS: list = []  # locks a setup holds for the duration of its row


def copy_of_run(tmp, mp):
    shutil.copytree(SHARED["run"], tmp / "run")


def locked_run(tmp, mp):
    """A run directory whose lock another writer holds (flock, as files.run_lock takes it)."""
    import fcntl

    from jaxqc.files import LOCK_NAME

    copy_of_run(tmp, mp)
    fd = os.open(tmp / "run" / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, b"424242\n", 0)
    HELD_FDS.append(fd)


def disk_full(also_existing=None):
    """Every npz write under tmp fails with ENOSPC (writes elsewhere, e.g. a rescue folder, work)."""
    def setup(tmp, mp):
        import errno
        import tempfile

        rescue = tmp.parent / f"{tmp.name}-rescue"  # the rescued model goes here, not into /tmp
        rescue.mkdir()
        mp.setattr(tempfile, "tempdir", str(rescue))
        if also_existing:
            (tmp / also_existing).write_bytes(b"earlier result")
        for name in ("savez", "savez_compressed"):
            real = getattr(np, name)

            def full(fh, *args, _real=real, **kwargs):
                if str(getattr(fh, "name", fh)).startswith(f"{tmp}/"):
                    raise OSError(errno.ENOSPC, "No space left on device")
                return _real(fh, *args, **kwargs)

            mp.setattr(np, name, full)
    return setup


def larger_molecule(tmp, mp):
    """A molecule of 14 atoms with a mu, larger than any of mixed.npz (at most 12)."""
    grid = np.stack(np.meshgrid(*[np.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)[:14] * 1.5
    Z = np.array([[6, 1, 1, 8, 1, 7, 1, 6, 1, 1, 6, 1, 1, 1]])
    io.write_npz(Dataset(Z=Z, R=grid[None], props={"mu": np.ones(1)}, units={"mu": "D"}), tmp / "big.npz")


def http_source(tmp, mp):
    from jaxqc.data import download

    def never(*args, **kwargs):
        raise AssertionError("an http URL was fetched")

    mp.setattr(download.urllib.request, "urlopen", never)
    mp.setitem(download.SOURCES, "plain", {"url": "http://example.org/x.npz", "filename": "x.npz",
                                           "sha256": None, "description": "x"})


def no_network(tmp, mp):
    from jaxqc.data import download

    def fail(*args, **kwargs):
        raise download.urllib.error.URLError("no route to host")

    mp.setattr(download.urllib.request, "urlopen", fail)


def water(tmp, mp):
    write_xyz(tmp / "water.xyz", ["O", "H", "H"], [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])


# ---- the table --------------------------------------------------------------------------------------
E2 = r"^jaxqc: error: .*"
TRAIN_NET = ["train", "schnet", "--data", "{eth}", "--n-train", "8", "--n-valid", "4", "--epochs", "1",
             "--features", "8", "--interactions", "1", "--batch-size", "8"]
TRAIN_GDML = ["train", "gdml", "--data", "{eth}", "--n-train", "8", "--n-valid", "4", "--sigma-grid", "20"]
MD = ["md", "{gdml}", "--start", "{eth}", "--steps", "20", "--quiet"]
EVAL = ["evaluate", "{gdml}", "--split", "all"]

ITEM = {("--epochs", "0"): "-item10", ("--batch-size", "0"): "-item10", ("--cutoff", "0"): "-item10",
        ("--features", "0"): "-item10", ("--lr", "-1"): "-item19", ("--time-budget", "-1"): "-item19"}

TABLE = [
    # -- top level
    Row("no-command", [], match=r"^jaxqc: error: .*required"),
    Row("unknown-command", ["fit"], match=r"invalid choice: 'fit'"),
    Row("missing-plugin", ["--plugin", "{tmp}/nope.py", "data", "info", "{eth}"], match=r"nope\.py"),
    # -- data info
    Row("info-missing-file", ["data", "info", "{tmp}/none.xyz"], match=E2 + r".*none\.xyz.*no such file"),
    Row("info-unknown-name", ["data", "info", "qm10"], match=E2 + r".*qm10"),
    Row("info-unsupported-format", ["data", "info", "{tmp}/x.cif"], text("x.cif", "data_x\n"),
        match=E2 + r".*unsupported format"),
    Row("info-garbage-npz", ["data", "info", "{tmp}/g.npz"], text("g.npz", bytes(range(256)) * 4),
        match=E2 + r".*g\.npz: not a readable npz file \(neither a zip archive nor a \.npy array\)$"),
    Row("info-truncated-npz", ["data", "info", "{tmp}/t.npz"], truncated("t.npz"),
        match=E2 + r".*t\.npz: not a readable npz file"),
    Row("info-binary-as-xyz", ["data", "info", "{tmp}/b.xyz"], text("b.xyz", b"\x89PNG\r\n\x1a\n\x00\x00garbage"),
        match=E2 + r".*b\.xyz"),
    Row("info-xyz-wrong-count", ["data", "info", "{tmp}/w.xyz"], text("w.xyz", "5\n\nC 0 0 0\nH 1 0 0\n"),
        match=E2 + r".*w\.xyz"),
    Row("info-xyz-not-numbers", ["data", "info", "{tmp}/w.xyz"], text("w.xyz", "2\n\nC 0 zero 0\nH 1 0 0\n"),
        match=E2 + r".*w\.xyz"),
    Row("info-unknown-element", ["data", "info", "{tmp}/e.xyz"], xyz("e.xyz", ["C", "Zz"], [[0, 0, 0], [1.5, 0, 0]]),
        match=E2 + r"unknown element 'Zz'"),
    Row("info-nan-coordinates", ["data", "info", "{tmp}/nan.xyz"], nan_coordinates, match=E2 + r".*nan\.xyz"),
    Row("info-overlapping-atoms", ["data", "info", "{tmp}/overlap.xyz"], overlapping, match=E2 + r".*closer than"),
    Row("info-z0-item1", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", z=np.r_[6, 6, 0, [1] * 6]),
        match=E2 + r".*atom 2 .*atomic number 0"),
    Row("info-z-beyond-table", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", z=np.r_[6, 6, 200, [1] * 6]),
        match=E2 + r".*200"),
    Row("info-0-frames-item13", ["data", "info", "{tmp}/z.npz"],
        sgdml_npz("z.npz", R=np.zeros((0, 9, 3)), E=np.zeros((0, 1)), F=np.zeros((0, 9, 3))), match=E2 + r"no frames"),
    Row("info-0-atoms-item13", ["data", "info", "{tmp}/z.npz"],
        sgdml_npz("z.npz", R=np.zeros((4, 0, 3)), z=np.zeros(0, int), F=np.zeros((4, 0, 3))), match=E2 + r"no atoms"),
    Row("info-string-R-item13", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", R=ethanol_frames(4).R.astype(str)),
        match=E2 + r"'R' holds text"),
    Row("info-wrong-shape-R", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", R=np.zeros((4, 9, 2))),
        match=E2 + r".*z\.npz"),
    Row("info-wrong-shape-F", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", F=np.zeros((4, 8, 3))),
        match=E2 + r".*z\.npz"),
    Row("info-wrong-count-E", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", E=np.zeros((3, 1))),
        match=E2 + r".*z\.npz"),
    Row("info-nan-energy", ["data", "info", "{tmp}/z.npz"], sgdml_npz("z.npz", E=np.full((4, 1), np.nan)),
        match=E2 + r".*z\.npz"),
    Row("info-mev-as-ev-item5", ["data", "info", "{tmp}/mev.extxyz"], mev_extxyz, match=E2 + r".*--energy-unit meV"),
    Row("info-unknown-unit", ["data", "info", "{eth}", "--energy-unit", "bananas"], match=E2 + r"unknown energy unit"),
    # -- data convert
    Row("convert-missing-source", ["data", "convert", "{tmp}/none.npz", "{tmp}/out.extxyz"],
        match=E2 + r".*none\.npz", absent=("out.extxyz",)),
    Row("convert-z0-item1", ["data", "convert", "{tmp}/z.npz", "{tmp}/out.extxyz"],
        sgdml_npz("z.npz", z=np.r_[6, 6, 0, [1] * 6]), match=E2 + r"atom 2 ", absent=("out.extxyz",)),
    Row("convert-mev-item5", ["data", "convert", "{tmp}/mev.extxyz", "{tmp}/out.npz"], mev_extxyz,
        match=E2 + r".*--energy-unit meV", absent=("out.npz",)),
    Row("convert-unsupported-out", ["data", "convert", "{eth}", "{tmp}/out.cif"], match=E2 + r".*out\.cif",
        absent=("out.cif",)),
    Row("convert-out-is-dir", ["data", "convert", "{eth}", "{tmp}/out.npz"], a_dir("out.npz"),
        match=E2 + r".*out\.npz", keep=("out.npz",)),
    Row("convert-disk-full-item15", ["data", "convert", "{eth}", "{tmp}/out.npz"], disk_full("out.npz"),
        match=E2 + r"out\.npz: disk full.*earlier file.*unchanged", keep=("out.npz",)),
    Row("convert-out-under-a-file", ["data", "convert", "{eth}", "{tmp}/notes.txt/out.npz"], text("notes.txt", "mine"),
        match=E2 + r".*out\.npz", keep=("notes.txt",)),
    # -- data generate (fails before tblite is needed)
    Row("generate-missing-start", ["data", "generate", "--start", "{tmp}/none.xyz", "--out", "{tmp}/g.npz"],
        match=E2 + r".*none\.xyz", absent=("g.npz",)),
    Row("generate-n-frames-0", ["data", "generate", "--start", "{tmp}/water.xyz", "--out", "{tmp}/g.npz",
                                "--n-frames", "0"], water, match=E2 + r"n_frames must be >= 1", absent=("g.npz",)),
    Row("generate-dt-nan", ["data", "generate", "--start", "{tmp}/water.xyz", "--out", "{tmp}/g.npz",
                            "--dt-fs", "nan"], water, match=E2 + r"dt_fs must be in", absent=("g.npz",)),
    Row("generate-temperature-negative", ["data", "generate", "--start", "{tmp}/water.xyz", "--out", "{tmp}/g.npz",
                                          "--temperature-k", "-5"], water, match=E2 + r"temperature_k must be > 0",
        absent=("g.npz",)),
    # -- data label (fails before PySCF computes anything)
    Row("label-missing-source", ["data", "label", "{tmp}/none.npz", "--dft", "PBE/def2-SVP", "--hamiltonian",
                                 "--out", "{tmp}/h.npz"], match=E2 + r".*none\.npz", absent=("h.npz",)),
    Row("label-bad-spec", ["data", "label", "{eth}", "--dft", "PBE", "--hamiltonian", "--out", "{tmp}/h.npz"],
        match=E2 + r"expected 'XC/BASIS'", absent=("h.npz",)),
    Row("label-existing-out", ["data", "label", "{eth}", "--dft", "PBE/def2-SVP", "--out", "{tmp}/h.npz"],
        text("h.npz", "mine"), match=E2 + r"h\.npz exists: pass --overwrite", keep=("h.npz",)),
    # -- data download
    Row("download-unknown-name", ["data", "download", "md18", "--dest", "{tmp}/dl"], match=E2 + r".*md18"),
    Row("download-no-network", ["data", "download", "qm9-xyz", "--dest", "{tmp}/dl"], no_network,
        match=E2 + r"cannot download qm9-xyz.*fetch https://", progress=True, absent=("dl/dsgdb9nsd.xyz.tar.bz2",)),
    Row("download-bad-sha256", ["data", "download", "qm9-xyz", "--dest", "{tmp}/dl", "--sha256", "xyz"], no_network,
        match=E2 + r".*--sha256"),
    Row("download-http-item22", ["data", "download", "plain", "--dest", "{tmp}/dl"], http_source,
        match=E2 + r"http://example\.org.*https", absent=("dl/x.npz",)),
    # -- train: flags (item 10, 19, 4)
    *[Row(f"train-{flag[2:]}-{value}" + ITEM.get((flag, value), ""), [*TRAIN_NET, flag, value, "--out", "{tmp}/run"],
          match=E2 + re.escape(flag), absent=("run",))
      for flag, value in [("--epochs", "0"), ("--epochs", "-3"), ("--batch-size", "0"), ("--features", "0"),
                          ("--cutoff", "0"), ("--cutoff", "nan"), ("--cutoff", "-1"), ("--lr", "-1"),
                          ("--lr", "nan"), ("--lr", "0"), ("--time-budget", "-1"), ("--time-budget", "nan"),
                          ("--n-train", "0"), ("--n-valid", "0"), ("--interactions", "0")]],
    Row("train-epochs-nan", [*TRAIN_NET, "--epochs", "nan", "--out", "{tmp}/run"], match=r"--epochs.*'nan'",
        absent=("run",)),
    *[Row(f"train-sigma-grid-{value}-item4", [*TRAIN_GDML[:-1], value, "--out", "{tmp}/m.npz"],
          match=E2 + r"--sigma-grid", absent=("m.npz",)) for value in ("0", "-1", "nan")],
    Row("train-lambda-grid-negative", [*TRAIN_GDML, "--lambda-grid", "-1", "--out", "{tmp}/m.npz"],
        match=E2 + r"--lambda-grid", absent=("m.npz",)),
    # -- train: data and model
    Row("train-unknown-model", ["train", "transformer", "--data", "{eth}", "--n-train", "8", "--out", "{tmp}/m.npz"],
        match=E2 + r"unknown model 'transformer'; registered: krr", absent=("m.npz",)),
    Row("train-missing-data", [*TRAIN_GDML, "--data", "{tmp}/none.npz", "--out", "{tmp}/m.npz"],
        match=E2 + r".*none\.npz", absent=("m.npz",)),
    Row("train-garbage-data", [*TRAIN_GDML, "--data", "{tmp}/g.npz", "--out", "{tmp}/m.npz"],
        text("g.npz", b"\x00" * 100), match=E2 + r".*g\.npz", absent=("m.npz",)),
    Row("train-0-frames-item13", [*TRAIN_GDML, "--data", "{tmp}/z.npz", "--out", "{tmp}/m.npz"],
        sgdml_npz("z.npz", R=np.zeros((0, 9, 3)), E=np.zeros((0, 1)), F=np.zeros((0, 9, 3))),
        match=E2 + r"no frames", absent=("m.npz",)),
    Row("train-z-above-100-item14", [*TRAIN_NET, "--data", "{tmp}/db.npz", "--out", "{tmp}/run"], big_z,
        match=E2 + r"Db \(Z=105\).*embedding", absent=("run/model.npz", "run/checkpoint.npz")),
    Row("train-mev-as-ev-item5", ["train", "krr", "--data", "{tmp}/mev.extxyz", "--n-train", "4", "--n-valid", "1",
                                  "--out", "{tmp}/m.npz"], mev_extxyz, match=E2 + r".*--energy-unit meV",
        absent=("m.npz",)),
    Row("train-krr-unknown-target-item21", ["train", "krr", "--data", "{mixed}", "--target", "U7", "--n-train", "8",
                                            "--out", "{tmp}/m.npz"],
        match=E2 + r"target 'U7' not in the data set \(available: .*mu", absent=("m.npz",)),
    Row("train-krr-unknown-target-frames-item21", ["train", "krr", "--data", "{eth}", "--target", "homo", "--n-train",
                                                   "8", "--out", "{tmp}/m.npz"],
        match=E2 + r"target 'homo' not in the data set \(available: energy\)$", absent=("m.npz",)),
    Row("train-krr-target-case-slip-item21", ["train", "krr", "--data", "{mixed}", "--target", "MU", "--n-train", "8",
                                              "--out", "{tmp}/m.npz"],
        match=E2 + r"target 'MU' not in the data set \(available: mu; did you mean 'mu'\?\)$", absent=("m.npz",)),
    Row("train-sgdml-target-item20", [*TRAIN_GDML, "--target", "mu", "--out", "{tmp}/m.npz"],
        match=E2 + r"--target", absent=("m.npz",)),
    Row("train-gdml-on-property-data", [*TRAIN_GDML, "--data", "{mixed}", "--out", "{tmp}/m.npz"],
        match=E2 + r"needs forces", absent=("m.npz",)),
    Row("train-n-train-too-large", [*TRAIN_GDML, "--n-train", "100000", "--out", "{tmp}/m.npz"],
        match=E2 + r"100000", absent=("m.npz",)),
    Row("train-missing-config", [*TRAIN_GDML, "--config", "{tmp}/none.py", "--out", "{tmp}/m.npz"],
        match=E2 + r".*none\.py", absent=("m.npz",)),
    Row("train-bad-set", [*TRAIN_NET, "--set", "no_such_key=3", "--out", "{tmp}/run"], match=E2 + r"no_such_key",
        absent=("run/model.npz",)),
    # -- train: outputs (items 6, 8, 16)
    Row("train-out-is-dir-item16", [*TRAIN_GDML, "--out", "{tmp}/d.npz"], a_dir("d.npz"),
        match=E2 + r"is a directory", keep=("d.npz",)),
    Row("train-out-is-model", [*TRAIN_GDML, "--out", "{tmp}/m.npz"], text("m.npz", b"earlier model"),
        match=E2 + r"--overwrite", keep=("m.npz",)),
    Row("train-out-is-file-for-run", [*TRAIN_NET, "--out", "{tmp}/notes.txt"], text("notes.txt", "mine"),
        match=E2 + r"a file is already there", keep=("notes.txt",)),
    Row("train-finished-run-item6", [*TRAIN_NET, "--out", "{tmp}/run"], finished_run,
        match=E2 + r"holds a run already.*--overwrite", keep=("run",)),
    Row("train-resume-no-checkpoint-item8", [*TRAIN_NET, "--resume", "--out", "{tmp}/run"], a_dir("run"),
        match=E2 + r"no checkpoint", keep=("run",), absent=("run/model.npz",)),
    Row("train-resume-corrupt-checkpoint", [*TRAIN_NET, "--resume", "--out", "{tmp}/run"], corrupt_checkpoint,
        match=E2 + r".*checkpoint", keep=("run",), absent=("run/model.npz",)),
    Row("train-finished-real-run-item6", [*TRAIN_NET, "--out", "{tmp}/run"], copy_of_run,
        match=E2 + r"holds a run already", keep=("run",)),
    Row("train-resume-other-split-item8", [*TRAIN_NET, "--n-train", "12", "--resume", "--out", "{tmp}/run"],
        copy_of_run, match=E2 + r"another train split", keep=("run",)),
    Row("train-run-locked-item7", [*TRAIN_NET, "--resume", "--out", "{tmp}/run"], locked_run,
        match=E2 + r"another jaxqc process \(pid 424242\)", keep=("run",)),
    Row("train-disk-full-rescued-item15", [*TRAIN_GDML, "--out", "{tmp}/m.npz"], disk_full(),
        match=E2 + r"m\.npz: disk full.*the trained model is saved in .*m\.npz instead", absent=("m.npz",),
        progress=True),
    Row("train-resume-model-file", [*TRAIN_GDML, "--resume", "--out", "{tmp}/m.npz"], match=E2 + r"--resume",
        absent=("m.npz",)),
    # -- evaluate
    Row("evaluate-missing-model", ["evaluate", "{tmp}/none.npz", "--data", "{eth}"], match=E2 + r".*none\.npz"),
    Row("evaluate-garbage-model", ["evaluate", "{tmp}/m.npz", "--data", "{eth}"], text("m.npz", b"\x00garbage" * 50),
        match=E2 + r".*m\.npz: corrupt or truncated model file .*neither a zip archive", keep=("m.npz",)),
    Row("evaluate-truncated-model", ["evaluate", "{tmp}/t.npz", "--data", "{eth}"], truncated("t.npz"),
        match=E2 + r".*t\.npz: corrupt or truncated model file"),
    Row("evaluate-data-file-as-model", ["evaluate", "{eth}", "--data", "{eth}"],
        match=E2 + r".*eth\.npz: not a jaxqc model file \(no header\)$"),
    Row("evaluate-empty-run-dir", ["evaluate", "{tmp}/run", "--data", "{eth}"], a_dir("run"), match=E2 + r".*run"),
    Row("evaluate-missing-data", [*EVAL, "--data", "{tmp}/none.npz"], match=E2 + r".*none\.npz"),
    Row("evaluate-nan-coordinates", [*EVAL, "--data", "{tmp}/nan.xyz"], nan_coordinates, match=E2 + r".*nan\.xyz"),
    Row("evaluate-0-atoms-item13", [*EVAL, "--data", "{tmp}/z.npz"],
        sgdml_npz("z.npz", R=np.zeros((4, 0, 3)), z=np.zeros(0, int), F=np.zeros((4, 0, 3))), match=E2 + r"no atoms"),
    Row("evaluate-force-field-on-property-data-item11", [*EVAL, "--data", "{mixed}"], match=E2 + r".*mixed\.npz"),
    Row("evaluate-network-on-property-data-item11", ["evaluate", "{run}", "--split", "all", "--data", "{mixed}"],
        match=E2 + r".*mixed\.npz: no energies or forces"),
    Row("evaluate-krr-larger-molecule-item12", ["evaluate", "{krr}", "--split", "all", "--data", "{tmp}/big.npz"],
        larger_molecule, match=E2 + r"14 atoms"),
    Row("evaluate-property-model-on-force-data", ["evaluate", "{krr}", "--split", "all", "--data", "{eth}"],
        match=E2 + r"no 'mu' values"),
    Row("evaluate-no-atom-mapping-item2", [*EVAL, "--data", "{tmp}/ether.npz"], reordered_other_molecule("ether.npz"),
        match=E2 + r"no consistent mapping"),
    Row("evaluate-other-molecule", [*EVAL, "--data", "{tmp}/water.xyz"], water, match=E2 + r".*water\.xyz"),
    Row("evaluate-valid-split-other-data", ["evaluate", "{gdml}", "--split", "valid", "--data", "{tmp}/mev.extxyz",
                                            "--energy-unit", "meV"], mev_extxyz,
        match=E2 + r"not the data set the model was trained on"),
    Row("evaluate-mev-as-ev-item5", [*EVAL, "--data", "{tmp}/mev.extxyz"], mev_extxyz, match=E2 + r"--energy-unit meV"),
    Row("evaluate-generated-not-generative", ["evaluate", "{gdml}", "--generated", "{tmp}/m.extxyz"],
        text("m.extxyz", "1\nx\nC 0 0 0\n"), match=E2 + r"not a generative model"),
    Row("evaluate-without-data", ["evaluate", "{gdml}"], match=E2 + r"evaluate needs --data"),
    # -- generate (generative models: gschnet)
    Row("generate-missing-model", ["generate", "{tmp}/none", "--out", "{tmp}/g.extxyz"], match=E2 + r".*none",
        absent=("g.extxyz",)),
    Row("generate-garbage-model", ["generate", "{tmp}/m.npz", "--out", "{tmp}/g.extxyz"],
        text("m.npz", b"PK\x03\x04garbage"), match=E2 + r".*m\.npz", absent=("g.extxyz",)),
    Row("generate-not-generative", ["generate", "{gdml}", "--n", "2", "--out", "{tmp}/g.extxyz"],
        match=E2 + r"does not generate molecules", absent=("g.extxyz",)),
    Row("generate-n-zero", ["generate", "{gdml}", "--n", "0", "--out", "{tmp}/g.extxyz"],
        match=E2 + r"--n must be positive", absent=("g.extxyz",)),
    Row("generate-temperature-zero", ["generate", "{gdml}", "--temperature", "0", "--out", "{tmp}/g.extxyz"],
        match=E2 + r"--temperature must be positive", absent=("g.extxyz",)),
    Row("generate-existing-out", ["generate", "{gdml}", "--out", "{tmp}/g.extxyz"], text("g.extxyz", "keep me"),
        match=E2 + r"exists", keep=("g.extxyz",)),
    # -- md (item 3 and the flags)
    Row("md-missing-model", ["md", "{tmp}/none.npz", "--start", "{eth}", "--steps", "5", "--out", "{tmp}/t.extxyz"],
        match=E2 + r".*none\.npz", absent=("t.extxyz",)),
    Row("md-garbage-model", ["md", "{tmp}/m.npz", "--start", "{eth}", "--steps", "5", "--out", "{tmp}/t.extxyz"],
        text("m.npz", b"PK\x03\x04garbage"), match=E2 + r".*m\.npz", absent=("t.extxyz",)),
    Row("md-corrupt-run-dir", ["md", "{tmp}/run", "--start", "{eth}", "--steps", "5", "--out", "{tmp}/t.extxyz"],
        text("run/model.npz", b"PK\x03\x04 cut off"), match=E2 + r"run/model\.npz: corrupt or truncated model file",
        absent=("t.extxyz",), keep=("run",)),
    Row("md-run-dir-without-model", ["md", "{tmp}/run", "--start", "{eth}", "--steps", "5",
                                     "--out", "{tmp}/t.extxyz"], corrupt_checkpoint,
        match=E2 + r"run/model\.npz: no such model file", absent=("t.extxyz",)),
    Row("md-property-model", ["md", "{krr}", "--start", "{eth}", "--steps", "5", "--out", "{tmp}/t.extxyz"],
        match=E2 + r"not a potential energy", absent=("t.extxyz",)),
    Row("md-missing-start", [*MD, "--start", "{tmp}/none.xyz", "--out", "{tmp}/t.extxyz"],
        match=E2 + r".*none\.xyz", absent=("t.extxyz",)),
    Row("md-other-molecule", [*MD, "--start", "{tmp}/water.xyz", "--out", "{tmp}/t.extxyz"], water,
        match=E2 + r".*water\.xyz", absent=("t.extxyz",)),
    Row("md-no-atom-mapping-item2", [*MD, "--start", "{tmp}/ether.extxyz", "--out", "{tmp}/t.extxyz"],
        reordered_other_molecule("ether.extxyz"), match=E2 + r"no consistent mapping", absent=("t.extxyz",)),
    Row("md-overlapping-start", [*MD, "--start", "{tmp}/overlap.xyz", "--out", "{tmp}/t.extxyz"], overlapping,
        match=E2 + r"closer than", absent=("t.extxyz",)),
    Row("md-frame-out-of-range", [*MD, "--frame", "5000", "--out", "{tmp}/t.extxyz"], match=E2 + r"--frame 5000",
        absent=("t.extxyz",)),
    *[Row(f"md-{flag[2:]}-{value}", [*MD, flag, value, "--out", "{tmp}/t.extxyz"], match=E2 + re.escape(flag),
          absent=("t.extxyz",))
      for flag, value in [("--steps", "0"), ("--steps", "-5"), ("--dt-fs", "0"), ("--dt-fs", "-1"), ("--dt-fs", "nan"),
                          ("--temperature-k", "-1"), ("--temperature-k", "nan"), ("--write-every", "0"),
                          ("--max-drift-kcal-mol-atom", "0")]],
    Row("md-out-not-extxyz", [*MD, "--out", "{tmp}/t.npz"], match=E2 + r"--out", absent=("t.npz",)),
    Row("md-out-is-dir", [*MD, "--out", "{tmp}/t.extxyz"], a_dir("t.extxyz"), match=E2 + r".*t\.extxyz",
        keep=("t.extxyz",)),
    Row("md-diverging-item3", [*MD, "--steps", "50", "--dt-fs", "1e6", "--out", "{tmp}/t.extxyz"],
        match=E2 + r"left the sane range.*keeping the frames", exists=("t.extxyz", "t.json")),
    # -- compare (fails before training anything)
    Row("compare-unknown-method", ["compare", "--data", "{eth}", "--methods", "gpt", "--quiet", "--out", "{tmp}/c"],
        match=E2 + r"gpt", absent=("c/compare.json",)),
    Row("compare-missing-data", ["compare", "--data", "{tmp}/none.npz", "--quiet", "--out", "{tmp}/c"],
        match=E2 + r".*none\.npz", absent=("c",)),
    Row("compare-bad-budget", ["compare", "--data", "{eth}", "--budget", "huge", "--quiet", "--out", "{tmp}/c"],
        match=E2 + r"huge", absent=("c",)),
    Row("compare-test-other-molecule", ["compare", "--data", "{eth}", "--test", "{tmp}/water.xyz", "--quiet",
                                        "--out", "{tmp}/c"], water, match=E2 + r".*water\.xyz",
        absent=("c/compare.json",)),
    Row("compare-unknown-target", ["compare", "--data", "{mixed}", "--target", "U7", "--quiet", "--out", "{tmp}/c"],
        match=E2 + r"U7.*available", absent=("c/compare.json",)),
    Row("compare-out-is-file", ["compare", "--data", "{eth}", "--quiet", "--out", "{tmp}/c"], text("c", "mine"),
        match=E2 + r"--out .*/c: a file is already there", keep=("c",)),
    Row("compare-mev-as-ev-item5", ["compare", "--data", "{tmp}/mev.extxyz", "--quiet", "--out", "{tmp}/c"], mev_extxyz,
        match=E2 + r"--energy-unit meV", absent=("c/compare.json",)),
]


# ---- shared inputs ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shared_files(tmp_path_factory):
    """Small data sets and models every row may name: {eth} ethanol-xtb frames, {mixed} molecules with a
    property mu and no energies, {gdml} a gdml force field of ethanol-xtb, {krr} a KRR model of mu (sorted Coulomb
    matrices), {run} a finished schnet run directory."""
    tmp = tmp_path_factory.mktemp("shared")
    io.write_npz(data_registry.load("ethanol-xtb").subset(np.arange(60)), tmp / "eth.npz")
    m = mixed_molecules(20)  # molecules with a property mu and no energies
    io.write_npz(Dataset(Z=m.Z, R=m.R, props=m.props, units=m.units), tmp / "mixed.npz")
    assert main(["train", "gdml", "--data", str(tmp / "eth.npz"), "--n-train", "10", "--n-valid", "5",
                 "--sigma-grid", "20", "--out", str(tmp / "gdml.npz")]) == 0
    assert main(["train", "krr", "--data", str(tmp / "mixed.npz"), "--target", "mu", "--n-train", "10",
                 "--n-valid", "5", "--out", str(tmp / "krr.npz")]) == 0
    with contextlib.redirect_stderr(pyio.StringIO()) as progress:  # (kept for test_item18_...)
        assert main([a.format(eth=tmp / "eth.npz") for a in TRAIN_NET] + ["--out", str(tmp / "run")]) == 0
    SHARED["run_progress"] = progress.getvalue()
    SHARED.update({k: str(tmp / f"{k}.npz") for k in ("eth", "mixed", "gdml", "krr")}, run=str(tmp / "run"))
    return SHARED


def snapshot(path: Path):
    """Bytes and mtime of a file, or of every file under a folder; None when absent."""
    if not path.exists():
        return None
    if path.is_file():
        return {"": (path.read_bytes(), path.stat().st_mtime_ns)}
    return {str(p.relative_to(path)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.mark.parametrize("row", [pytest.param(r, id=r.id, marks=[pytest.mark.xfail(strict=True, reason=r.xfail)]
                                              if r.xfail else []) for r in TABLE])
def test_bad_input(row, shared_files, tmp_path, capsys, monkeypatch):
    if row.setup is not None:
        row.setup(tmp_path, monkeypatch)
    before = {p: snapshot(tmp_path / p) for p in row.keep}
    for p in row.keep:
        assert before[p] is not None, f"setup made no {p}"
    argv = [a.format(tmp=tmp_path, **shared_files) for a in row.argv]
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = exc.code
    finally:
        while HELD_FDS:
            os.close(HELD_FDS.pop())
    out, err = capsys.readouterr()
    assert code == row.code, f"exit {code}; stderr: {err}"
    assert "Traceback" not in err and "Traceback" not in out and "allow_pickle" not in err
    lines = err.strip().splitlines()
    if row.progress:
        assert not any("error" in line for line in lines[:-1]), err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].strip(), f"stderr is not one line: {err!r}"
    assert re.match(r"jaxqc( [a-z]+)*: error: ", lines[0]), lines[0]
    assert re.search(row.match, lines[0]), lines[0]
    for p in row.keep:
        assert snapshot(tmp_path / p) == before[p], f"{p} changed"
    for p in row.absent:
        assert not (tmp_path / p).exists(), f"{p} was written"
    for p in row.exists:
        assert (tmp_path / p).exists(), f"{p} is missing"
    assert not [p for p in tmp_path.rglob(".*.tmp")], "temporary files left behind"


def test_every_command_has_rows():
    """Every (sub)command of `jaxqc --help` has rows in the table: a new command extends it."""
    parser = build_parser()
    commands = set()
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            subs = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            commands |= {f"{name} {s}" for a in subs for s in a.choices} if subs else {name}
    covered = {r.command for r in TABLE if r.argv and not r.argv[0].startswith("-")}
    assert commands <= covered, f"commands without bad-input rows: {sorted(commands - covered)}"


def test_the_jaxqc_command_gives_one_line_too(tmp_path):
    """The same through `python -m jaxqc.cli` (the console script's path, with its huge-page re-run): a flag
    argparse refuses is one line, exit 2, and nothing is written."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXQC_HUGE_PAGES")}
    r = subprocess.run([sys.executable, "-m", "jaxqc.cli", "md", "m.npz", "--start", "x.xyz", "--steps", "many",
                        "--out", str(tmp_path / "t.extxyz")], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("jaxqc md: error: argument --steps: invalid int value")
    assert list(tmp_path.iterdir()) == []


def test_item18_energy_only_training_shows_the_energy_mae_per_epoch(shared_files):
    """The shared schnet run trains on energies only: its per-epoch "valid MAE" is the validation energy
    MAE of metrics.jsonl, not the force MAE (which it still logs)."""
    row = json.loads((Path(shared_files["run"]) / "metrics.jsonl").read_text().splitlines()[-1])
    shown = float(re.findall(r"valid MAE (\S+)", shared_files["run_progress"])[-1])
    assert shown == pytest.approx(row["valid_energy_mae"], rel=1e-3)
    assert shown != pytest.approx(row["valid_forces_mae"], rel=1e-3)


H_SWAP = np.array([0, 1, 2, 6, 7, 8, 3, 4, 5])  # ethanol-xtb's hydrogens listed in another order (same elements)


def test_item2_hydrogens_in_another_order_are_mapped_not_silently_wrong(shared_files, tmp_path, capsys):
    """The issue's case: the same element sequence with the hydrogens permuted (rMD17's test file against an
    ethanol-xtb model). At 5019556 evaluate exited 0 with a ~10x force MAE and md ran at millions of K; now
    both map the atoms by the bond graph and say so."""
    d = io.read(shared_files["eth"])
    io.write_npz(Dataset(Z=d.Z[:, H_SWAP], R=d.R[:, H_SWAP], E=d.E, F=d.F[:, H_SWAP]), tmp_path / "swapped.npz")
    capsys.readouterr()
    assert main(["evaluate", shared_files["gdml"], "--data", shared_files["eth"], "--split", "all", "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert main(["evaluate", shared_files["gdml"], "--data", str(tmp_path / "swapped.npz"), "--split", "all",
                 "--json"]) == 0
    out, err = capsys.readouterr()
    assert "mapped by the bond graph" in err
    assert json.loads(out)["forces"]["mae"] == pytest.approx(same["forces"]["mae"], rel=1e-6)
    traj = tmp_path / "t.extxyz"
    assert main(["md", shared_files["gdml"], "--start", str(tmp_path / "swapped.npz"), "--steps", "20", "--quiet",
                 "--out", str(traj)]) == 0
    assert "mapped by the bond graph" in capsys.readouterr().err
    assert json.loads(traj.with_suffix(".json").read_text())["stopped"] is None
