"""SchNOrb and the AO-basis machinery it rests on: Wigner-D of PySCF's real spherical AOs against PySCF itself,
H and S of a rotated molecule against PySCF recomputed there, eigh of stored matrices against PySCF's orbital
energies, the covariant variant's blocks rotating with D, a tiny model that learns, and bad input."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxqc import orbitals as orb
from jaxqc.data import hamiltonian, io
from jaxqc.data import registry as data_registry
from jaxqc.errors import DataError, JaxqcError

pyscf = pytest.importorskip("pyscf")

N_OVERFIT = 400  # optimiser steps of the overfitting test (one 4-frame batch per epoch)
WATER = (np.array([8, 1, 1]), np.array([[0.0, 0.0, 0.1173], [0.0, 0.7572, -0.4692], [0.0, -0.7572, -0.4692]]))


@pytest.fixture(scope="module")
def water():
    return data_registry.load("water-dft-hamiltonian")


def rotation(seed: int, inversion: bool = True) -> np.ndarray:
    """A random proper rotation times -1 (a rotation with inversion) unless inversion=False (numpy, float64)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))[None, :]
    q = q * np.sign(np.linalg.det(q))
    return -q if inversion else q


def test_wigner_d_moves_pyscf_ao_values(x64):
    """phi(Q r) = D(Q) phi(r) for PySCF's own s, p, d functions (their values at random points), with inversion."""
    from pyscf import gto

    mol = gto.M(atom=[("Ne", (0, 0, 0))], basis={"Ne": [[0, [1.0, 1.0]], [1, [1.0, 1.0]], [2, [1.0, 1.0]]]},
                unit="Bohr", verbose=0)
    pts = np.random.default_rng(0).normal(size=(30, 3))
    Q = rotation(1)
    assert np.linalg.det(Q) < 0
    D = np.asarray(orb.ao_rotation((0, 1, 2), jnp.asarray(Q)))
    # AO values at Q r: phi(Q^-1 applied to the function) -- a function f rotated by Q is f(Q^T r)
    rotated = mol.eval_gto("GTOval_sph", pts @ Q)          # phi(Q^T r) for each point r
    assert np.abs(rotated - mol.eval_gto("GTOval_sph", pts) @ D).max() < 1e-12


def test_rotated_molecule_hamiltonian_matches_pyscf(x64):
    """H(Q R) = D H(R) D^T and S likewise against PySCF recomputed on the rotated geometry (Hartree-Fock: no
    DFT grid, so the only difference is numerical), to 1e-6 Ha; a rotation with inversion."""
    Z, R = WATER
    ref = hamiltonian.label_frame(Z, R, "HF/def2-SVP", forces=False)
    Q = rotation(3)
    rot = hamiltonian.label_frame(Z, R @ Q.T, "HF/def2-SVP", forces=False)
    layout = orb.AOLayout(basis="def2-SVP", shells=tuple(sorted((z, tuple(ls)) for z, ls in ref["shells"].items())))
    D = np.asarray(orb.ao_rotation(layout.molecule_shells(Z), jnp.asarray(Q)))
    assert np.abs(D @ ref["S"] @ D.T - rot["S"]).max() < 1e-10
    assert np.abs(D @ ref["H"] @ D.T - rot["H"]).max() < 1e-6
    # the guess Kohn-Sham matrix (schnorb's baseline="sad") rotates the same way
    assert np.abs(D @ ref["H0"] @ D.T - rot["H0"]).max() < 1e-6
    assert np.abs(ref["H0"] - ref["H"]).max() > 1e-3   # and it is not the converged matrix
    assert abs(ref["E"] - rot["E"]) < 1e-6


