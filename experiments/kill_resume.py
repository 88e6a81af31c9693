"""kill -9 a real `jaxqc train` at random moments and resume it: the result must be the uninterrupted one.

One uninterrupted run gives the reference (every metrics.jsonl row but its wall time, and the final
checkpoint and model arrays). A first uninterrupted run fills JAX's persistent compilation cache (in the
work folder; the killed runs only read it), so that a run spends most of its time training rather than
compiling; the reference is a second uninterrupted run, which must equal the first. Each trial starts
the same run in a fresh directory, kills it with SIGKILL at a moment drawn (seeded) uniformly over the
reference's wall time (start-up included), then continues it with `--resume`
(or starts it again when the kill came before the first checkpoint: what a user would do) until it
finishes. A trial passes when the metrics rows and the final arrays are bit-for-bit the reference's and
the run directory holds nothing else (no `.*.tmp` from the killed write, no `.lock`).

    python experiments/kill_resume.py                 # 20 trials, ~15 min on 2 (shared) CPU cores
    python experiments/kill_resume.py --trials 2 --quick
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "experiments" / "results" / "kill_resume.json"

# the run: SchNet on the built-in ethanol-xtb frames, energies and forces, a checkpoint every ~2 s
RUN = dict(n_train=48, n_valid=16, features=16, interactions=2, batch_size=8, epochs=300, checkpoint_every_s=2.0)
QUICK = dict(RUN, n_train=16, n_valid=8, features=8, interactions=1, epochs=4)
EXPECTED = {"config.json", "resolved_config.json", "checkpoint.npz", "model.npz", "metrics.jsonl", "metrics.csv",
            "learning_curve.png"}


def train_argv(run: dict, out: Path, *extra) -> list:
    return [sys.executable, "-m", "jaxqc.cli", "train", "schnet", "--data", "ethanol-xtb", "--forces",
            "--n-train", str(run["n_train"]), "--n-valid", str(run["n_valid"]), "--features", str(run["features"]),
            "--interactions", str(run["interactions"]), "--batch-size", str(run["batch_size"]),
            "--epochs", str(run["epochs"]), "--set", f"budget.train.checkpoint_every_s={run['checkpoint_every_s']}",
            *extra, "--out", str(out)]


ENV = dict(os.environ)


def compile_cache(folder: Path) -> None:
    """Every run of this script shares one persistent compilation cache in `folder`."""
    ENV.update(JAX_COMPILATION_CACHE_DIR=str(folder), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")


def run_to_end(argv: list, log) -> int:
    return subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV).returncode


def start_and_kill(argv: list, after_s: float, log) -> int:
    """Start argv, SIGKILL it after `after_s` seconds (if still running); its return code (-9 when killed)."""
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=ENV)
    try:
        proc.wait(timeout=after_s)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return proc.returncode


def rows(run_dir: Path) -> list:
    """metrics.jsonl without the wall-clock column (the only thing allowed to differ)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append({k: v for k, v in json.loads(line).items() if k != "time_s"})
        except json.JSONDecodeError:
            out.append({"unreadable": line})
    return out


def arrays(run_dir: Path) -> dict:
    """Every array of the final checkpoint (the full training state) and model (the best parameters)."""
    out = {}
    for name in ("checkpoint.npz", "model.npz"):
        with np.load(run_dir / name, allow_pickle=False) as npz:
            out.update({f"{name}:{k}": npz[k] for k in npz.files if k != "header"})
    return out


