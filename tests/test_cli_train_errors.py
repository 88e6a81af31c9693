"""`jaxqc train` refuses what cannot train, and never loses a run: one-line errors (exit 2) before any
training, for impossible flag values, an existing model or run at --out, --resume without a checkpoint
and --resume on another split."""
import pytest

from jaxqc.cli import main

TINY = ["--features", "8", "--interactions", "1", "--epochs", "1", "--batch-size", "8"]


def _train(tmp_path, *extra, out="run", method="schnet"):
    return main(["train", method, "--data", "ethanol-xtb", "--n-train", "16", "--n-valid", "8", *extra,
                 "--out", str(tmp_path / out)])


@pytest.mark.parametrize("flag, value, expect", [
    ("--epochs", "0", "--epochs must be >= 1, got 0"),
    ("--batch-size", "0", "--batch-size must be >= 1, got 0"),
    ("--features", "0", "--features must be >= 1, got 0"),
    ("--cutoff", "0", "--cutoff must be a positive number, got 0"),
    ("--lr", "-1", "--lr must be a positive number, got -1"),
    ("--time-budget", "-1", "--time-budget must be a positive number, got -1"),
    ("--n-valid", "0", "--n-valid must be >= 1, got 0"),
])
def test_impossible_values_are_one_line_errors(flag, value, expect, tmp_path, capsys):
    assert _train(tmp_path, flag, value) == 2
    err = capsys.readouterr().err
    assert expect in err and err.count("\n") == 1 and err.startswith("jaxqc: error:")
    assert not (tmp_path / "run").exists()


def test_sigma_grid_zero_is_refused_before_fitting(tmp_path, capsys):
    assert _train(tmp_path, "--sigma-grid", "0", method="sgdml", out="m.npz") == 2
    assert "--sigma-grid values must be positive numbers, got 0" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_out_that_is_a_directory_or_an_existing_model(tmp_path, capsys):
    (tmp_path / "d.npz").mkdir()
    assert _train(tmp_path, method="sgdml", out="d.npz") == 2
    assert "is a directory" in capsys.readouterr().err
    (tmp_path / "m.npz").write_bytes(b"keep me")
    assert _train(tmp_path, method="sgdml", out="m.npz") == 2
    assert "a model file is already there; add --overwrite" in capsys.readouterr().err
    assert (tmp_path / "m.npz").read_bytes() == b"keep me"


def test_a_finished_run_is_not_overwritten_and_resume_checks_its_split(tmp_path, capsys):
    assert _train(tmp_path, "--forces", *TINY) == 0
    before = (tmp_path / "run" / "model.npz").read_bytes()
    capsys.readouterr()
    assert _train(tmp_path, "--forces", *TINY) == 2
    assert "holds a run already" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.npz").read_bytes() == before
    # --resume with another training set size: refused, the run is untouched
    assert main(["train", "schnet", "--data", "ethanol-xtb", "--n-train", "20", "--n-valid", "8", "--forces", *TINY,
                 "--resume", "--out", str(tmp_path / "run")]) == 2
    assert "trained on another train split" in capsys.readouterr().err
    assert (tmp_path / "run" / "model.npz").read_bytes() == before


def test_overwrite_replaces_a_model_on_request(tmp_path, capsys):
    args = ["train", "sgdml", "--data", "ethanol-xtb", "--n-train", "20", "--n-valid", "10", "--sigma-grid", "20",
            "--out", str(tmp_path / "m.npz")]
    assert main(args) == 0
    first = (tmp_path / "m.npz").read_bytes()
    assert main(args) == 2
    assert main([*args, "--overwrite", "--seed", "1"]) == 0
    assert (tmp_path / "m.npz").read_bytes() != first


def test_an_unexpected_exception_is_one_line_with_a_log(monkeypatch, capsys):
    """The safety net: a bug (not a bad input) gives exit 3, one line naming a log with the traceback."""
    import re

    from jaxqc import commands

    def broken(args):
        raise RuntimeError("something inside broke")

    monkeypatch.setattr(commands, "cmd_data_info", broken)
    assert main(["data", "info", "ethanol-xtb"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: something inside broke" in err
    log = re.search(r"traceback in (\S+);", err).group(1)
    assert "Traceback" in open(log).read() and "broken" in open(log).read()
    with pytest.raises(RuntimeError):
        main(["--debug", "data", "info", "ethanol-xtb"])


def test_resume_without_a_checkpoint(tmp_path, capsys):
    assert _train(tmp_path, "--resume", *TINY, out="empty") == 2
    assert "has no checkpoint.npz to continue" in capsys.readouterr().err