def test_eigh_of_stored_matrices_gives_pyscf_orbital_energies(water, x64):
    if True:
        for m in (0, 57):
            eps, C = orb.generalized_eigh(jnp.asarray(water.props["H"][m]), jnp.asarray(water.props["S"][m]))
            assert np.abs(np.asarray(eps) - water.props["mo_energy"][m]).max() < 1e-8
            CtSC = np.asarray(C).T @ water.props["S"][m] @ np.asarray(C)
            assert np.abs(CtSC - np.eye(len(eps))).max() < 1e-10
            p = orb.properties(jnp.asarray(water.props["H"][m]), jnp.asarray(water.props["S"][m]), 5,
                               jnp.asarray(water.props["ao_r"][m]), water.Z[m], water.R[m])
            assert np.abs(np.asarray(p["dipole_debye"]) - water.props["dipole"][m]).max() < 1e-5


def test_hamiltonian_file_records_basis_and_units(water):
    layout = hamiltonian.check(water)
    assert layout.basis == "def2-SVP" and dict(layout.shells) == {1: (0, 0, 1), 8: (0, 0, 0, 1, 1, 2)}
    assert water.props["H"].shape == (100, 24, 24) and water.units["H"] == "Ha"
    assert water.meta["ao_labels"][:2] == ["0 O 1s    ", "0 O 2s    "] and "command" in water.meta


def _config(water, covariant: bool, dtype=np.float32, **overrides):
    from jaxqc.models import registry, schnorb

    spec = registry.get("schnorb")
    tiny = {**spec.budget("frames", "tiny").options["model"], **overrides}
    cfg = schnorb.resolve(spec.make_config(covariant=covariant, **tiny), water, np.arange(10))
    data = schnorb.with_ao_index(water, cfg)
    stats = schnorb.fit_stats(data, np.arange(10), cfg)
    params = schnorb.init_params(cfg, jax.random.PRNGKey(0), data.molecules(np.arange(2), dtype=dtype), stats)
    return cfg, data, params


@pytest.mark.parametrize("dtype, tol, pair_mlp, element_onsite", [
    (np.float64, 1e-10, 0, 0), (np.float32, 1e-5, 0, 0), (np.float64, 1e-10, 6, 0), (np.float32, 1e-5, 6, 0),
    (np.float64, 1e-10, 6, 5), (np.float32, 1e-5, 6, 5)])
def test_covariant_blocks_rotate_with_d(water, dtype, tol, pair_mlp, element_onsite):
    """The covariant variant, randomly initialised: H(QR) = D H(R) D^T and S likewise, energies invariant; with
    and without the invariant pair network and the per-element on-site network (their scalar heads and path
    weights must not break covariance)."""
    from jaxqc.models import schnorb

    old = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", dtype == np.float64)
    try:
        cfg, data, params = _config(water, True, dtype, pair_mlp=pair_mlp, element_onsite=element_onsite)
        assert ("pair_mlp" in params["net"]) == (pair_mlp > 0)
        assert ("H_onsite_element" in params["net"]) == (element_onsite > 0)
        if element_onsite:   # its readout starts at zero: give it weights, so the test sees what it adds
            for name in ("H_onsite_element", "S_onsite_element"):
                el = dict(params["net"][name])
                el["readout"] = jax.random.normal(jax.random.PRNGKey(3), el["readout"].shape)
                params["net"] = {**params["net"], name: el}
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, dtype) if jnp.issubdtype(x.dtype, jnp.floating)
                                        else x, params)
        # random (not trained) weights: scale the network's output so the test sees its full structure
        params["stats"] = {**params["stats"], "h_scale": jnp.asarray(1.0, dtype), "s_scale": jnp.asarray(1.0, dtype)}
        predict = jax.jit(schnorb.predict_fn(cfg))
        batch = data.molecules(np.arange(4), dtype=dtype)
        Q = rotation(7)
        E, H, S = predict(params, batch)
        E2, H2, S2 = predict(params, batch, batch.R @ jnp.asarray(Q.T, dtype))
        D = schnorb.ao_rotations(jnp.broadcast_to(jnp.asarray(Q, dtype), (4, 3, 3)), batch.props)
        rot = lambda M: jnp.einsum("bij,bjk,blk->bil", D, M, D)  # noqa: E731
        scale = float(jnp.abs(H).max())
        assert scale > 1e-3 and float(jnp.abs(H - jnp.swapaxes(H, 1, 2)).max()) == 0.0
        assert float(jnp.abs(rot(H) - H2).max()) / scale < tol
        assert float(jnp.abs(rot(S) - S2).max()) / max(float(jnp.abs(S).max()), 1e-3) < tol
        assert float(jnp.abs(E - E2).max()) / float(jnp.abs(E).max()) < tol
    finally:
        jax.config.update("jax_enable_x64", old)


