"""experiments/mace_peer.py (MACE, jaxqc against mace-torch), CI-sized: jaxqc's part always; the peer's part
(mace-torch's throughput and the weight transfer) only where mace-torch is installed (a benchmark-only extra)."""
import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _experiment():
    spec = importlib.util.spec_from_file_location("mace_peer", ROOT / "experiments" / "mace_peer.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    return exp


def test_mace_peer_quick_jaxqc(tmp_path):
    """--quick --no-peer: jaxqc's train-step and inference throughput (E + F) of a tiny MACE on rMD17 aspirin
    (ethanol-xtb where ../shared/data is absent), results JSON written; ~30 s."""
    res = _experiment().main(["--quick", "--no-peer", "--out", str(tmp_path / "q")])
    case = res["speed"]["runs"]["quick"]["jaxqc"]["huge_pages"]["aspirin_b5"]
    assert case["train_mol_per_s"] > 0 and case["infer_mol_per_s"] > 0 and case["train_first_call_s"] > 0
    saved = json.loads((tmp_path / "q_speed.json").read_text())
    assert saved["peer_skipped"] and "same_function" not in saved
    assert saved["speed"]["speedup_jaxqc_over_mace_torch"] == {}


@pytest.mark.slow
def test_mace_peer_quick_with_mace_torch(tmp_path):
    """With mace-torch installed (the peer environment): both codes' throughput, and a random mace-torch model
    transferred into jaxqc's parameters gives the same energies and forces in float64."""
    if importlib.util.find_spec("mace") is None or importlib.util.find_spec("torch") is None:
        pytest.skip("mace-torch is not installed (benchmark-only extra: see experiments/README.md)")
    res = _experiment().main(["--quick", "--out", str(tmp_path / "q")])
    assert res["speed"]["speedup_jaxqc_over_mace_torch"]["quick"]["aspirin_b5"]["train_mol_per_s"] > 0
    for row in res["same_function"].values():
        assert row["energy_max_abs_diff"] < 1e-9 * max(1.0, row["energy_max_abs"])
        assert row["forces_max_abs_diff"] < 1e-9


@pytest.mark.slow
def test_mace_peer_md_section_quick_jaxqc(tmp_path):
    """--section md --quick --no-peer: jaxqc's jitted Langevin MD with MACE (ethanol-xtb), steps/s and compile
    time recorded in float64 and float32, no stop; the ASE + mace-torch route needs the peer."""
    res = _experiment().main(["--quick", "--no-peer", "--section", "md", "--out", str(tmp_path / "q")])
    for dtype in ("float64", "float32"):
        row = res["md"][f"ethanol_{dtype}"]
        assert row["jaxqc"]["steps"] == 40 and row["jaxqc"]["stopped"] is None
        assert row["jaxqc"]["steps_per_s"] > 0 and row["jaxqc"]["compile_s"] > 0 and "ase_mace_torch" not in row
    assert json.loads((tmp_path / "q_md.json").read_text())["md"].keys() == res["md"].keys()


def test_mace_gpu_script_runs_tiny_on_cpu(tmp_path):
    """experiments/mace_gpu.py --quick (the accelerator script at CPU size): every item measured, none failed,
    the JSON written after each item."""
    spec = importlib.util.spec_from_file_location("mace_gpu", ROOT / "experiments" / "mace_gpu.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    res = exp.main(["--quick", "--out", str(tmp_path / "g.json")])
    items = res["items"]
    assert set(items) == {"quick_aspirin_b5", "md_one_float32", "md_replicas_3"}
    assert all("error" not in r and "skipped" not in r for r in items.values()), items
    assert items["quick_aspirin_b5"]["train_mol_per_s"] > 0 and items["quick_aspirin_b5"]["train_first_call_s"] > 0
    assert items["md_one_float32"]["steps"] == 40 and items["md_replicas_3"]["replicas"] == 3
    assert json.loads((tmp_path / "g.json").read_text())["items"].keys() == items.keys()
    assert res["backend"] == "cpu"


def test_mace_rmd17_experiment_quick(tmp_path):
    """experiments/mace_rmd17.py --quick: a tiny MACE on 20 rMD17 ethanol frames (3 epochs) and sGDML on the same
    frames; the validation curve, the CPU time and the test errors recorded (skips without ../shared/data)."""
    from conftest import shared

    shared("rmd17", "rmd17_ethanol_train_01.npz")
    spec = importlib.util.spec_from_file_location("mace_rmd17", ROOT / "experiments" / "mace_rmd17.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    res = exp.main(["--quick", "--run-root", str(tmp_path / "runs"), "--out", str(tmp_path / "m.json")])
    (row,) = res["runs"]
    assert row["n_train"] == 20 and row["n_test"] == 50 and row["mace"]["epochs"] == 3
    assert len(row["mace"]["curve"]) == 3 and row["mace"]["cpu_s"] > 0
    assert row["mace"]["test"]["forces_mae"] > 0 and row["sgdml"]["forces_mae"] > 0
    assert json.loads((tmp_path / "m.json").read_text())["runs"][0]["n_train"] == 20


@pytest.mark.slow
def test_mace_profile_quick(tmp_path):
    """experiments/mace_profile.py --quick: XLA's FLOP counts of a tiny MACE, full and without the
    higher-order product basis; removing a part removes work."""
    spec = importlib.util.spec_from_file_location("mace_profile", ROOT / "experiments" / "mace_profile.py")
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    res = exp.main(["--quick", "--out", str(tmp_path / "p.json")])
    full, lin = res["variants"]["full"], res["variants"]["correlation_1"]
    assert full["infer"]["gflop"] > lin["infer"]["gflop"] > 0 and full["train"]["gflop"] > full["infer"]["gflop"]
    assert 0 < res["share_of_full"]["correlation_1"]["infer"] < 1
