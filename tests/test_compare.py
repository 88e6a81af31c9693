"""`jaxqc compare` (jaxqc.benchmark): end to end on a tiny budget, the JSON it writes, methods that do not
apply, the one-line errors, the paper plan, the rMD17 protocol, bit-identical reruns (budgets count epochs,
not time) and the wall-clock guard's flag."""
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import shared
from helpers import mixed_molecules

from jaxqc.cli import main
from jaxqc.compare import METHODS
from jaxqc.models.gdml import SGDML_GRID
from jaxqc.data import io
from jaxqc.data.molecules import Dataset

ROW_KEYS = {"method", "applicable", "n_train", "energy_mae", "fit_s", "predict_per_s", "peak_rss_mb"}
TOP_KEYS = {"budget", "data", "target", "units", "protocol", "methods", "rows", "plots", "memory", "timing",
            "machine", "jaxqc_version", "command", "wall_s"}


def run(capsys, *argv):
    code = main(["compare", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_tiny_frames_end_to_end(tmp_path, capsys):
    out_dir = tmp_path / "cmp"
    code, out, _ = run(capsys, "--budget", "tiny", "--methods", "krr-cm,sgdml", "--in-process", "--json", "--out",
                       str(out_dir))
    assert code == 0
    result = json.loads(out)
    assert TOP_KEYS <= set(result)
    assert result["data"]["name"] == "ethanol-xtb" and result["data"]["kind"] == "frames"
    assert result["units"] == {"energy": "kcal/mol", "forces": "kcal/mol/Å", "fit_s": "s",
                               "predict_per_s": "molecules/s", "peak_rss_mb": "MiB"}
    assert list(result["methods"]) == ["krr-cm", "sgdml"]
    rows = result["rows"]
    assert [(r["method"], r["n_train"]) for r in rows] == [("krr-cm", 20), ("krr-cm", 40), ("sgdml", 20),
                                                           ("sgdml", 40)]
    for r in rows:
        assert ROW_KEYS <= set(r) and r["fit_s"] > 0 and r["predict_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert np.isfinite(r["energy_mae"])
    krr = [r for r in rows if r["method"] == "krr-cm"]
    assert all("forces_mae" not in r and r["note"] == "energy only" for r in krr)
    sgdml = result["methods"]["sgdml"]["runs"]
    assert sgdml[1]["forces_mae"] < sgdml[0]["forces_mae"]  # it learns: more frames, smaller error
    assert sgdml[0]["n_perms"] > 1 and sgdml[0]["sigma"] in (10.0, 20.0)
    # the same protocol for every method: test frames disjoint from training and validation
    assert result["protocol"] == {"description": result["protocol"]["description"], "n_pool": 2950,
                                  "n_valid": 10, "n_test": 40}
    saved = json.loads((out_dir / "compare.json").read_text())
    assert saved["rows"] == rows
    for name in ("learning_curve.png", "parity_krr-cm.png", "parity_sgdml.png"):
        assert (out_dir / name).stat().st_size > 1000
    pred = np.load(out_dir / "predictions" / "sgdml.npz")
    assert int(pred["n_train"]) == 40 and pred["F"].shape == (40 * 9 * 3,)
    assert abs(np.abs(pred["F"] - pred["F_ref"]).mean() - sgdml[1]["forces_mae"]) < 1e-9


def test_property_data_lists_force_fields_as_not_applicable(tmp_path, capsys):
    path = tmp_path / "props.npz"
    io.write_npz(mixed_molecules(150), path)
    code, out, _ = run(capsys, "--data", str(path), "--target", "mu", "--budget", "tiny", "--methods",
                       "krr-bob", "gdml", "sgdml", "dtnn", "--in-process", "--json", "--out", str(tmp_path / "c"))
    assert code == 0
    result = json.loads(out)
    assert result["data"]["kind"] == "property" and result["target"] == "mu" and result["units"]["energy"] == "D"
    for m in ("gdml", "sgdml"):
        entry = result["methods"][m]
        assert entry["applicable"] is False and "force field" in entry["reason"]
        assert {"method": m, "applicable": False, "note": "not applicable: " + entry["reason"]} in result["rows"]
    ran = [r for r in result["rows"] if r["applicable"]]
    assert {r["method"] for r in ran} == {"krr-bob", "dtnn"}  # (Cormorant on QM9 U0: cormorant_vs_schnet --quick)
    assert all("forces_mae" not in r and np.isfinite(r["energy_mae"]) for r in ran)


def test_worker_process_network_with_forces_and_the_table(tmp_path, capsys):
    code, out, err = run(capsys, "--budget", "tiny", "--methods", "schnet", "--out", str(tmp_path / "c"))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("ethanol-xtb: 3000 frames") and "F MAE (kcal/mol/Å)" in lines[2]
    assert lines[3].split()[:2] == ["schnet", "40"]
    assert lines[-1].startswith("wrote ") and "parity_schnet.png" in lines[-1]
    result = json.loads((tmp_path / "c" / "compare.json").read_text())
    assert "own worker process" in result["memory"]
    entry = result["methods"]["schnet"]
    assert entry["forces"] is True and entry["model"]["features"] == 16
    (r,) = entry["runs"]
    assert np.isfinite(r["forces_mae"]) and r["epochs"] == 1
    assert Path(r["run_dir"], "model.npz").exists()  # a trained jaxqc force field (jaxqc md / evaluate)
    assert r["peak_rss_mb"] >= r["rss_start_mb"] > 50  # the worker's own process: Python + JAX + data
    assert r["peak_is_per_run"] is True


def _water(n=20):
    rng = np.random.default_rng(0)
    R = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [-0.24, 0.93, 0.0]])[None] + 0.02 * rng.normal(size=(n, 3, 3))
    return Dataset(Z=np.tile([8, 1, 1], (n, 1)), R=R, E=rng.normal(size=n), F=rng.normal(size=(n, 3, 3)))


@pytest.mark.parametrize("case,expect", [
    ("data", "--data nope.npz: not a registered data set"),
    ("method", "unknown method(s) banana; choose from krr-cm, krr-bob, gdml, sgdml, schnet, dtnn, cormorant"),
    ("budget", "unknown budget 'huge'; one of quick, paper"),
    ("test", "a different molecule (OH2, 3 atoms) from --data (C2OH6, 9 atoms)"),
    ("target", "--target U0: not in the data set"),
    ("jobs", "--jobs 0: give a positive number of worker processes, or auto"),
])
def test_errors_exit_2_with_one_line(tmp_path, capsys, case, expect):
    argv = {"data": ["--data", "nope.npz"], "method": ["--methods", "sgdml,banana"], "budget": ["--budget", "huge"],
            "test": ["--test", str(tmp_path / "water.npz")], "target": ["--target", "U0"], "jobs": ["--jobs", "0"]}[case]
    io.write_npz(_water(), tmp_path / "water.npz")
    code, out, err = run(capsys, *argv, "--plan")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("jaxqc: error: ") and expect in err


def test_side_by_side_workers_give_the_in_process_errors(tmp_path, capsys):
    """--jobs 2: two worker processes at once, each pinned to its own CPUs; the errors of one process with
    every CPU, to 1e-7 (a one-thread BLAS / Eigen sums in another order: sGDML's differ in the 10th digit)."""
    import os

    argv = ["--budget", "tiny", "--methods", "krr-cm,sgdml", "--json"]
    par = json.loads(run(capsys, *argv, "--jobs", "2", "--out", str(tmp_path / "par"))[1])
    seq = json.loads(run(capsys, *argv, "--in-process", "--quiet", "--out", str(tmp_path / "seq"))[1])
    assert [(r["method"], r["n_train"]) for r in par["rows"]] == [(r["method"], r["n_train"]) for r in seq["rows"]]
    assert len(par["rows"]) == 4 and all("error" not in e for e in par["methods"].values())
    for a, b in zip(par["rows"], seq["rows"]):
        assert [a.get(k) is None for k in MAE_KEYS] == [b.get(k) is None for k in MAE_KEYS]
        assert all(abs(a[k] - b[k]) <= 1e-7 * abs(b[k]) for k in MAE_KEYS if b.get(k) is not None), (a, b)
    cpus = sorted(os.sched_getaffinity(0))
    assert par["lanes"] == ([cpus[0::2], cpus[1::2]] if len(cpus) > 1 else [])
    assert "own worker process" in par["memory"] and seq["lanes"] == []


def test_paper_plan_frames(capsys):
    code, out, _ = run(capsys, "--budget", "paper", "--plan", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["budget"] == "paper" and list(plan["methods"]) == list(METHODS)
    m = plan["methods"]
    assert m["sgdml"]["n_train"] == [100, 200, 500, 1000] and m["sgdml"]["settings"]["sigmas"] == list(SGDML_GRID)
    assert m["schnet"]["model"]["features"] == 128 and m["schnet"]["model"]["interactions"] == 6
    assert m["schnet"]["forces"] is True and m["krr-cm"]["energy_only"] is True
    code, out, _ = run(capsys, "--plan")  # the default (quick) plan as text
    assert code == 0 and "plan (quick): ethanol-xtb" in out and "schnet   N = 1000" in out


def test_paper_plan_qm9(qm9_full_cache, monkeypatch, capsys):
    monkeypatch.setenv("JAXQC_CACHE", str(qm9_full_cache[0]))
    code, out, _ = run(capsys, "--data", "qm9", "--target", "U0", "--budget", "paper", "--plan", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["data"]["kind"] == "property" and plan["units"]["energy"] == "kcal/mol"
    assert plan["protocol"]["n_test"] == 10_000 and plan["protocol"]["n_valid"] == 2_000
    assert plan["methods"]["krr-bob"]["n_train"][-1] == 110_000
    assert plan["methods"]["schnet"]["n_train"] == [110_000]
    assert not plan["methods"]["gdml"]["applicable"] and not plan["methods"]["sgdml"]["applicable"]


def test_rmd17_protocol_plan_and_wrong_molecule(capsys):
    train = shared("rmd17", "rmd17_ethanol_train_01.npz")
    test = shared("rmd17", "rmd17_ethanol_test_01.npz")
    code, out, _ = run(capsys, "--data", str(train), "--test", str(test), "--plan", "--json")
    assert code == 0
    plan = json.loads(out)
    assert plan["protocol"]["n_pool"] == 950 and plan["protocol"]["n_valid"] == 50
    assert plan["protocol"]["n_test"] == 1000 and plan["data"]["test"]["n_molecules"] == 1000
    assert plan["methods"]["sgdml"]["n_train"] == [50, 100, 200, 500, 950]
    assert "0.840 (N = 200" in plan["methods"]["sgdml"]["reference"]
    aspirin = Path(str(test).replace("ethanol", "aspirin"))
    if aspirin.exists():
        code, out, err = run(capsys, "--data", str(train), "--test", str(aspirin), "--plan")
        assert code == 2 and "a different molecule" in err


@pytest.mark.slow
def test_rmd17_sgdml_matches_the_measured_learning_curve(tmp_path, capsys):
    """The quick rMD17 sGDML runs reproduce experiments/results/md17_sgdml_curve.json (~2-4 min)."""
    train = shared("rmd17", "rmd17_ethanol_train_01.npz")
    test = shared("rmd17", "rmd17_ethanol_test_01.npz")
    code, out, _ = run(capsys, "--data", str(train), "--test", str(test), "--methods", "sgdml", "--json",
                       "--out", str(tmp_path / "c"))
    assert code == 0
    runs = {r["n_train"]: r for r in json.loads(out)["methods"]["sgdml"]["runs"]}
    for n, mae in ((100, 1.3002), (200, 0.8400), (500, 0.5242), (950, 0.3701)):
        assert runs[n]["forces_mae"] == pytest.approx(mae, rel=2e-3), n


MAE_KEYS = ("energy_mae", "energy_rmse", "forces_mae", "forces_rmse")


def applicable_methods(data_name: str) -> list:
    """The compare methods whose family applies to a registered frames data set (SchNOrb needs Hamiltonians)."""
    from jaxqc import models
    from jaxqc.data import registry as data_registry

    data = data_registry.load(data_name)
    return [m for m in METHODS if models.get(m).applies("frames", data) is None]


@pytest.mark.parametrize("methods", [
    "krr-cm,sgdml,schnet",  # one of each kind of fit: closed form, symmetries + Cholesky, the optax loop
    pytest.param(None, marks=pytest.mark.slow),  # every method (~1.5 min on 2 idle cores, twice)
])
def test_tiny_rerun_gives_bit_identical_errors(tmp_path, capsys, methods):
    """Budgets count epochs and every fit is seeded: the same command gives the same errors, exactly."""
    argv = ["--budget", "tiny", "--in-process", "--json", "--quiet"] + (["--methods", methods] if methods else [])
    results = [json.loads(run(capsys, *argv, "--out", str(tmp_path / f"c{k}"))[1]) for k in range(2)]
    maes = [[(m, r["n_train"], *(r.get(k) for k in MAE_KEYS)) for m, e in res["methods"].items()
             for r in e.get("runs", [])] for res in results]
    expect = set(methods.split(",")) if methods else set(applicable_methods("ethanol-xtb"))
    assert {m for m, *_ in maes[0]} == expect and all("error" not in e for e in results[0]["methods"].values())
    assert maes[0] == maes[1]
    assert all(r["hit_time_guard"] is False for r in results[0]["rows"] if "n_train" in r)


def test_a_run_stopped_by_the_time_guard_says_so(tmp_path, capsys, monkeypatch):
    from jaxqc.benchmark import budgets

    for_data = budgets.for_data
    monkeypatch.setattr(budgets, "for_data", lambda b, f: for_data(b, f).replace(epochs=5, max_minutes=1e-9))
    code, out, _ = run(capsys, "--budget", "tiny", "--methods", "schnet", "--in-process", "--quiet", "--out",
                       str(tmp_path / "c"))
    assert code == 0
    (r,) = json.loads((tmp_path / "c" / "compare.json").read_text())["rows"]
    assert r["hit_time_guard"] is True and "wall-clock guard after 1 epochs" in r["note"]
    assert "rows that hit the wall-clock guard" in out


def test_the_benchmark_names_no_model_family():
    """The runner asks the registry: no family name (and so no per-family code) in the compare modules."""
    import jaxqc.benchmark

    for name in ("__init__", "budgets", "protocol", "report", "runner", "worker"):
        path = Path(jaxqc.benchmark.__file__).parent / f"{name}.py"
        text = path.read_text().lower()
        for family in ("krr", "gdml", "schnet", "dtnn", "cormorant", "coulomb", "sigma_grid"):
            assert family not in text, (path.name, family)
