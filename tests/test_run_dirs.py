"""Run directories and atomic writes never lose or mix results (issue 20, items 7, 8, 9 and 15): a second
writer is refused while the first holds the run's lock; --resume checks the checkpoint's data set, split
and config and says what differs; killed writers' temporary files are removed; a full disk is a one-line
error that keeps the last checkpoint and saves the trained state elsewhere."""
import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from jaxqc import files
from jaxqc.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--features", "8", "--interactions", "1", "--batch-size", "8", "--forces"]


def _train(out, *extra, n_train="16", data="ethanol-xtb"):
    return main(["train", "schnet", "--data", str(data), "--n-train", n_train, "--n-valid", "8", *TINY, *extra,
                 "--out", str(out)])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("jaxqc:")]
    assert len(lines) == 1 and lines[0].startswith("jaxqc: error:") and "Traceback" not in err, err
    return lines[0]


def _snapshot(run: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def _strays(folder: Path) -> list:
    return sorted(p.name for p in Path(folder).rglob("*") if p.name.endswith(".tmp") or p.name == files.LOCK_NAME)


def _python(code: str, *args) -> subprocess.Popen:
    """A second process running `code`; it prints one line when it is ready."""
    proc = subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


HOLD_LOCK = """import sys
from jaxqc.files import run_lock
with run_lock(sys.argv[1]):
    print("ready", flush=True)
    sys.stdin.read()
"""


# ---- item 7: two writers on one run directory ------------------------------------------------------------
def test_a_second_writer_is_refused_while_the_first_holds_the_run_lock(tmp_path, capsys):
    run = tmp_path / "run"
    assert _train(run, "--epochs", "1") == 0
    assert _strays(run) == []  # the lock file goes with its holder
    before = _snapshot(run)
    holder = _python(HOLD_LOCK, run)  # another process writing the run
    try:
        for extra in (["--resume", "--epochs", "2"], ["--overwrite", "--epochs", "1"]):
            capsys.readouterr()
            assert _train(run, *extra) == 2
            line = _one_line_error(capsys)
            assert f"another jaxqc process (pid {holder.pid}) is writing this run directory" in line
            assert _snapshot(run) == {**before, files.LOCK_NAME: f"{holder.pid}\n".encode()}
    finally:
        _kill9(holder)  # kill -9: the kernel drops the lock, only the file stays
    assert (run / files.LOCK_NAME).exists()
    assert _train(run, "--resume", "--epochs", "2") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]  # one writer: no interleaved rows
    assert _strays(run) == []


def test_the_run_lock_is_reentrant_and_leaves_no_directory_behind(tmp_path):
    with files.run_lock(tmp_path / "a") as d:
        with files.run_lock(d):
            assert (d / files.LOCK_NAME).read_text() == f"{os.getpid()}\n"
        assert (d / files.LOCK_NAME).exists()  # still held by the outer block
    assert not (tmp_path / "a").exists()  # created for nothing: removed again


# ---- item 8: --resume checks what it continues ---------------------------------------------------------------
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("resume") / "run"
    assert _train(run, "--epochs", "1") == 0
    return run


@pytest.mark.parametrize("n_train, extra, expect", [
    ("20", [], "trained on another train split (16 molecules, now 20)"),
    ("16", ["--features", "16"], "--resume: features 16 != 8 in the checkpoint"),
    ("16", ["--lr", "1e-3"], "--resume: lr 0.001 != 0.0005 in the checkpoint"),
    ("16", ["--interactions", "2"], "--resume: interactions 2 != 1 in the checkpoint"),
])
def test_resume_with_other_settings_says_what_differs(finished_run, n_train, extra, expect, capsys):
    before = _snapshot(finished_run)
    capsys.readouterr()
    assert _train(finished_run, "--resume", "--epochs", "2", *extra, n_train=n_train) == 2
    assert expect in _one_line_error(capsys)
    assert _snapshot(finished_run) == before


def test_resume_on_another_data_set_or_without_a_checkpoint(finished_run, tmp_path, capsys):
    from jaxqc.data import io

    data = io.read("ethanol-xtb")
    data.E[:] += 0.25  # same molecule, same number of frames (so the same split indices), other labels
    io.write(data, tmp_path / "other.npz")
    before = _snapshot(finished_run)
    capsys.readouterr()
    assert _train(finished_run, "--resume", "--epochs", "2", data=tmp_path / "other.npz") == 2
    line = _one_line_error(capsys)
    assert f"--resume: data set md5 {io.read(tmp_path / 'other.npz').md5} != {io.read('ethanol-xtb').md5} in the " \
           f"checkpoint" in line
    assert _snapshot(finished_run) == before
    assert _train(tmp_path / "empty", "--resume", "--epochs", "1") == 2
    assert "has no checkpoint.npz to continue" in _one_line_error(capsys)
    assert not (tmp_path / "empty").exists()


def test_resume_mismatch_names_the_first_difference():
    from jaxqc.train.loop import resume_mismatch

    assert resume_mismatch({"features": 128, "lr": 5e-4}, {"features": 64, "lr": 5e-4}) == \
        "features 64 != 128 in the checkpoint"
    assert resume_mismatch({"features": 64}, {"features": 64, "new_setting": 1}) is None  # older checkpoint


# ---- item 9: temporary files of killed writers -----------------------------------------------------------
KILLED_WRITER = """import sys
from jaxqc.files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half a file")
    print("ready", flush=True)
    sys.stdin.read()
"""