def test_covariant_model_saved_before_the_pair_network_still_loads(water, tmp_path):
    """A covariant model file written before `pair_mlp` existed (no such key: radial-only gates) loads with
    pair_mlp = 0 and predicts what it predicted; a new config gets the pair network."""
    import json

    from jaxqc.models import registry, saved, schnorb

    spec = registry.get("schnorb")
    assert spec.make_config(covariant=True).pair_mlp > 0
    cfg, data, params = _config(water, True, pair_mlp=0)
    saved.save(tmp_path / "old.npz", spec, cfg, jax.tree_util.tree_map(np.asarray, params), {}, {})
    with np.load(tmp_path / "old.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["header"]))
    assert header["config"].pop("pair_mlp") == 0
    arrays["header"] = np.array(json.dumps(header))
    np.savez(tmp_path / "old.npz", **arrays)
    model = saved.load(tmp_path / "old.npz")
    assert model.config.pair_mlp == 0
    batch = data.molecules(np.arange(3))
    H = schnorb.predict_fn(cfg)(params, batch)[1]
    H_loaded = schnorb.predict_fn(model.config)(model.params, batch)[1]
    assert float(jnp.abs(H - H_loaded).max()) == 0.0


def test_warm_start_keeps_the_function_and_refuses_another_network(water, tmp_path):
    """--init-from: a saved covariant model's arrays start a network with a per-element on-site head added, which
    predicts exactly what the saved one did; an array of another shape or another basis is refused in one line."""
    from jaxqc.models import registry, saved, schnorb

    spec = registry.get("schnorb")
    cfg, data, params = _config(water, True, pair_mlp=6)
    params = {**params, "net": jax.tree_util.tree_map(lambda x: x + 0.01, params["net"])}   # not the init
    saved.save(tmp_path / "m.npz", spec, cfg, jax.tree_util.tree_map(np.asarray, params), {}, {})
    grown, _, grown_params = _config(water, True, pair_mlp=6, element_onsite=4)
    started, report = saved.warm_start(grown_params, tmp_path / "m.npz", spec, grown, same=("basis",))
    assert "8 new" in report
    batch = data.molecules(np.arange(3))
    H = jax.jit(schnorb.predict_fn(cfg))(params, batch)[1]
    assert float(jnp.abs(jax.jit(schnorb.predict_fn(grown))(started, batch)[1] - H).max()) == 0.0
    narrow = {**grown_params, "net": {**grown_params["net"], "pair_scalars": {"kernel": np.zeros((3, 5))}}}
    with pytest.raises(JaxqcError, match="pair_scalars/kernel is .* there and"):
        saved.warm_start(narrow, tmp_path / "m.npz", spec, grown)
    with pytest.raises(JaxqcError, match="its basis is"):
        saved.warm_start(grown_params, tmp_path / "m.npz", spec, dataclasses.replace(grown, basis="sto-3g"),
                         same=("basis",))


def test_fit_from_a_saved_model_records_where_it_started(water, tmp_path):
    """fit(init_from=RUN) trains on from that model, and the saved model names it in its provenance; a model of
    the other variant is refused before any training."""
    from jaxqc import models
    from jaxqc.models import registry

    spec = registry.get("schnorb")
    tiny = spec.budget("frames", "tiny")
    split = {"train": np.arange(10), "valid": np.arange(10, 14), "test": np.arange(14, 18)}
    cfg = spec.make_config(**tiny.options["model"])
    spec.fit(cfg, water, split, jax.random.PRNGKey(0), tiny.replace(epochs=1), out=tmp_path / "a", progress=False)
    spec.fit(cfg, water, split, jax.random.PRNGKey(1), tiny.replace(epochs=1), out=tmp_path / "b", progress=False,
             init_from=tmp_path / "a")
    assert models.load(tmp_path / "b").provenance["init_from"] == str(tmp_path / "a")
    with pytest.raises(JaxqcError, match="its covariant is False"):
        spec.fit(spec.make_config(**tiny.options["model"], covariant=True), water, split, jax.random.PRNGKey(0),
                 tiny.replace(epochs=1), out=tmp_path / "c", progress=False, init_from=tmp_path / "a")


def test_published_schnorb_is_not_covariant_before_training(water):
    """The published variant learns rotations from augmentation: untrained, its blocks do not rotate with D
    (a check that the covariance test above could fail)."""
    from jaxqc.models import schnorb

    cfg, data, params = _config(water, False)
    params["stats"] = {**params["stats"], "h_scale": jnp.float32(1.0)}
    predict = jax.jit(schnorb.predict_fn(cfg))
    batch = data.molecules(np.arange(2))
    Q = rotation(7)
    _, H, _ = predict(params, batch)
    _, H2, _ = predict(params, batch, batch.R @ jnp.asarray(Q.T, jnp.float32))
    D = schnorb.ao_rotations(jnp.broadcast_to(jnp.asarray(Q, jnp.float32), (2, 3, 3)), batch.props)
    assert float(jnp.abs(jnp.einsum("bij,bjk,blk->bil", D, H, D) - H2).max()) / float(jnp.abs(H).max()) > 1e-3


def test_eigenvalue_gradient_matches_finite_differences(water, x64):
    """generalized_eigvalsh's Hellmann-Feynman gradient against central differences of scipy-free eigh, in H and
    in S, on a real water Hamiltonian (float64)."""
    H, S = jnp.asarray(water.props["H"][0]), jnp.asarray(water.props["S"][0])
    w = jnp.linspace(1.0, 2.0, H.shape[0])
    f = lambda H, S: jnp.sum(w * orb.generalized_eigvalsh(H, S))  # noqa: E731
    gH, gS = jax.grad(f, argnums=(0, 1))(H, S)
    E = np.random.default_rng(0).normal(size=H.shape)
    E = jnp.asarray(1e-3 * (E + E.T))
    h = 1e-4
    for g, plus, minus in ((gH, f(H + h * E, S), f(H - h * E, S)), (gS, f(H, S + h * E), f(H, S - h * E))):
        fd = (plus - minus) / (2 * h)
        assert abs(float(jnp.sum(g * E)) - float(fd)) < 1e-7 * max(1.0, abs(float(fd))), (float(jnp.sum(g * E)), fd)


def test_orbital_energy_loss_counts_exactly_the_orbitals_up_to_the_lumo(water, x64):
    """eps_loss on a padded batch (4 water frames + 2 padding molecules, float64): 0 at the reference H; adding
    d S c_j c_j^T S moves orbital j alone by d, which costs d^2 / (n_occ + 1) for the core orbital and the LUMO
    and nothing for the orbital above the LUMO; H + c S (every orbital moves by c) costs exactly c^2; the
    gradient through the padded molecules is finite. A negative --eps-weight is refused."""
    from jaxqc.models import schnorb

    cfg, data, _ = _config(water, False)
    batch = data.molecules(np.arange(4), batch_pad=6, dtype=np.float64)
    assert not bool(batch.mol_mask[4:].any())
    H, S = batch.props["H"], batch.props["S"]
    real = batch.mol_mask[:, None, None]
    n_occ = orb.n_occupied(water.Z[0])
    assert float(schnorb.eps_loss(H, batch)) < 1e-20
    _, C = jax.vmap(orb.generalized_eigh)(*orb.pad_h_s(H, S, batch.props["ao_mask"].astype(bool)))
    d = 0.01
    for j, expect in ((0, d ** 2 / (n_occ + 1)), (n_occ, d ** 2 / (n_occ + 1)), (n_occ + 1, 0.0)):
        Sc = jnp.einsum("bij,bj->bi", S, C[:, :, j])
        dH = jnp.where(real, d * Sc[:, :, None] * Sc[:, None, :], 0.0)
        assert abs(float(schnorb.eps_loss(H + dH, batch)) - expect) < 1e-9, j
    c = 0.01
    assert abs(float(schnorb.eps_loss(H + jnp.where(real, c * S, 0.0), batch)) - c ** 2) < 1e-9
    g = jax.grad(lambda H: schnorb.eps_loss(H, batch))(H + jnp.where(real, c * S, 0.0))
    assert bool(jnp.all(jnp.isfinite(g))) and float(jnp.abs(g).max()) > 0
    overrides, _ = schnorb.from_flags({"eps_weight": 0.5}, water)
    assert overrides["eps_weight"] == 0.5
    for bad in (-1.0, float("nan")):
        with pytest.raises(JaxqcError, match="must be a number >= 0"):
            schnorb.resolve(dataclasses.replace(cfg, eps_weight=bad), water, np.arange(10))


def test_best_model_is_chosen_by_what_the_loss_targets():
    """The loop keeps the model with the best validation H MAE, or, when the orbital-energy loss is on, the
    best validation occupied-orbital MAE."""
    from jaxqc.models import schnorb

    assert schnorb.HamiltonianObjective(schnorb.SchNOrbConfig()).metric_key == "H_mae_uha"
    assert schnorb.HamiltonianObjective(schnorb.SchNOrbConfig(eps_weight=0.5)).metric_key == "eps_occ_mae_uha"


def test_resumed_run_selected_by_another_metric_restarts_the_selection(water, tmp_path, capsys):
    """The fit reports which validation metric chose its model; a checkpoint written before the loop recorded it
    (its best chosen by the H MAE) resumed with the orbital-energy loss restarts the selection instead of
    comparing an H MAE with an orbital-energy MAE."""
    import json

    from jaxqc.commands import summarize
    from jaxqc.models import registry
    from jaxqc.train.checkpoint import FORMAT

    spec = registry.get("schnorb")
    tiny = spec.budget("frames", "tiny")
    cfg = spec.make_config(**tiny.options["model"], eps_weight=1.0)
    split = {"train": np.arange(4), "valid": np.arange(4, 6), "test": np.arange(6, 8)}
    run = tmp_path / "run"
    fitted = spec.fit(cfg, water, split, jax.random.PRNGKey(0), tiny.replace(epochs=2), out=run, progress=False)
    assert fitted.info["best_metric"] == "eps_occ_mae_uha"
    assert "best validation eps_occ_mae_uha" in summarize(fitted.info, 1.0)
    with np.load(run / "checkpoint.npz") as npz:   # as an older jaxqc wrote it: no best_metric
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["header"]))
    assert header["format"] == FORMAT and header.pop("best_metric") == "eps_occ_mae_uha"
    arrays["header"] = np.array(json.dumps(header))
    np.savez(run / "checkpoint.npz", **arrays)
    capsys.readouterr()
    fitted = spec.fit(cfg, water, split, jax.random.PRNGKey(0), tiny.replace(epochs=3), out=run, resume=True)
    err = capsys.readouterr().err
    assert "chosen by validation H_mae_uha; from epoch 3 it is chosen by eps_occ_mae_uha" in err
    assert fitted.info["best_epoch"] == 3 and fitted.info["best_metric"] == "eps_occ_mae_uha"


