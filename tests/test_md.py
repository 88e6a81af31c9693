"""Molecular dynamics: Maxwell–Boltzmann initial velocities, velocity-Verlet energy conservation and its
second-order convergence, the Langevin thermostat's temperature, gradients through a trajectory against
finite differences (float64), the ASE calculator (units, optimisation, ASE's own MD), and `jaxqc md`
end to end with its one-line errors."""
import dataclasses
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import write_xyz

from jaxqc.cli import main
from jaxqc.data import io
from jaxqc.elements import SYMBOLS, masses_amu
from jaxqc.kernels import gdml
from jaxqc.md import integrators as md
from jaxqc.md.models import cast_params, load_potential
from jaxqc.md.run import MDConfig, read_log_csv, run_md
from jaxqc.nn import model as nnmodel
from jaxqc.potential import energy_and_forces_fn, save_model
from jaxqc.units import AMU_ANG2_FS2_KCAL_MOL, EV_KCAL_MOL, KB_KCAL_MOL_K

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ethanol():
    return io.read("ethanol-xtb")


@pytest.fixture(scope="module")
def model_file(ethanol, tmp_path_factory):
    """A small sGDML force field of ethanol-xtb (30 frames; sigma 10, lambda 1e-6: smooth and well conditioned)."""
    config = gdml.GDMLConfig(symmetric=True, sigmas=(10.0,), lam=1e-6)
    model = gdml.train_gdml(ethanol.subset(np.arange(300)), config, n_train=30, n_valid=50, seed=0)
    path = tmp_path_factory.mktemp("md") / "sgdml.npz"
    gdml.save_gdml(model, path)
    return path


@pytest.fixture(scope="module")
def potential(model_file):
    return load_potential(model_file)


def save_network(path: Path, data, target="energy", features=16) -> Path:
    """An untrained tiny SchNet (statistics from 20 frames) saved as a run directory, as training writes it."""
    config = nnmodel.config_for("schnet", features=features, interactions=1, n_rbf=12)
    idx = np.arange(20)
    ref = nnmodel.atom_reference(data, "energy", config.max_z)
    stats = nnmodel.fit_stats(data, idx, "energy", ref, use_forces=True, readout="sum")
    params = nnmodel.init_params("schnet", config, jax.random.PRNGKey(0), data.molecules(idx[:2]), stats)
    path.mkdir(parents=True, exist_ok=True)
    save_model(path / "model.npz", "schnet", jax.device_get(params),
               {"kind": "schnet", "target": target, "model": dataclasses.asdict(config)},
               {"dataset_md5": data.md5, "dataset_name": data.meta.get("name"), "train_idx": idx}, {"E": "kcal/mol"})
    return path


@pytest.fixture(scope="module")
def network_dir(ethanol, tmp_path_factory):
    return save_network(tmp_path_factory.mktemp("net") / "run", ethanol)


def initial(ethanol, seed=1, T=300.0, frame=0):
    Z = ethanol.Z[frame]
    m = masses_amu(Z)
    with jax.enable_x64(True):
        v0 = np.asarray(md.maxwell_boltzmann(jax.random.PRNGKey(seed), m, T, jnp.float64))
    return Z, ethanol.R[frame], v0, m


# ---- velocities and temperature -------------------------------------------------------------------
def test_maxwell_boltzmann_has_no_net_momentum_and_the_right_temperature(ethanol, x64):
    m = masses_amu(ethanol.Z[0])
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    v = jax.vmap(lambda k: md.maxwell_boltzmann(k, m, 300.0, jnp.float64))(keys)  # [4000, 9, 3] Å/fs
    assert v.dtype == jnp.float64
    np.testing.assert_allclose(np.einsum("a,kai->ki", m, np.asarray(v)), 0.0, atol=1e-14)  # amu Å/fs
    T = np.asarray(md.temperature_k(v, m))
    sem = T.std() / np.sqrt(len(T))  # ~300 sqrt(2 / 24) / sqrt(4000) = 1.4 K
    assert abs(T.mean() - 300.0) < 4 * sem and sem < 2.0, (T.mean(), sem)
    assert abs(T.std() / 300.0 - np.sqrt(2 / 24)) < 0.02  # chi-square with 3A - 3 = 24 degrees of freedom
    ke = 0.5 * AMU_ANG2_FS2_KCAL_MOL * np.sum(m[:, None] * np.asarray(v[0]) ** 2)  # units by hand
    np.testing.assert_allclose(float(md.kinetic_energy(v[0], m)), ke, rtol=1e-12)
    np.testing.assert_allclose(float(md.temperature_k(v[0], m)), 2 * ke / (24 * KB_KCAL_MOL_K), rtol=1e-12)


