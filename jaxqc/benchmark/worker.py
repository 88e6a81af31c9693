"""One method of a comparison in its own process, so that its peak memory is its own.

    python -m jaxqc.benchmark.worker SPEC.json

SPEC holds the data sources, units, protocol indices, the method, its budget level and the plugins that
registered it; the worker writes {"runs": [...], "error"?, "predictions"?} to SPEC["result"].
`peak_rss_mb` is the resident-set high-water mark (Linux VmHWM), reset before each run through
/proc/self/clear_refs; it includes the Python interpreter, the JAX runtime and the data set.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
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
    if spec.get("cpus") and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, spec["cpus"])
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


def lane_env(cpus) -> dict:
    """The environment of a worker that owns the CPUs `cpus` (None: all of them, nothing changed): BLAS
    thread pools sized to them."""
    env = dict(os.environ)
    if cpus:
        n = str(len(cpus))
        env.update(OMP_NUM_THREADS=n, OPENBLAS_NUM_THREADS=n, MKL_NUM_THREADS=n)
        if len(cpus) == 1:  # XLA's thread pools follow the affinity the worker sets; Eigen's threads off
            env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    return env


def relay(stream, prefix: str = "", every_s: float = 20.0) -> str:
    """Copy a worker's output to our stderr; returns its last non-empty line. Without a prefix the bytes
    pass as they are (progress lines redraw with \\r); with one (workers running side by side) every line
    gets the prefix and a redrawn progress line is shown at most every `every_s` seconds."""
    last, buf, shown = "", "", 0.0
    while chunk := stream.read1(4096):
        text = chunk.decode(errors="replace")
        if not prefix:
            sys.stderr.write(text)
        else:
            buf += text
            *parts, buf = _segments(buf)
            for seg, end in parts:
                if seg.strip() and (end == "\n" or time.monotonic() - shown > every_s):
                    sys.stderr.write(prefix + seg.strip() + "\n")
                    shown = time.monotonic() if end == "\r" else shown
        sys.stderr.flush()
        lines = [x for x in re.split(r"[\r\n]", text) if x.strip()]
        last = lines[-1].strip() if lines else last
    if prefix and buf.strip():
        sys.stderr.write(prefix + buf.strip() + "\n")
    return last


def _segments(buf: str):
    """[(segment, "\\r" or "\\n"), ..., unfinished]: a buffer cut after each carriage return or newline."""
    out, start = [], 0
    for m in re.finditer(r"[\r\n]", buf):
        out.append((buf[start:m.start()], m.group()))
        start = m.end()
    return [*out, buf[start:]]


def run_in_worker(spec: dict, prefix: str = "") -> dict:
    """Run one method in a fresh process (on spec["cpus"] when given); its progress lines go to our stderr,
    each with `prefix` (stdout stays the table)."""
    with tempfile.TemporaryDirectory(prefix="jaxqc_compare_") as tmp:
        spec = {**spec, "result": str(Path(tmp) / "result.json")}
        path = Path(tmp) / "spec.json"
        path.write_text(json.dumps(spec, default=json_default))
        proc = subprocess.Popen([sys.executable, "-m", "jaxqc.benchmark.worker", str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=lane_env(spec.get("cpus")))
        last = relay(proc.stdout, prefix)
        code = proc.wait()
        if not Path(spec["result"]).exists():
            return {"runs": [], "error": f"worker process exited with status {code} before writing a result "
                                         f"(killed, e.g. out of memory?) {last}".strip()}
        return json.loads(Path(spec["result"]).read_text())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
