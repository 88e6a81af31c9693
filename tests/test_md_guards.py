"""MD guards: a run that leaves the sane range (temperature, NVE energy drift, a bond) stops with a
one-line reason, keeps the good frames and reports the thresholds in TRAJ.json, even when every number
stays finite (a time step of 1e6 fs used to exit 0 at 1.5e13 K)."""
import json

import pytest

from jaxqc.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("guards") / "sgdml.npz"
    assert main(["train", "sgdml", "--data", "ethanol-xtb", "--n-train", "30", "--n-valid", "10", "--sigma-grid", "20",
                 "--out", str(path)]) == 0
    return path


def _md(model, out, *extra):
    return main(["md", str(model), "--start", "ethanol-xtb", "--steps", "200", "--write-every", "10", "--quiet",
                 "--out", str(out), *extra])


@pytest.mark.parametrize("extra, reason", [
    (["--dt-fs", "1e6", "--steps", "50"], "the simulation left the sane range"),
    (["--max-temperature-k", "20"], "temperature"),
    (["--dt-fs", "2.0", "--max-drift-kcal-mol-atom", "1e-6"], "total energy drifted by"),
    (["--bond-range-ang", "0.5", "1.12"], "outside [0.5, 1.12] Å"),  # the C-H and O-H bonds (start < 1.12 Å)
])
def test_guards_stop_keep_frames_and_report(model, tmp_path, capsys, extra, reason):
    out = tmp_path / "t.extxyz"
    assert _md(model, out, *extra) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and reason in err and "keeping the frames up to step" in err
    summary = json.loads(out.with_suffix(".json").read_text())
    assert summary["stopped"] and reason in summary["stopped"]
    cfg = summary["config"]
    assert {"max_temperature_k", "max_drift_kcal_mol_atom", "bond_range_ang"} <= set(cfg)
    assert out.exists() and out.read_text().count("Properties=") >= 1  # the good frames (at least the start)


def test_a_sane_run_passes_and_no_guards_turns_them_off(model, tmp_path, capsys):
    assert _md(model, tmp_path / "ok.extxyz", "--dt-fs", "0.5") == 0
    summary = json.loads((tmp_path / "ok.json").read_text())
    assert summary["stopped"] is None and summary["config"]["bond_range_ang"] == [0.5, 3.0]
    assert _md(model, tmp_path / "free.extxyz", "--max-temperature-k", "20", "--no-guards") == 0