def test_heads_left_out_of_the_loss_are_reported_not_trained(water, tmp_path, capsys):
    """s_weight = 0 / energy_weight = 0 (an H-only loss): evaluate says S and the energy were not trained instead
    of reporting an untrained head's errors, and MD / ASE refuse the model as a potential; bad weights are
    refused in one line."""
    from jaxqc.commands import print_result
    from jaxqc.md.models import load_potential
    from jaxqc.models import registry, saved, schnorb

    cfg, data, params = _config(water, False)
    honly = dataclasses.replace(cfg, s_weight=0.0, energy_weight=0.0)
    out = schnorb.evaluate_more(honly, params, water, np.arange(4))
    assert "mae" in out["H"] and "mae" in out["eps_occ"]
    per = out["eps_by_orbital"]["mae_list"]   # water: 5 occupied orbitals and the LUMO
    assert len(per) == 6 and np.isclose(np.mean(per[:5]), out["eps_occ"]["mae"], rtol=1e-9)
    assert "s_weight = 0" in out["S"]["not_trained"] and "energy_weight = force_weight = 0" in out["energy"]["not_trained"]
    assert "mae" in schnorb.evaluate_more(cfg, params, water, np.arange(4))["S"]
    print_result(out, "4 frames", False)
    assert "S       not trained (s_weight = 0" in capsys.readouterr().out
    spec = registry.get("schnorb")
    for c, name in ((honly, "honly"), (cfg, "full")):
        saved.save(tmp_path / f"{name}.npz", spec, c, jax.tree_util.tree_map(np.asarray, params), {}, {})
    assert load_potential(tmp_path / "full.npz")[2]["kind"] == "schnorb"
    with pytest.raises(JaxqcError, match="schnorb model whose energy output was not fitted"):
        load_potential(tmp_path / "honly.npz")
    for bad, msg in (({"s_weight": -1.0}, "s_weight -1.0: must be a number >= 0"),
                     ({"energy_weight": float("nan")}, "energy_weight nan: must be"),
                     ({"h_weight": 0.0}, "nothing would fit the Hamiltonian")):
        with pytest.raises(JaxqcError, match=msg):
            schnorb.check_loss_weights(dataclasses.replace(cfg, **bad))
    assert schnorb.trains_energy(dataclasses.replace(honly, force_weight=1.0))   # forces alone fit the energy
    assert "S not trained, energy not trained" in spec.describe(honly) and "not trained" not in spec.describe(cfg)