# ---- NVE ---------------------------------------------------------------------------------------------
def test_velocity_verlet_conserves_energy_and_momentum(ethanol, potential):
    energy, params, _ = potential
    Z, R, v0, m = initial(ethanol)
    r = run_md(energy, params, Z, R, MDConfig(steps=2000, dt_fs=0.5, write_every=5), v0=v0)  # 1 ps, float64
    assert r.R.dtype == np.float64 and r.stopped is None and r.steps_done == 2000 and len(r.step) == 401
    tot, pot = r.log["total_kcal_mol"], r.log["potential_kcal_mol"]
    assert np.std(tot) < 0.03 * np.std(pot) and np.std(tot) < 0.1 * KB_KCAL_MOL_K * 300, (np.std(tot), np.std(pot))
    assert abs(tot[-1] - tot[0]) < 0.05  # kcal/mol over 1 ps (kT = 0.6)
    np.testing.assert_allclose(np.einsum("a,kai->ki", m, r.v), 0.0, atol=1e-9)  # no net force, no drift
    r32 = run_md(energy, params, Z, R, MDConfig(steps=2000, dt_fs=0.5, write_every=5, float64=False), v0=v0)
    assert r32.R.dtype == np.float64  # host arrays; the integration ran in float32:
    assert np.std(r32.log["total_kcal_mol"]) < 0.05 * np.std(pot)
    assert not np.array_equal(r32.R[-1], r.R[-1])


def test_velocity_verlet_is_second_order(ethanol, potential):
    """Halving dt shrinks the total-energy fluctuation ~4x (0.2 -> 0.1 fs, 100 fs, float64)."""
    energy, params, _ = potential
    Z, R, v0, _ = initial(ethanol)
    std = {}
    for dt in (0.2, 0.1):
        r = run_md(energy, params, Z, R, MDConfig(steps=int(round(100 / dt)), dt_fs=dt, write_every=1), v0=v0)
        std[dt] = np.std(r.log["total_kcal_mol"])
    ratio = std[0.2] / std[0.1]
    assert 3.0 < ratio < 5.5, (std, ratio)


