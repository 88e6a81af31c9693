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