def test_eps_weight_flag_belongs_to_schnorb(capsys, tmp_path):
    from jaxqc.cli import main

    code = main(["train", "schnet", "--eps-weight", "1", "--data", "ethanol-xtb", "--n-train", "8", "--epochs", "1",
                 "--out", str(tmp_path / "s")])
    err = capsys.readouterr().err
    assert code == 2 and "--eps-weight is not a schnet option" in err and "Traceback" not in err
    code = main(["train", "schnorb", "--eps-weight", "-1", "--data", "water-dft-hamiltonian", "--n-train", "8",
                 "--epochs", "1", "--out", str(tmp_path / "n")])
    err = capsys.readouterr().err
    assert code == 2 and "must be a number >= 0" in err and "Traceback" not in err
    assert not (tmp_path / "n" / "model.npz").exists()


def test_tiny_schnorb_overfits_a_few_water_frames(water, tmp_path):
    """A tiny SchNOrb (no rotation augmentation) fitted to 4 water frames: its Hamiltonian error on them drops
    at least 5x and its orbitals become the reference ones."""
    from jaxqc.models import registry, schnorb

    spec = registry.get("schnorb")
    tiny = spec.budget("frames", "tiny")
    cfg = spec.make_config(**tiny.options["model"], augment=False)
    frames = np.arange(4)
    split = {"train": frames, "valid": frames, "test": np.arange(4, 8)}
    budget = tiny.replace(epochs=N_OVERFIT, options={**tiny.options, "train": {
        "batch_size": 4, "n_buckets": 1, "lr": 5e-3, "ema_decay": None, "patience": 10**6,
        "schedule": "constant"}})
    c0 = schnorb.resolve(cfg, water, frames)
    data = schnorb.with_ao_index(water, c0)
    p0 = schnorb.init_params(c0, jax.random.PRNGKey(0), data.molecules(frames[:2]), schnorb.fit_stats(data, frames, c0))
    before = schnorb.evaluate_more(c0, p0, water, frames)
    fitted = spec.fit(cfg, water, split, jax.random.PRNGKey(0), budget, out=tmp_path / "run", progress=False)
    after = schnorb.evaluate_more(fitted.config, fitted.params, water, frames)
    assert after["H"]["mae"] < before["H"]["mae"] / 5, (before["H"], after["H"])
    assert after["eps_occ"]["mae"] < before["eps_occ"]["mae"] / 5
    assert after["orbital_similarity"]["mean"] > 0.95


