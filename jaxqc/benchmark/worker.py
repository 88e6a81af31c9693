"""One method of a comparison in its own process, so that its peak memory is its own.

    python -m jaxqc.benchmark.worker SPEC.json

SPEC holds the data sources, units, protocol indices, the method, its budget level and the plugins that
registered it; the worker writes {"runs": [...], "error"?, "predictions"?} to SPEC["result"].
`peak_rss_mb` is the resident-set high-water mark (Linux VmHWM), reset before each run through
/proc/self/clear_refs; it includes the Python interpreter, the JAX runtime and the data set.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..errors import JaxqcError


# ---- memory -------------------------------------------------------------------------------------------
def status_mb(field: str) -> float | None:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in MiB; None where there is none (not Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    """Reset this process's RSS high-water mark to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_mb() -> float:
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 1024.0)


# ---- JSON ---------------------------------------------------------------------------------------------
def json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)


# ---- the worker ---------------------------------------------------------------------------------------
def load_context(spec: dict):
    """(data, protocol with index arrays, test subset) of a worker spec."""
    from .protocol import read_data

    data = read_data(spec["data"], spec["units"])
    test = read_data(spec["test"], spec["units"], "--test") if spec["test"] else data
    proto = {k: np.asarray(v) if k in ("pool", "valid", "test") else v for k, v in spec["protocol"].items()}
    return data, proto, test.subset(proto["test"])


def main(spec_path) -> int:
    from ..models.registry import load_plugin
    from .runner import run_method

    spec = json.loads(Path(spec_path).read_text())
    try:
        for source in spec.get("plugins", []):
            load_plugin(source)
        data, proto, test = load_context(spec)
        result = run_method(spec["method"], spec["level"], data, proto, test, spec["target"], spec["kind"],
                            spec["out_dir"], progress=spec["progress"], seed=spec.get("seed", 0))
    except JaxqcError as err:
        result = {"runs": [], "error": str(err)}
    except Exception as err:  # noqa: BLE001 - reported in the table, not a traceback
        result = {"runs": [], "error": f"{type(err).__name__}: {err}"}
    Path(spec["result"]).write_text(json.dumps(result, default=json_default))
    return 0


def run_in_worker(spec: dict) -> dict:
    """Run one method in a fresh process; its progress lines go to our stderr (stdout stays the table)."""
    with tempfile.TemporaryDirectory(prefix="jaxqc_compare_") as tmp:
        spec = {**spec, "result": str(Path(tmp) / "result.json")}
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec, default=json_default))
        proc = subprocess.Popen([sys.executable, "-m", "jaxqc.benchmark.worker", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        tail = b""
        while chunk := proc.stdout.read1(4096):
            sys.stderr.write(chunk.decode(errors="replace"))
            sys.stderr.flush()
            tail = (tail + chunk)[-2000:]
        code = proc.wait()
        if not Path(spec["result"]).exists():
            last = tail.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return {"runs": [], "error": f"worker process exited with status {code} before writing a result "
                                         f"(killed, e.g. out of memory?) {last[0]}".strip()}
        return json.loads(Path(spec["result"]).read_text())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