# ---- NVT ---------------------------------------------------------------------------------------------
def block_mean_and_sem(x, n_blocks=20):
    """Mean and its standard error from block averages (the samples are correlated)."""
    blocks = x[: len(x) // n_blocks * n_blocks].reshape(n_blocks, -1).mean(1)
    return x.mean(), blocks.std(ddof=1) / np.sqrt(n_blocks)


def test_langevin_samples_the_target_temperature_harmonic():
    """Eight H atoms in isotropic harmonic wells (period 10 fs), BAOAB at 500 K from rest: the potential
    energy gives the target temperature exactly (BAOAB samples harmonic configurations without bias),
    the full-step kinetic temperature is T (1 - (omega dt)^2 / 4), BAOAB's known velocity bias."""
    omega = 2 * np.pi / 10.0  # 1/fs
    k = 1.008 * AMU_ANG2_FS2_KCAL_MOL * omega**2  # kcal/mol/Å²

    def energy(params, molecules):
        return 0.5 * k * jnp.sum(molecules.R**2, axis=(-2, -1))

    dof, dt, T0 = 21, 1.0, 500.0  # the centre of mass stays at the origin: 3A - 3 thermostatted modes
    cfg = MDConfig(steps=50_000, dt_fs=dt, ensemble="nvt", temperature_k=T0, friction_per_fs=0.05, write_every=5)
    r = run_md(energy, {}, np.ones(8, int), np.zeros((8, 3)), cfg, v0=np.zeros((8, 3)))
    T_kin, sem_kin = block_mean_and_sem(r.log["temperature_K"][200:])
    T_conf, sem_conf = block_mean_and_sem(2 * r.log["potential_kcal_mol"][200:] / (dof * KB_KCAL_MOL_K))
    assert sem_kin < 8 and sem_conf < 8, (sem_kin, sem_conf)
    assert abs(T_conf - T0) < 4 * sem_conf, (T_conf, sem_conf)
    expected_kin = T0 * (1 - (omega * dt) ** 2 / 4)  # 450.7 K, far outside 4 sem of 500 K
    assert abs(T_kin - expected_kin) < 4 * sem_kin, (T_kin, expected_kin, sem_kin)


def test_langevin_reaches_the_target_temperature_ethanol(ethanol, potential):
    energy, params, _ = potential
    Z, R, _, m = initial(ethanol)
    cfg = MDConfig(steps=60_000, dt_fs=0.25, ensemble="nvt", temperature_k=500.0, friction_per_fs=0.05,
                   write_every=20, seed=3)
    r = run_md(energy, params, Z, R, cfg, v0=np.zeros((9, 3)))  # starts cold: the thermostat must heat it
    assert r.log["temperature_K"][0] == 0.0
    T, sem = block_mean_and_sem(r.log["temperature_K"][200:])  # after 1 ps (20 friction times)
    assert sem < 12.0 and abs(T - 500.0) < 4 * sem + 0.01 * 500, (T, sem)  # 1%: BAOAB's O(dt^2) kinetic bias
    np.testing.assert_allclose(np.einsum("a,kai->ki", m, r.v), 0.0, atol=1e-9)  # noise has no net momentum


# ---- differentiable simulation ------------------------------------------------------------------
def test_gradients_through_a_trajectory_match_finite_differences(ethanol, potential, x64):
    """d<r_CO>/d(params) and d<r_CO>/dR0 of the mean C-O bond length over 50 velocity-Verlet steps."""
    energy, params, _ = potential
    Z, R0, v0, m = initial(ethanol)
    p = cast_params(params, jnp.float64)
    init_fn, step_fn = md.nve(md.molecule_force_field(energy, Z), m, 0.5)

    @jax.jit
    def mean_bond(p, R0):
        traj = md.simulate(step_fn, p, init_fn(p, R0, v0), 50)[1]
        return jnp.mean(jnp.linalg.norm(traj.R[:, 1] - traj.R[:, 2], axis=-1))  # C1-O [Å]

    gp, gR = jax.grad(mean_bond, argnums=(0, 1))(p, jnp.asarray(R0))
    rng = np.random.default_rng(0)
    for name in ("beta", "centres", "sigma"):
        d = rng.normal(size=np.shape(p[name])) * np.abs(np.asarray(p[name]))  # relative perturbation
        h = 1e-6
        fd = (mean_bond({**p, name: p[name] + h * d}, R0) - mean_bond({**p, name: p[name] - h * d}, R0)) / (2 * h)
        np.testing.assert_allclose(float(jnp.vdot(gp[name], d)), float(fd), rtol=1e-5, err_msg=name)
    assert float(jnp.abs(gp["c"])) == 0.0  # a constant energy shift moves nothing
    d = rng.normal(size=R0.shape)
    h = 1e-6
    fd = (mean_bond(p, R0 + h * d) - mean_bond(p, R0 - h * d)) / (2 * h)
    np.testing.assert_allclose(float(jnp.vdot(gR, d)), float(fd), rtol=1e-5)


# ---- ASE calculator -------------------------------------------------------------------------------
def with_calc(atoms, calc):
    atoms.calc = calc
    return atoms


def test_ase_calculator_matches_jaxqc_and_drives_ase(ethanol, model_file, network_dir, tmp_path):
    from ase import Atoms
    from ase.md.verlet import VelocityVerlet
    from ase.optimize import BFGS
    from ase.units import fs
    from ase.vibrations import Vibrations

    from jaxqc.md.calculator import JaxqcCalculator
    from jaxqc.train.run import load_network

    frames = np.array([0, 500, 2000])
    E_ref, F_ref = gdml.predict_dataset(gdml.load_gdml(model_file), ethanol.subset(frames))
    _, _, net_energy, net_params, _ = load_network(network_dir)
    calc = JaxqcCalculator(model_file)
    net_calc = JaxqcCalculator(network_dir)
    net_ef = jax.jit(energy_and_forces_fn(net_energy))
    for k, f in enumerate(frames):
        atoms = with_calc(Atoms(numbers=ethanol.Z[f], positions=ethanol.R[f]), calc)
        np.testing.assert_allclose(atoms.get_potential_energy() * EV_KCAL_MOL, E_ref[k], rtol=1e-12)
        np.testing.assert_allclose(atoms.get_forces() * EV_KCAL_MOL, F_ref[k], atol=1e-9)
        atoms.calc = net_calc
        E, F = net_ef(net_params, ethanol.molecules([f]))  # float32 prediction
        np.testing.assert_allclose(atoms.get_potential_energy() * EV_KCAL_MOL, float(E[0]), rtol=1e-5)
        np.testing.assert_allclose(atoms.get_forces() * EV_KCAL_MOL, np.asarray(F[0]), atol=2e-3)

    atoms = with_calc(Atoms(numbers=ethanol.Z[0], positions=ethanol.R[0]), calc)  # BFGS to a minimum
    e0 = atoms.get_potential_energy()
    assert BFGS(atoms, logfile=None).run(fmax=0.001, steps=500)
    assert atoms.get_potential_energy() < e0 and np.abs(atoms.get_forces()).max() < 0.001
    vib = Vibrations(atoms, name=str(tmp_path / "vib"), delta=0.005)  # harmonic analysis at the minimum
    vib.run()
    f = vib.get_frequencies()  # cm^-1, imaginary as complex
    assert len(f) == 27 and np.all(np.abs(f[:6]) < 20)  # translations and rotations
    assert np.all(np.abs(f[6:].imag) == 0) and f[6].real > 150 and 3000 < f[-1].real < 4000  # O-H stretch on top

    # ASE's velocity Verlet with the calculator retraces jaxqc's own NVE trajectory (units of mass and time)
    Z, R0, v0, m = initial(ethanol)
    atoms = with_calc(Atoms(numbers=Z, positions=R0, masses=m), calc)
    atoms.set_velocities(v0 / fs)
    VelocityVerlet(atoms, timestep=0.5 * fs).run(20)
    energy, params, _ = load_potential(model_file)
    r = run_md(energy, params, Z, R0, MDConfig(steps=20, dt_fs=0.5, write_every=20), v0=v0)
    np.testing.assert_allclose(atoms.positions, r.R[-1], atol=1e-8)  # ASE's constants: CODATA 2014, jaxqc's 2018
    np.testing.assert_allclose(atoms.get_velocities() * fs, r.v[-1], rtol=1e-5, atol=1e-9)


# ---- CLI ----------------------------------------------------------------------------------------------
def test_cli_md_end_to_end(model_file, network_dir, tmp_path, capsys):
    import ase.io

    out = tmp_path / "nve" / "traj.extxyz"
    code = main(["md", str(model_file), "--start", "ethanol-xtb", "--frame", "7", "--steps", "400", "--dt-fs", "0.5",
                 "--temperature-k", "300", "--ensemble", "nve", "--write-every", "20", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "steps/s" in captured.err and "NVE 400 steps" in captured.out
    frames = ase.io.read(out, index=":")
    log = read_log_csv(out.with_suffix(".csv"))
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(frames) == 21 and list(log["step"]) == list(range(0, 401, 20))
    np.testing.assert_allclose(log["time_fs"], log["step"] * 0.5)
    np.testing.assert_allclose([a.get_potential_energy() * EV_KCAL_MOL for a in frames], log["potential_kcal_mol"],
                               rtol=1e-9)
    np.testing.assert_allclose([a.get_kinetic_energy() * EV_KCAL_MOL for a in frames], log["kinetic_kcal_mol"],
                               rtol=1e-6)
    np.testing.assert_allclose(frames[0].positions, io.read("ethanol-xtb").R[7])
    assert np.ptp(log["total_kcal_mol"]) < 0.1 and summary["stopped"] is None and summary["steps_per_s"] > 0
    assert summary["kind"] == "sgdml" and summary["config"]["float64"] is True
    assert out.with_suffix(".png").stat().st_size > 1000

    out2 = tmp_path / "nvt.extxyz"  # an UNTRAINED network: its random forces may pull atoms together, which
    # the MD guards rightly stop (tests/test_md_guards.py); here only the network / float32 / NVT path is checked
    code = main(["md", str(network_dir), "--start", "ethanol-xtb", "--steps", "100", "--dt-fs", "0.5",
                 "--ensemble", "nvt", "--friction-per-fs", "0.1", "--float32", "--seed", "4", "--quiet",
                 "--no-guards", "--out", str(out2)])
    captured = capsys.readouterr()
    assert code == 0 and captured.err == "", captured.err
    assert len(ase.io.read(out2, index=":")) == 11
    assert json.loads(out2.with_suffix(".json").read_text())["config"]["float64"] is False


@pytest.fixture(scope="module")
def bad_inputs(ethanol, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    Zs = [SYMBOLS[z] for z in ethanol.Z[0]]
    write_xyz(tmp / "methane.xyz", ["C", "H", "H", "H", "H"],
              [[0, 0, 0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63], [-0.63, 0.63, -0.63], [0.63, -0.63, -0.63]])
    order = [2, 0, 1, 3, 4, 5, 6, 7, 8]
    write_xyz(tmp / "reordered.xyz", [Zs[i] for i in order], ethanol.R[0][order])  # the same molecule: mapped
    write_xyz(tmp / "relabelled.xyz", [Zs[i] for i in order], ethanol.R[0])  # O where a C is: no mapping
    write_xyz(tmp / "with_n.xyz", ["N" if s == "O" else s for s in Zs], ethanol.R[0])
    save_model(tmp / "krr.npz", "krr", {"alpha": np.zeros(3)}, {}, {}, {})
    save_network(tmp / "homo", ethanol, target="HOMO", features=8)
    return tmp


@pytest.mark.parametrize("case,expect", [
    ("no_model", "no such model file"),
    ("no_start", "no such file"),
    ("krr", "a krr model of the property 'U0', not a potential energy"),
    ("property_net", "property 'HOMO', not a potential energy"),
    ("atom_count", "5 atoms (CH4); the sgdml model is for 9 atoms (C2OH6)"),
    ("atom_order", "no consistent mapping of these atoms (OC2H6) onto it exists"),
    ("unknown_element", "element(s) N not in the model's training data (elements H C O)"),
    ("dt", "--dt-fs must be positive, got 0"),
    ("steps", "--steps must be >= 1, got -5"),
    ("frame", "--frame 5000: ethanol-xtb has 3000 frame(s)"),
])
def test_cli_md_errors_are_one_line(case, expect, model_file, network_dir, bad_inputs, tmp_path, capsys):
    model, start, extra = str(model_file), "ethanol-xtb", []
    if case == "no_model":
        model = str(tmp_path / "missing.npz")
    elif case == "no_start":
        start = str(tmp_path / "missing.xyz")
    elif case == "krr":
        model = str(bad_inputs / "krr.npz")
    elif case == "property_net":
        model = str(bad_inputs / "homo")
    elif case == "atom_count":
        start = str(bad_inputs / "methane.xyz")
    elif case == "atom_order":
        start = str(bad_inputs / "relabelled.xyz")
    elif case == "unknown_element":
        model, start = str(network_dir), str(bad_inputs / "with_n.xyz")
    elif case == "frame":
        extra = ["--frame", "5000"]
    steps = "-5" if case == "steps" else "10"
    dt = "0" if case == "dt" else "0.5"
    out = tmp_path / "t.extxyz"
    code = main(["md", model, "--start", start, "--steps", steps, "--dt-fs", dt, "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert code == 2 and expect in err, err
    assert err.count("\n") == 1 and err.startswith("jaxqc: error:")
    assert not out.exists()


def test_cli_md_stops_at_the_first_non_finite_step(monkeypatch, tmp_path, capsys):
    """A potential that is NaN beyond an H-H distance of 2.5 Å, with a constant force pulling the atoms
    apart: the run stops, names the step and keeps the good frames."""
    import ase.io

    import jaxqc.md.models

    def energy(params, molecules):
        d = jnp.linalg.norm(molecules.R[:, 0] - molecules.R[:, 1], axis=-1)  # [batch] Å
        return -params["pull"] * d + jnp.sqrt(2.5 - d)  # kcal/mol; NaN once d > 2.5 Å

    info = {"kind": "test", "path": "nan-model", "z": np.array([1, 1]), "elements": [1], "max_z": 1,
            "description": "test potential"}
    monkeypatch.setattr(jaxqc.md.models, "load_potential",
                        lambda path: (energy, {"pull": np.float64(20.0)}, info))
    write_xyz(tmp_path / "h2.xyz", ["H", "H"], [[0, 0, 0], [0.74, 0, 0]])
    out = tmp_path / "h2.extxyz"
    with jax.debug_nans(False):
        code = main(["md", "nan-model", "--start", str(tmp_path / "h2.xyz"), "--steps", "1000", "--dt-fs", "0.5",
                     "--temperature-k", "0", "--write-every", "5", "--quiet", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "non-finite positions or energy at step" in err and err.count("\n") == 1, err
    step = int(err.split("at step ")[1].split()[0])
    frames = ase.io.read(out, index=":")
    assert 10 < step < 1000 and len(frames) == (step - 1) // 5 + 1
    assert all(np.isfinite(a.positions).all() for a in frames)
    d = [np.linalg.norm(a.positions[0] - a.positions[1]) for a in frames]
    assert d[-1] <= 2.5 and np.all(np.diff(d) > 0)


# ---- experiments in their CI size ----------------------------------------------------------------------
def load_experiment(name):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_md_differentiable_experiment_quick(tmp_path):
    res = load_experiment("md_differentiable").main(["--quick", "--out", str(tmp_path / "d.json")])
    assert res["steps"] == 50 and res["max_rel_error"] < 1e-4
    assert {c["leaf"] for c in res["checks"]} >= {"['beta']", "['centres']", "['sigma']", "R0"}


@pytest.mark.slow
def test_md_energy_conservation_experiment_quick(tmp_path):
    res = load_experiment("md_energy_conservation").main(["--quick", "--duration-ps", "0.2", "--peer-steps", "10",
                                                           "--out", str(tmp_path / "e")])
    sgdml_runs = [r for r in res["runs"] if r["model"] == "sgdml"]
    assert [r["dt_fs"] for r in sgdml_runs] == [0.1, 0.2, 0.5] and all(r["stopped"] is None for r in sgdml_runs)
    fl = [r["fluctuation_std_kcal_mol"] for r in sgdml_runs]
    assert fl[0] < fl[1] < fl[2] and 1.5 < sgdml_runs[0]["fluctuation_loglog_slope"] < 2.5
    assert res["speed"][0]["ratio_jaxqc_scan_over_ase_jaxqc"] > 1
    peer = res["speed"][0]["ase_sgdml_calculator"]
    assert "steps_per_s" in peer or peer["missing"]
    assert (tmp_path / "e.json").exists() and (tmp_path / "e.png").exists()
