"""Peak memory of `jaxqc data info` on large structures (issue 20, item 17: the overlapping-atoms check).

Writes synthetic sGDML-style npz files (a jittered cubic grid, 1.5 Å spacing, so no two atoms are closer
than ~1.1 Å; random H/C/N/O; energies with a small spread, forces with an RMS of ~20 kcal/mol/Å) and runs
`python -m jaxqc.cli data info FILE` on each in a subprocess under `/usr/bin/time -v`, the way a user
runs it (the command re-runs itself once with the huge-page malloc tunable; same process, same
measurement). A tiny file gives the baseline (Python + numpy + JAX imports). Before the fix the check
held every pair distance of up to 4096 frames at once: 18.9 GB on (a) and 5.2 GB on (b).

    python experiments/data_info_memory.py            # -> experiments/results/data_info_memory.json
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# ---- configuration (edit here) --------------------------------------------------------------
CASES = {  # name: (frames, atoms, peak RSS limit in MB)
    "baseline_1x9": (1, 9, None),
    "a_3x10000": (3, 10_000, 1000),
    "b_2000x200": (2000, 200, 500),
}
SPACING_ANG = 1.5
JITTER_ANG = 0.1
OUT = Path(__file__).parent / "results" / "data_info_memory.json"


def grid_molecules(n_frames: int, n_atoms: int, seed: int = 0) -> dict:
    """sGDML arrays (R [Å], z, E [kcal/mol], F [kcal/mol/Å]) of n_frames jittered grids of n_atoms atoms."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n_atoms ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n_atoms] * SPACING_ANG
    R = grid[None] + rng.uniform(-JITTER_ANG, JITTER_ANG, size=(n_frames, n_atoms, 3))
    z = rng.choice([1, 6, 7, 8], size=n_atoms)
    E = -100.0 * n_atoms + rng.normal(scale=5.0, size=(n_frames, 1))
    F = rng.normal(scale=20.0, size=(n_frames, n_atoms, 3))
    return {"R": R, "z": z, "E": E, "F": F}


def peak_rss_mb(path: Path) -> tuple[float, int, str]:
    """(peak RSS in MB, exit code, stderr tail) of `jaxqc data info path` under /usr/bin/time -v."""
    r = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-m", "jaxqc.cli", "data", "info", str(path)],
                       capture_output=True, text=True)
    kb = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    if kb is None:
        raise RuntimeError(f"no /usr/bin/time output: {r.stderr[-500:]}")
    # /usr/bin/time's exit code is the command's; its own report follows the command's stderr
    command_err = r.stderr.split("\tCommand being timed:")[0].strip()
    return int(kb.group(1)) / 1024, r.returncode, command_err[-300:]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (frames, atoms, limit) in CASES.items():
            path = Path(tmp) / f"{name}.npz"
            np.savez(path, **grid_molecules(frames, atoms))
            rss, code, err = peak_rss_mb(path)
            rows[name] = {"frames": frames, "atoms": atoms, "file_mb": round(path.stat().st_size / 2**20, 1),
                          "peak_rss_mb": round(rss, 1), "limit_mb": limit, "exit_code": code,
                          "passed": code == 0 and (limit is None or rss < limit)}
            if code != 0:
                rows[name]["stderr"] = err
            print(f"{name}: {frames} frames x {atoms} atoms: peak RSS {rss:.0f} MB (limit {limit} MB), "
                  f"exit {code}", flush=True)
    result = {"what": "peak RSS of `jaxqc data info` (/usr/bin/time -v), synthetic non-overlapping grids",
              "python": platform.python_version(), "machine": platform.machine(), "cases": rows,
              "passed": all(r["passed"] for r in rows.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}; {'all passed' if result['passed'] else 'FAILED'}")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["passed"] else 1)