def test_temporary_files_of_killed_writers_are_removed_and_a_live_writers_kept(tmp_path, monkeypatch):
    target = tmp_path / "cache" / "qm9_v1.npz"
    writer = _python(KILLED_WRITER, target)
    _kill9(writer)  # kill -9 mid-write: its temporary file stays
    dead = [p.name for p in target.parent.glob(".qm9_v1.npz.*.tmp")]
    assert dead and f".{writer.pid}@" in dead[0]
    live = target.parent / f".qm9_v1.npz.{files.temp_tag()}.abcdefgh.tmp"  # a live concurrent writer's
    live.write_bytes(b"in progress")
    legacy = target.parent / ".qm9_v1.npz.k2j4h5g6.tmp"  # an older jaxqc's (no pid), untouched for 2 h
    legacy.write_bytes(b"old")
    os.utime(legacy, (legacy.stat().st_mtime - 7200,) * 2)
    other = target.parent / ".other.npz.12345678.tmp"  # another name, fresh: not this writer's business
    other.write_bytes(b"x")

    files.atomic_write_text(target, "new")  # the next writer of the name cleans up
    assert target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == sorted([live.name, other.name, target.name])

    # opening the cache folder cleans too (the QM9 cache is read, not written, once it exists)
    (target.parent / dead[0]).write_bytes(b"63 MB")
    monkeypatch.setenv("JAXQC_CACHE", str(target.parent))
    monkeypatch.setattr(files, "_CLEANED", set())
    assert files.cache_dir() == target.parent
    assert not (target.parent / dead[0]).exists() and live.exists()

    # and so does locking a run directory (a checkpoint write killed in a run)
    (tmp_path / "run").mkdir()
    stale = tmp_path / "run" / f".checkpoint.npz.{writer.pid}@{files.temp_tag().split('@')[1]}.x.tmp"
    stale.write_bytes(b"half")
    with files.run_lock(tmp_path / "run"):
        assert not stale.exists()


# ---- item 15: a full disk ----------------------------------------------------------------------------------
def _disk_full_for(monkeypatch, should_fail):
    """os.replace (the last step of every atomic write) fails with ENOSPC where should_fail(dst) says."""
    real = os.replace

    def replace(src, dst, *a, **kw):
        if should_fail(Path(dst)):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(files.os, "replace", replace)


def test_a_full_disk_mid_run_keeps_the_last_checkpoint_and_saves_the_state_elsewhere(tmp_path, monkeypatch,
                                                                                     capsys):
    from jaxqc.train.checkpoint import read_checkpoint_meta

    run = tmp_path / "run"
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    writes = []

    def fail(dst):  # the run's second checkpoint finds the disk full
        if dst.parent == run and dst.name == "checkpoint.npz":
            writes.append(dst)
            return len(writes) >= 2
        return False

    _disk_full_for(monkeypatch, fail)
    assert _train(run, "--epochs", "3", "--set", "budget.train.checkpoint_every_s=0") == 2
    line = _one_line_error(capsys)
    assert "checkpoint.npz: disk full (No space left on device); the earlier file, if any, is unchanged" in line
    assert "training stopped after epoch 2" in line
    assert f"the last checkpoint written (after epoch 1) is kept in {run / 'checkpoint.npz'}" in line
    assert read_checkpoint_meta(run / "checkpoint.npz")["epoch"] == 0  # intact
    assert _strays(run) == []
    rescued = Path(line.split("its state is saved in ")[1].split(" (move")[0])
    assert rescued.parent == tmp_path / "tmp" and read_checkpoint_meta(rescued / "checkpoint.npz")["epoch"] == 1

    monkeypatch.undo()  # space freed: follow the message, and the run finishes
    for f in rescued.iterdir():
        os.replace(f, run / f.name)
    assert _train(run, "--resume", "--epochs", "3") == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_a_full_disk_when_saving_a_model_file_keeps_the_old_file_and_the_new_model(tmp_path, monkeypatch, capsys):
    from jaxqc import models

    out = tmp_path / "m.npz"
    out.write_bytes(b"the earlier model")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    _disk_full_for(monkeypatch, lambda dst: dst == out)
    assert main(["train", "sgdml", "--data", "ethanol-xtb", "--n-train", "20", "--n-valid", "10",
                 "--sigma-grid", "20", "--overwrite", "--out", str(out)]) == 2
    line = _one_line_error(capsys)
    assert f"{out}: disk full (No space left on device); the earlier file, if any, is unchanged" in line
    assert out.read_bytes() == b"the earlier model"
    assert _strays(tmp_path) == []
    saved = Path(line.split("the trained model is saved in ")[1].split(" instead")[0])
    assert saved.parent.parent == tmp_path / "tmp"
    assert models.load(saved).kind == "sgdml"


def test_read_log_drops_a_last_line_cut_short(tmp_path):
    from jaxqc.train.loop import read_log

    (tmp_path / "m.jsonl").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    assert read_log(tmp_path / "m.jsonl") == [{"epoch": 1}, {"epoch": 2}]


# ---- the kill -9 resume script, two trials ---------------------------------------------------------------
@pytest.mark.slow
def test_kill_resume_two_trials(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("kill_resume", ROOT / "experiments" / "kill_resume.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main(["--trials", "2", "--quick", "--work", str(tmp_path / "w"),
                          "--out", str(tmp_path / "kill_resume.json")])
    assert all(t["metrics_equal"] and t["params_equal"] and not t["stray_files"] for t in result["trials"])
    assert np.isfinite(result["reference"]["final_valid_forces_mae"])