def same_arrays(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def strays(run_dir: Path) -> list:
    """Files in the run directory that a finished run does not have (temporary files, a lock file)."""
    return sorted(p.name for p in run_dir.iterdir() if p.name not in EXPECTED)


def checkpoint_epoch(run_dir: Path) -> int | None:
    try:
        with np.load(run_dir / "checkpoint.npz", allow_pickle=False) as npz:
            return json.loads(str(npz["header"]))["epoch"] + 1
    except (OSError, KeyError, ValueError):
        return None


def trial(k: int, run: dict, kill_s: float, work: Path, ref_rows: list, ref_arrays: dict) -> dict:
    run_dir = work / f"trial_{k:02d}"
    t0 = time.perf_counter()
    with open(work / f"trial_{k:02d}.log", "w") as log:
        rc_killed = start_and_kill(train_argv(run, run_dir), kill_s, log)
        at_kill = {"rows": len(rows(run_dir)), "checkpoint_epoch": checkpoint_epoch(run_dir),
                   "files": sorted(p.name for p in run_dir.iterdir()) if run_dir.exists() else []}
        if (run_dir / "checkpoint.npz").exists():
            how = ["--resume"]
        elif (run_dir / "model.npz").exists():
            how = ["--overwrite"]  # killed between the first model and the first checkpoint: start again
        else:
            how = []  # killed before anything was kept
        rc = run_to_end(train_argv(run, run_dir, *how), log) if rc_killed != 0 else 0
    ok = rc == 0 and (run_dir / "checkpoint.npz").exists()
    return {"trial": k, "kill_after_s": round(kill_s, 2), "killed": rc_killed == -signal.SIGKILL,
            "epochs_logged_at_kill": at_kill["rows"], "checkpoint_epoch_at_kill": at_kill["checkpoint_epoch"],
            "files_at_kill": at_kill["files"], "continued_with": " ".join(how) or "a fresh start",
            "resumed_ok": ok, "metrics_equal": ok and rows(run_dir) == ref_rows,
            "params_equal": ok and same_arrays(arrays(run_dir), ref_arrays),
            "stray_files": strays(run_dir) if run_dir.exists() else [],
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    p.add_argument("--quick", action="store_true", help="a smaller run (CI)")
    p.add_argument("--work", default=None, help="folder for the runs (default: a temporary one, removed)")
    p.add_argument("--out", default=str(OUT))
    p.add_argument("--no-compile-cache", action="store_true", help="every run compiles (a kill then lands "
                   "in the compilation more often than in the training)")
    args = p.parse_args(argv)
    run = QUICK if args.quick else RUN
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="jaxqc_kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    if not args.no_compile_cache:
        compile_cache(work / "jax_cache")
    t_all = time.perf_counter()
    durations = []
    for name in ("first", "reference"):
        t0 = time.perf_counter()
        with open(work / f"{name}.log", "w") as log:
            if run_to_end(train_argv(run, work / name), log) != 0:
                raise SystemExit(f"the {name} run failed: see {work / f'{name}.log'}")
        durations.append(time.perf_counter() - t0)
    duration = durations[-1]
    ref_rows, ref_arrays = rows(work / "reference"), arrays(work / "reference")
    first_equal = rows(work / "first") == ref_rows and same_arrays(arrays(work / "first"), ref_arrays)
    rng = np.random.default_rng(args.seed)
    kills = rng.uniform(0.0, duration, size=args.trials)
    trials = []
    for k, kill_s in enumerate(kills):
        trials.append(trial(k, run, float(kill_s), work, ref_rows, ref_arrays))
        t = trials[-1]
        print(f"trial {k:2d}: killed after {t['kill_after_s']:5.1f} s (epochs logged {t['epochs_logged_at_kill']}, "
              f"checkpoint epoch {t['checkpoint_epoch_at_kill']}), {t['continued_with']}: resumed "
              f"{'ok' if t['resumed_ok'] else 'FAILED'}, metrics {'equal' if t['metrics_equal'] else 'DIFFER'}, "
              f"params {'equal' if t['params_equal'] else 'DIFFER'}, strays {t['stray_files'] or 'none'}",
              flush=True)
    passed = sum(t["resumed_ok"] and t["metrics_equal"] and t["params_equal"] and not t["stray_files"]
                 for t in trials)
    last = ref_rows[-1]
    train_s = json.loads((work / "reference" / "metrics.jsonl").read_text().splitlines()[-1])["time_s"]
    result = {"run": run, "command": " ".join(train_argv(run, Path("RUN"))[1:]),
              "compile_cache": not args.no_compile_cache,
              "reference": {"duration_s": round(duration, 1), "training_s": round(train_s, 1),
                            "first_run_s": round(durations[0], 1),
                            "first_run_equal": first_equal, "epochs": len(ref_rows),
                            "final_valid_energy_mae": last["valid_energy_mae"],
                            "final_valid_forces_mae": last.get("valid_forces_mae")},
              "seed": args.seed, "trials": trials, "passed": passed, "n_trials": len(trials),
              "killed_mid_run": sum(t["killed"] for t in trials),
              "killed_while_training": sum(0 < t["epochs_logged_at_kill"] < len(ref_rows) for t in trials),
              "temp_files_left_by_kills": sum(any(f.endswith(".tmp") for f in t["files_at_kill"]) for t in trials),
              "wall_s": round(time.perf_counter() - t_all, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"{passed}/{len(trials)} trials resumed to the bit-exact reference metrics and parameters with no stray "
          f"files ({result['killed_mid_run']} killed mid-run, {result['killed_while_training']} of them between the "
          f"first and the last epoch, {result['temp_files_left_by_kills']} left a temporary "
          f"file that the resume removed); reference run {duration:.0f} s "
          f"({'equal to' if first_equal else 'DIFFERS FROM'} the first, compiling run), all {result['wall_s']:.0f} s; "
          f"wrote {args.out}")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
