"""`jaxqc train krr` and `jaxqc evaluate` end to end on QM9 (small N), and their errors."""
import json

import numpy as np
import pytest
from helpers import ethanol_frames

from jaxqc.cli import main
from jaxqc.data import io
from jaxqc.kernels import krr


@pytest.fixture
def qm9_env(qm9_full_cache, monkeypatch):
    cache_dir, data, _ = qm9_full_cache
    monkeypatch.setenv("JAXQC_CACHE", str(cache_dir))
    return data


def test_train_and_evaluate_two_targets(qm9_env, tmp_path, capsys):
    model = tmp_path / "krr.npz"
    code = main(["train", "krr", "--data", "qm9", "--representation", "bob", "--target", "U0", "--target", "HOMO",
                 "--n-train", "300", "--n-valid", "200", "--sigma-grid", "3200", "12800",
                 "--lambda-grid", "1e-8", "--out", str(model)])
    assert code == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", "qm9", "--split", "test", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"U0", "HOMO"} <= set(result) and result["n"] == 10_000
    assert result["U0"]["unit"] == "kcal/mol" and result["U0"]["rmse"] >= result["U0"]["mae"] > 0
    # at N = 300 BoB is far from chemical accuracy, but far better than the spread of U0 atomization energies
    spread = np.abs(qm9_env.props["U0_atom"] - qm9_env.props["U0_atom"].mean()).mean()
    assert result["U0"]["mae"] < 0.2 * spread
    saved = krr.load_krr(model)
    prov = saved["provenance"]
    assert len(prov["train_idx"]) == 300 and len(prov["test_idx"]) == 10_000
    assert prov["dataset_md5"] == qm9_env.meta["md5"] and saved["sigma"] in (3200, 12800)
    assert saved["bags"] is not None and len(saved["X_train"]) == 300


def test_evaluate_refuses_another_data_set_for_a_saved_split(qm9_env, tmp_path, capsys):
    model = tmp_path / "krr.npz"
    assert main(["train", "krr", "--data", "qm9", "--n-train", "100", "--n-valid", "50", "--sigma-grid", "6400",
                 "--lambda-grid", "1e-8", "--out", str(model)]) == 0
    other = tmp_path / "other.npz"
    io.write_npz(ethanol_frames(3), other)
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", str(other), "--split", "valid"]) == 2
    assert "not the data set the model was trained on" in capsys.readouterr().err
    # its test split is all of another data set, which here has no U0 to compare with
    assert main(["evaluate", str(model), "--data", str(other), "--split", "test"]) == 2
    assert "no 'U0' values to evaluate against" in capsys.readouterr().err


def test_train_unknown_target_and_too_many_molecules(qm9_env, tmp_path, capsys):
    assert main(["train", "krr", "--data", "qm9", "--target", "U7", "--n-train", "10", "--out",
                 str(tmp_path / "m.npz")]) == 2
    assert "target 'U7' not in the data set" in capsys.readouterr().err
    assert main(["train", "krr", "--data", "qm9", "--n-train", "200000", "--out", str(tmp_path / "m.npz")]) == 2
    assert "more than the 118831 training molecules" in capsys.readouterr().err
    assert not (tmp_path / "m.npz").exists()


def test_single_hyperparameter_fit_skips_the_grid(qm9_env, tmp_path, capsys):
    model = tmp_path / "one.npz"
    assert main(["train", "krr", "--data", "qm9", "--n-train", "200", "--n-valid", "100", "--sigma-grid", "3200",
                 "--lambda-grid", "1e-6", "--out", str(model)]) == 0
    saved = krr.load_krr(model)
    assert saved["sigma"] == 3200 and saved["lambda"] == 1e-6
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", "qm9", "--split", "valid", "--json"]) == 0
    valid_mae = json.loads(capsys.readouterr().out)["U0"]["mae"]
    # the validation MAE found at training is the number evaluate reports on the saved validation split
    assert saved["grid_mae"].shape == (1, 1, 1)
    # (to 1e-5: the fit's distance blocks are float32 on the device, evaluate's energy() is float64 throughout)
    assert abs(float(saved["grid_mae"][0, 0, 0]) - valid_mae) < 1e-5 * valid_mae