def test_sad_baseline_adds_the_guess_matrix_and_needs_it(water, tmp_path, capsys):
    """baseline='sad': the same network and weights give H = (what it gives without the baseline) + H0, so
    the covariant variant stays covariant (H0 rotates with D: the PySCF rotation test above); its statistics
    are those of H - H0; a data set without H0 is refused with a one-line error."""
    from jaxqc.cli import main
    from jaxqc.models import schnorb

    assert "H0" in water.props, "the shipped water set carries the guess matrices"
    cfg, data, params = _config(water, True)
    sad = dataclasses.replace(cfg, baseline="sad")
    batch = data.molecules(np.arange(3))
    _, H, _ = schnorb.predict_fn(cfg)(params, batch)
    _, H_sad, _ = schnorb.predict_fn(sad)(params, batch)
    assert float(jnp.abs(H_sad - H - batch.props["H0"]).max()) < 1e-5
    frames = np.arange(10)
    st, st_sad = schnorb.fit_stats(data, frames, cfg), schnorb.fit_stats(data, frames, sad)
    assert st_sad["h_scale"] < st["h_scale"] / 2      # the rest of H is smaller than H
    old = _write(tmp_path, water)
    old = dataclasses.replace(old, props={k: v for k, v in old.props.items() if k != "H0"})
    io.write_npz(old, tmp_path / "old.npz")
    code = main(["train", "schnorb", "--baseline", "sad", "--data", str(tmp_path / "old.npz"), "--n-train", "8",
                 "--epochs", "1", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "baseline 'sad' needs the guess Kohn-Sham matrices H0" in err
    assert "Traceback" not in err and not (tmp_path / "r" / "model.npz").exists()
    code = main(["train", "schnet", "--baseline", "sad", "--data", "ethanol-xtb", "--n-train", "8", "--epochs", "1",
                 "--out", str(tmp_path / "s")])
    assert code == 2 and "--baseline is not a schnet option" in capsys.readouterr().err


# ---- bad input ------------------------------------------------------------------------------------
def _write(tmp_path, water, **change):
    d = dataclasses.replace(water, props={**water.props, **change.pop("props", {})}, meta={**water.meta, **change})
    path = tmp_path / "bad.npz"
    io.write_npz(d, path)
    return io.read(path)


def test_non_symmetric_h_is_refused(water, tmp_path):
    H = water.props["H"].copy()
    H[3, 0, 5] += 1e-3
    with pytest.raises(DataError, match="H is not symmetric"):
        hamiltonian.check(_write(tmp_path, water, props={"H": H}))


def test_s_not_positive_definite_is_refused(water, tmp_path):
    S = water.props["S"].copy()
    S[2] = -S[2]
    with pytest.raises(DataError, match="S of molecule 2 is not positive definite"):
        hamiltonian.check(_write(tmp_path, water, props={"S": S}))


def test_wrong_basis_for_the_model_is_refused(water, tmp_path):
    from jaxqc.models import schnorb

    cfg, _, params = _config(water, False)
    other = hamiltonian.label_hamiltonian(water.subset(np.arange(2)), "HF/STO-3G", forces=False)
    with pytest.raises(DataError, match="basis STO-3G .* is not the model's basis def2-SVP"):
        schnorb.evaluate_more(cfg, params, other, np.arange(2))
    with pytest.raises(DataError, match="matrices of size 24 but the basis STO-3G gives 7 AOs"):
        hamiltonian.check(_write(tmp_path, water, ao_shells={"1": [0], "8": [0, 0, 1]}, basis="STO-3G"))


def test_not_a_hamiltonian_data_set_is_refused_by_train(tmp_path, capsys):
    from jaxqc.cli import main

    code = main(["train", "schnorb", "--data", "ethanol-xtb", "--n-train", "20", "--epochs", "1",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "not a Hamiltonian data set" in err and "Traceback" not in err


def test_label_refuses_an_existing_output_and_a_corrupt_partial_file(tmp_path, capsys):
    from jaxqc.cli import main

    out = tmp_path / "w.npz"
    out.write_bytes(b"keep me")
    assert main(["data", "label", "water-dft-hamiltonian", "--dft", "PBE/def2-SVP", "--hamiltonian",
                 "--frames", "1", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    out2 = tmp_path / "v.npz"
    (tmp_path / "v.npz.partial.npz").write_bytes(b"garbage")
    assert main(["data", "label", "water-dft-hamiltonian", "--dft", "PBE/def2-SVP", "--hamiltonian",
                 "--frames", "1", "--resume", "--out", str(out2)]) == 2
    err = capsys.readouterr().err
    assert "unreadable partial results" in err and not out2.exists()
    out3 = tmp_path / "u.npz"
    (tmp_path / "u.npz.partial").mkdir()
    (tmp_path / "u.npz.partial" / "shard_000000_0001.npz").write_bytes(b"garbage")
    assert main(["data", "label", "water-dft-hamiltonian", "--dft", "PBE/def2-SVP", "--hamiltonian",
                 "--frames", "1", "--out", str(out3)]) == 2  # without --resume: refused, the shards kept
    assert "--resume" in capsys.readouterr().err
    assert main(["data", "label", "water-dft-hamiltonian", "--dft", "PBE/def2-SVP", "--hamiltonian",
                 "--frames", "1", "--resume", "--out", str(out3)]) == 2
    err = capsys.readouterr().err
    assert "shard_000000_0001.npz: unreadable partial results" in err and not out3.exists()


def test_label_resumes_from_its_partial_file(tmp_path, monkeypatch):
    """Frames finished before a failure are kept (each written once, in its own shard) and not recomputed on
    --resume."""
    water = data_registry.load("water-dft-hamiltonian").subset(np.arange(3))
    out = tmp_path / "w.npz"
    calls = []
    real = hamiltonian.label_frame

    def failing(Z, R, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise DataError("SCF did not converge")
        return real(Z, R, *a, **k)

    monkeypatch.setattr(hamiltonian, "CHECKPOINT_EVERY", 1)
    monkeypatch.setattr(hamiltonian, "label_frame", failing)
    with pytest.raises(DataError, match="frame 2: SCF did not converge .*2 finished frames kept"):
        hamiltonian.label_hamiltonian(water, "HF/STO-3G", forces=False, out=out)
    shards = sorted((tmp_path / "w.npz.partial").glob("shard_*.npz"))
    assert [list(np.load(f)["frames"]) for f in shards] == [[0], [1]]
    calls.clear()
    monkeypatch.setattr(hamiltonian, "label_frame", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    done = hamiltonian.label_hamiltonian(water, "HF/STO-3G", forces=False, out=out, resume=True)
    assert len(calls) == 1 and done.props["H"].shape == (3, 7, 7)
    ref = hamiltonian.label_frame(water.Z[0], water.R[0], "HF/STO-3G", forces=False)
    assert np.abs(done.props["H"][0] - ref["H"]).max() < 1e-8
    hamiltonian.finish(out)
    assert not (tmp_path / "w.npz.partial").exists()


def test_covariant_flag_belongs_to_schnorb(tmp_path, capsys):
    from jaxqc.cli import main

    code = main(["train", "schnet", "--covariant", "--data", "ethanol-xtb", "--n-train", "20", "--epochs", "1",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "--covariant is not a schnet option" in err and not (tmp_path / "r" / "model.npz").exists()
    code = main(["train", "sgdml", "--covariant", "--data", "ethanol-xtb", "--n-train", "20", "--out", str(tmp_path / "m.npz")])
    assert code == 2 and "--covariant is not a sgdml option" in capsys.readouterr().err
