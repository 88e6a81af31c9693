"""Each experiment has a tiny configuration that runs here and must learn."""
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_qm9_krr_learning_curve_quick(qm9_full_cache, tmp_path, monkeypatch):
    cache_dir, data, _ = qm9_full_cache
    monkeypatch.setenv("JAXQC_CACHE", str(cache_dir))
    exp = _load("qm9_krr_learning_curve")
    peer = importlib.util.find_spec("qmllib") is not None
    argv = ["--quick", "--out", str(tmp_path / "lc")] + ([] if peer else ["--no-peer"])
    results = exp.main(argv)
    saved = json.loads((tmp_path / "lc.json").read_text())
    assert saved["runs"] == json.loads(json.dumps(results["runs"]))
    for rep in ("cm", "bob"):
        rows = [r for r in results["runs"] if r["representation"] == rep]
        assert [r["n_train"] for r in rows] == [200, 400]
        # it learns: far better than predicting the mean, and better with more data
        baseline = np.abs(data.props["U0_atom"] - data.props["U0_atom"].mean()).mean()
        assert rows[-1]["jaxqc"]["mae"] < 0.2 * baseline
        assert rows[-1]["jaxqc"]["mae"] < rows[0]["jaxqc"]["mae"]
        if peer:  # same function as the peer on the same molecules and grid
            assert all(abs(r["mae_ratio_jaxqc_over_qmllib"] - 1) < 0.03 for r in rows)
