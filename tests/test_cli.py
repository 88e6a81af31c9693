"""The `jaxqc` command: data info / convert, one-line errors with exit code 2, download without network."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import shared
from helpers import ETHANOL_R, ethanol_frames, write_xyz

from jaxqc.cli import main
from jaxqc.data import download, io


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_rmd17(capsys):
    path = shared("rmd17", "rmd17_ethanol_train_01.npz")
    code, out, _ = run(capsys, "data", "info", str(path), "--json")
    info = json.loads(out)
    assert code == 0 and info["n_molecules"] == 1000 and info["n_atoms"] == {"min": 9, "max": 9}
    assert info["labels"] == {"E": "kcal/mol", "F": "kcal/mol/Å"}


def test_info_text_and_convert(tmp_path, capsys):
    io.write_npz(ethanol_frames(3), tmp_path / "d.npz")
    code, out, _ = run(capsys, "data", "info", str(tmp_path / "d.npz"))
    assert code == 0 and "3 molecules" in out and "E [kcal/mol]" in out
    code, out, _ = run(capsys, "data", "convert", str(tmp_path / "d.npz"), str(tmp_path / "d.extxyz"))
    assert code == 0
    back = io.read(tmp_path / "d.extxyz", energy_unit="eV")
    np.testing.assert_allclose(back.E, ethanol_frames(3).E, rtol=1e-9)


@pytest.mark.parametrize("case,expect", [
    ("missing", "no such file"),
    ("format", "unsupported format"),
    ("element", "unknown element 'Zz'"),
    ("overlap", "closer than 0.1 Å"),
    ("unit", "unknown energy unit"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, case, expect):
    path = tmp_path / "x.xyz"
    extra = []
    if case == "format":
        path = tmp_path / "x.cif"
        path.write_text("data_x\n")
    elif case == "element":
        write_xyz(path, ["C", "Zz"], [[0, 0, 0], [1, 0, 0]])
    elif case == "overlap":
        write_xyz(path, ["C", "H"], [[0, 0, 0], [0.01, 0, 0]])
    elif case == "unit":
        write_xyz(path, ["C", "C", "O", "H", "H", "H", "H", "H", "H"], ETHANOL_R)
        extra = ["--energy-unit", "bananas"]
    code, out, err = run(capsys, "data", "info", str(path), *extra)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("jaxqc: error: ") and expect in err


def test_download_without_network_says_where_to_put_the_file(tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise download.urllib.error.URLError("no route to host")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    code, _, err = run(capsys, "data", "download", "qm9-xyz", "--dest", str(tmp_path))
    assert code == 2 and "fetch https://" in err and str(tmp_path / "dsgdb9nsd.xyz.tar.bz2") in err
    assert list(tmp_path.iterdir()) == []  # nothing half-written


def test_download_checks_the_checksum(tmp_path, capsys, monkeypatch):
    src = tmp_path / "remote.npz"
    io.write_npz(ethanol_frames(2), src)
    entry = {"url": src.as_uri(), "filename": "got.npz", "sha256": None, "description": "local test file"}
    monkeypatch.setitem(download.SOURCES, "local", entry)
    dest = tmp_path / "dl"
    code, _, err = run(capsys, "data", "download", "local", "--dest", str(dest), "--sha256", "0" * 64)
    assert code == 2 and "does not match" in err and not (dest / "got.npz").exists()
    good = download.sha256_of(src)
    code, out, _ = run(capsys, "data", "download", "local", "--dest", str(dest), "--sha256", good)
    assert code == 0 and (dest / "got.npz").read_bytes() == src.read_bytes()


def test_download_records_first_hash_and_rechecks(tmp_path, monkeypatch):
    src = tmp_path / "remote.npz"
    io.write_npz(ethanol_frames(2), src)
    monkeypatch.setitem(download.SOURCES, "local", {"url": src.as_uri(), "filename": "got.npz",
                                                     "sha256": None, "description": "x"})
    path = download.download("local", dest=tmp_path / "dl")
    assert json.loads((tmp_path / "dl" / "got.npz.sha256.json").read_text())["sha256"] == download.sha256_of(src)
    path.chmod(0o644)
    path.write_bytes(b"tampered")
    with pytest.raises(download.JaxqcError, match="differs from the expected"):
        download.download("local", dest=tmp_path / "dl")


def test_huge_page_rerun_only_when_unset_and_on_linux():
    """The jaxqc command re-runs itself once with glibc's huge-page tunable: not when GLIBC_TUNABLES is
    set (the re-run sets it, so it cannot loop), not when JAXQC_HUGE_PAGES=0, not off Linux."""
    from jaxqc.runtime import HUGE_PAGES_TUNABLE, huge_page_command

    argv, env = huge_page_command(["md", "run", "--steps", "5"], {"PATH": "/bin"}, "linux")
    assert argv[1:] == ["-m", "jaxqc.cli", "md", "run", "--steps", "5"] and argv[0] == sys.executable
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": HUGE_PAGES_TUNABLE}
    assert huge_page_command(["md"], env, "linux") is None
    assert huge_page_command(["md"], {"JAXQC_HUGE_PAGES": "0"}, "linux") is None
    assert huge_page_command(["md"], {}, "darwin") is None


def test_jaxqc_command_runs_through_the_rerun(tmp_path):
    """`python -m jaxqc.cli` (the console script's path) re-runs and still gives the command's answer."""
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "JAXQC_HUGE_PAGES")}
    bad = tmp_path / "missing.xyz"
    r = subprocess.run([sys.executable, "-m", "jaxqc.cli", "data", "info", str(bad)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.xyz" in r.stderr, r.stderr
