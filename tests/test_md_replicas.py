"""jaxqc.md.replicas: many Langevin trajectories at once, each checked for bonds leaving a range after every
step. Physics: the exact exit step of a bond pulled apart by a constant force, the sampled temperature of
harmonic wells, a sane force field keeping every replica, bad shapes refused."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqc.errors import JaxqcError
from jaxqc.md.replicas import langevin_replicas
from jaxqc.units import AMU_ANG2_FS2_KCAL_MOL


def test_the_exit_step_of_a_bond_pulled_apart_is_exact():
    """H2 at 0.74 Å, the two atoms pulled apart by a constant force f, no noise (0 K) and almost no friction:
    the separation is d0 + a t^2 (a = f / m per atom, velocity Verlet / BAOAB exact for constant forces), so the
    bond leaves [0.7, 2.5] Å at the first step after t* = sqrt((2.5 - d0) / a); t* is put at 200.5 steps."""
    d0, dt, m = 0.74, 0.5, 1.008
    t_star = 200.5 * dt
    a = (2.5 - d0) / t_star**2                      # Å/fs^2 of each atom: d = d0 + 2 (a t^2 / 2)
    f = a * m * AMU_ANG2_FS2_KCAL_MOL                # kcal/mol/Å on each atom

    def energy(params, molecules):  # -f |r_1 - r_0|: a constant force pulling the pair apart
        R = molecules.R
        return -f * jnp.linalg.norm(R[:, 1] - R[:, 0], axis=-1)

    R0 = np.array([[[0.0, 0.0, 0.0], [d0, 0.0, 0.0]]] * 2)
    out = langevin_replicas(energy, {}, np.array([1, 1]), R0, steps=400, dt_fs=dt, temperature_k=0.0,
                            friction_per_fs=1e-7, float64=True, block_steps=150)
    assert out["bonds"] == [[0, 1]]
    assert out["first_bad_step"] == [201, 201] and out["first_bad_ps"] == [pytest.approx(0.1005)] * 2
    assert out["steps"] == 300  # every replica had left: the run ends after that block
    assert all(w.startswith("a bond left [0.7, 2.5] Å") for w in out["why"])


def test_replicas_sample_the_temperature_of_harmonic_wells():
    """Eight H atoms in harmonic wells (period 10 fs), 4 replicas at 500 K, dt 1 fs: the kinetic temperature
    is BAOAB's T (1 - (omega dt)^2 / 4) = 450.7 K (test_md checks the same for one trajectory); no bonds
    are checked (none at the start), so no replica leaves."""
    omega = 2 * np.pi / 10.0
    k = 1.008 * AMU_ANG2_FS2_KCAL_MOL * omega**2

    def energy(params, molecules):
        return 0.5 * k * jnp.sum(molecules.R**2, axis=(-2, -1))

    R0 = np.zeros((4, 8, 3))  # every atom at its well's centre (pairs at 0 Å start outside the range: not checked)
    out = langevin_replicas(energy, {}, np.ones(8, int), R0, steps=20_000, dt_fs=1.0, temperature_k=500.0,
                            friction_per_fs=0.05, float64=True, block_steps=10_000)
    assert out["bonds"] == [] and out["first_bad_step"] == [-1] * 4 and out["steps"] == 20_000
    T = np.mean(out["mean_temperature_K"])
    assert abs(T - 500.0 * (1 - 0.25 * (omega * 1.0) ** 2)) < 15.0, T  # 500 K would be 49 K off
    assert out["replica_steps_per_s"] > 0 and out["compile_s"] > 0


def test_a_sane_force_field_keeps_every_replica_and_bad_shapes_are_refused():
    """Ethanol-like springs on every bond of a real geometry at 500 K: all bonds stay inside [0.7, 2.5] Å."""
    from jaxqc.data import io

    data = io.read("ethanol-xtb")
    Z, R_eq = data.Z[0], np.asarray(data.R[0], np.float64)
    d_eq = np.linalg.norm(R_eq[:, None] - R_eq[None], axis=-1)

    def energy(params, molecules):  # springs on every pair, 100 kcal/mol/Å^2, rest lengths of frame 0
        R = molecules.R
        d = jnp.sqrt(jnp.sum((R[:, :, None] - R[:, None]) ** 2, -1) + jnp.eye(9))
        return 50.0 * jnp.sum(jnp.triu((d - d_eq) ** 2, 1), axis=(-2, -1))

    out = langevin_replicas(energy, {}, Z, np.stack([data.R[0], data.R[1], data.R[2]]), steps=2000, dt_fs=0.5,
                            temperature_k=500.0, block_steps=1000)
    assert len(out["bonds"]) == 8 and out["first_bad_step"] == [-1, -1, -1]
    assert all(200.0 < t < 900.0 for t in out["mean_temperature_K"]), out["mean_temperature_K"]
    with pytest.raises(JaxqcError, match=r"start geometries must be \[replicas, 9, 3\], got \[9, 3\]"):
        langevin_replicas(energy, {}, Z, data.R[0], steps=10)


def test_md_stability_experiment_quick(tmp_path):
    """experiments/md_stability.py --quick: a small sGDML of ethanol-xtb, 2 replicas x 0.2 ps at 500 K, NVE 0.1 ps."""
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "experiments" / "md_stability.py"
    spec = importlib.util.spec_from_file_location("md_stability", path)
    exp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exp)
    res = exp.main(["--quick", "--out", str(tmp_path / "s.json")])
    row = res["models"]["sgdml"]
    assert row["langevin"]["steps"] == 400 and row["langevin"]["fraction_failed"] == 0.0
    assert len(row["langevin"]["bonds"]) == 8 and row["nve"]["steps"] == 200 and row["nve"]["stopped"] is None
    assert abs(row["nve"]["drift_kcal_mol_ps_atom"]) < 1.0
    assert json.loads((tmp_path / "s.json").read_text())["models"].keys() == {"sgdml"}
