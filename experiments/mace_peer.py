"""MACE: jaxqc (e3nn-jax, jaxqc/models/mace.py) against mace-torch, same hyperparameters, same molecules, same run.

Speed (section `speed`): train-step throughput (energy + forces loss, one Adam step) and inference throughput
(energy + forces), molecules/s after a warm-up (the first calls, with jaxqc's compilation, reported
separately), float32, at
  - rMD17 aspirin (21 atoms; real frames of rmd17_aspirin_train_01), batches of 5 and 10;
  - QM9, batches of 32 molecules (seeded sample of the fixed protocol's training split; zero force labels:
    QM9 has no forces, the work is the same),
for jaxqc's default MACE config (32 channels, l_max 2) and its `paper` config (MACE's rMD17 setting: 256
channels, l_max 3, ...). mace-torch builds `ScaleShiftMACE` with the equivalent arguments (torch_kwargs) and
gets the same molecules (the same batches: jaxqc's batcher with the trainer's buckets and edge budgets builds
jaxqc's padded batches; mace-torch gets the same molecules as a ragged graph with the same edges, built once
outside the timing). The loss is jaxqc's train loss (MSE(E) + MSE(F), divided by scale^2), plain Adam for
both (no EMA, no clipping). Each code runs in its own worker process per config, one after the other; torch
and XLA use the cores this process may run on (2 on this machine, torch.set_num_threads). jaxqc runs under
huge-page malloc (GLIBC_TUNABLES=glibc.malloc.hugetlb=1: the setting the `jaxqc` command runs under),
mace-torch under glibc's default (schnetpack's best in qm9_nn.py); --all-envs times each code under both
and keeps each one's best (twice the time). mace-torch is as `pip install mace-torch` gives it on a CPU:
without cuequivariance(-torch) its product basis is the unreduced one (more weights per channel than the
reduced symmetric basis jaxqc uses; the same function class, see _product_weights).

Same function (section `same`): a randomly initialised mace-torch model, its weights transferred into jaxqc's
parameter tree (torch_to_jaxqc: a mapping of every parameter, see its docstring), energies and forces of both
on rMD17 aspirin frames and QM9 molecules in float64 (max abs differences), and the layer-by-layer features
(radial basis, spherical harmonics, messages A_t, product basis B_t, node features h_t).

    python experiments/mace_peer.py                       # both sections, ~8 min on 2 idle cores
    python experiments/mace_peer.py --section same        # only the weight transfer (~2 min)
    python experiments/mace_peer.py --configs paper --section speed --out experiments/results/mace_peer_paper
    python experiments/mace_peer.py --quick --no-peer     # CI-sized (tests run this)
Peer (benchmark only): torch==2.13.0 (CPU) first, then mace-torch 0.3.16 --no-deps and its pure-python deps
(experiments/README.md). Run it with the peer environment's python (jaxqc installed editable there).
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# ---- configuration (edit here) --------------------------------------------------------------
CONFIGS = {"default": {}, "paper": None}     # jaxqc MACEConfig overrides (paper: jaxqc.models.mace.PAPER)
CASES = (("aspirin", 5), ("aspirin", 10), ("qm9", 32))   # (data, molecules per batch)
N_BATCHES = {"default": 5, "paper": 2}      # timed batches per measurement (after the warm-up call); the
# full run's budget is ~8 min on 2 cores: jaxqc's compilations (~30 s per function and shape for `paper`) and
# mace-torch's paper-config steps (seconds each: ~10 s per QM9 train step) take most of it
QM9_BUCKETS = 4                              # jaxqc's atom-count buckets for the QM9 batches (mace's property budget)
LR = 1e-3
ASPIRIN = "rmd17/rmd17_aspirin_train_01.npz"
FALLBACK = "ethanol-xtb"                     # without ../shared/data/rmd17: jaxqc's own small data set (9 atoms)
QUICK = dict(configs={"quick": dict(channels=4, l_max=1, layers=1, n_bessel=4, radial_mlp=(8,), readout_mlp=4)},
             cases=(("aspirin", 5),), n_batches=2)   # CI: jaxqc's `tiny` MACE, one case (tests: ~30 s)
# transfer check (float64): (name, config overrides (paper: PAPER with them), data sets)
SAME_CONFIGS = (("default", {}, ("aspirin", "qm9")),
                ("paper_16ch", dict(paper=True, channels=16), ("aspirin",)),   # the paper's structure, 16 channels
                # 3 layers, max_L 2: the 1o / 2e skip paths and a middle readout
                ("3layers_maxL2", dict(channels=8, l_max=3, max_L=2, layers=3), ("aspirin",)))
SAME_QUICK = (("quick", dict(channels=4, l_max=2, radial_mlp=(8,), readout_mlp=4), ("aspirin", "qm9")),)
N_SAME = 4                                   # molecules of each data set in the transfer check
# MD speed (section `md`): Langevin at 500 K, dt 0.5 fs, from the first frame of rmd17_<case>_train_01; jaxqc's
# jitted driver (jaxqc.md.run.run_md, MD_STEPS steps, compilation excluded) against ASE's Langevin with
# mace-torch's MACECalculator (MD_PEER_STEPS steps after MD_WARMUP), the same weights, float64 and float32
MD_CASES, MD_STEPS, MD_PEER_STEPS, MD_WARMUP = ("ethanol", "aspirin"), 2000, 200, 5
MD_QUICK = dict(cases=("ethanol",), steps=40, peer_steps=10)
OUT = Path(__file__).parent / "results" / "mace_peer"
ENVS = {"default": {}, "huge_pages": {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}}
ENV_OF = {"jaxqc": "huge_pages", "mace-torch": "default"}   # without --all-envs


def config_overrides(name: str, quick: bool) -> dict:
    from jaxqc.models import mace

    if quick:
        return QUICK["configs"][name]
    return dict(mace.PAPER) if CONFIGS[name] is None else dict(CONFIGS[name])


def n_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


# ---- data -------------------------------------------------------------------------------------
def load_case_data(name: str, quick: bool):
    """(Dataset with E and F, pool of molecule indices, description) of 'aspirin' or 'qm9'."""
    from jaxqc.benchmark.nn_peer import qm9_data, shared_root

    if name == "qm9":
        from jaxqc.data.molecules import Dataset

        data, split = qm9_data(quick)
        data = Dataset(Z=data.Z, R=data.R, E=data.props["U0"], F=np.zeros_like(data.R), props={}, meta=data.meta)
        pool = np.random.default_rng(0).permutation(split["train"])[:2000]
        return data, pool, "QM9 (qm9pack), fixed protocol training split, seeded sample; zero force labels"
    path = shared_root() / ASPIRIN
    if path.exists():
        from jaxqc.data.io import read_npz

        data = read_npz(path)
        return data, np.arange(len(data)), f"rMD17 aspirin ({ASPIRIN}), 21 atoms"
    from jaxqc.data import registry

    data = registry.load(FALLBACK)
    return data, np.arange(len(data)), f"{FALLBACK} (rMD17 aspirin not found at {path}: a smaller molecule)"


def groups_like_training(data, pool, batch: int, buckets, n: int, seed: int = 0) -> list:
    """n groups of `batch` molecules of `pool` as the trainer draws them (jaxqc.data.molecules.batches with
    shuffle=True: each group within one atom-count bucket, full batches), all from the bucket of the pool's
    median molecule: one padded shape, one compilation per jaxqc function (QM9: the trainer's other buckets
    would add compilations, not a different per-molecule cost)."""
    from jaxqc.data.molecules import bucket_of

    rng = np.random.default_rng(seed)
    order = pool[rng.permutation(len(pool))]
    which = bucket_of(data.n_atoms[order], buckets)
    chunks = []
    for b in bucket_of([int(np.median(data.n_atoms[pool]))], buckets):
        members = order[which == b]
        chunks += [members[s:s + batch] for s in range(0, len(members) - batch + 1, batch)]
    return [chunks[k] for k in rng.permutation(len(chunks))[:n]]


def jaxqc_batch(data, members, batch, buckets, edge_kw, dtype):
    """jaxqc's padded batch (with its edge list) of exactly `members`, from jaxqc's batcher."""
    from jaxqc.data.molecules import batches

    (mol,) = list(batches(data, members, batch, buckets, dtype=dtype, **edge_kw))
    return mol


def torch_batch(data, members, elements, cutoff, dtype):
    """mace-torch's input dict of `members` as one ragged graph: every ordered pair i != j within the cutoff
    (the same edges as jaxqc's edge list), one-hot over `elements`."""
    import torch

    pos, attrs, senders, receivers, batch, energy, forces = [], [], [], [], [], [], []
    offset = 0
    index = {z: k for k, z in enumerate(elements)}
    for g, m in enumerate(members):
        n = int(data.n_atoms[m])
        R, Z = np.asarray(data.R[m, :n], np.float64), data.Z[m, :n]
        d2 = ((R[:, None] - R[None]) ** 2).sum(-1)
        i, j = np.nonzero((d2 < cutoff ** 2) & ~np.eye(n, dtype=bool))  # receiver i, sender j
        senders.append(j + offset)
        receivers.append(i + offset)
        pos.append(R)
        attrs.append(np.eye(len(elements))[[index[int(z)] for z in Z]])
        batch.append(np.full(n, g))
        energy.append(float(data.E[m]))
        forces.append(np.asarray(data.F[m, :n]))
        offset += n
    t = lambda x: torch.tensor(np.concatenate(x), dtype=dtype)  # noqa: E731
    ptr = np.concatenate([[0], np.cumsum([int(data.n_atoms[m]) for m in members])])
    edge_index = torch.tensor(np.stack([np.concatenate(senders), np.concatenate(receivers)]), dtype=torch.int64)
    return {"positions": t(pos), "node_attrs": t(attrs), "edge_index": edge_index,
            "shifts": torch.zeros((edge_index.shape[1], 3), dtype=dtype),
            "unit_shifts": torch.zeros((edge_index.shape[1], 3), dtype=dtype),
            "cell": torch.zeros((3 * len(members), 3), dtype=dtype),
            "batch": torch.tensor(np.concatenate(batch), dtype=torch.int64),
            "ptr": torch.tensor(ptr, dtype=torch.int64),
            "energy": torch.tensor(energy, dtype=dtype), "forces": t(forces)}


# ---- models -----------------------------------------------------------------------------------
def jaxqc_setup(data, pool, overrides: dict):
    """(resolved MACEConfig, stats) of jaxqc's MACE on data[pool]: elements, avg_num_neighbors, scale / shift
    / element references as the trainer sets them (forces trained)."""
    from jaxqc.models import mace
    from jaxqc.nn import model as nnmodel

    config = mace.resolve(mace.MACEConfig(**overrides), data, pool)
    ref = nnmodel.atom_reference(data, "energy", config.max_z)
    return config, nnmodel.fit_stats(data, pool, "energy", ref, True, "sum")


def jaxqc_model(data, pool, overrides: dict):
    """(config, energy fn, initialised params) of jaxqc's MACE (one compilation of init, as the trainer)."""
    import jax

    from jaxqc.nn import model as nnmodel

    config, stats = jaxqc_setup(data, pool, overrides)
    params = nnmodel.init_params("mace", config, jax.random.PRNGKey(0), data.molecules(pool[:2]), stats)
    return config, nnmodel.make_energy("mace", config), params


def torch_kwargs(config, atomic_energies, scale: float, shift: float) -> dict:
    """mace-torch ScaleShiftMACE arguments equivalent to a resolved jaxqc MACEConfig.

    Every layer is RealAgnosticResidualInteractionBlock, the first too: jaxqc's first layer has the
    element-dependent skip connection W_z h (from the embedding's scalars) and no element-dependent mixing of
    the messages, which is the residual block. mace-torch's training script defaults to
    RealAgnosticInteractionBlock for the first layer (no skip; an element-dependent linear map of the messages
    instead): a different function, not timed here."""
    import torch
    from e3nn import o3
    from mace.modules import RealAgnosticResidualInteractionBlock

    hidden = o3.Irreps("+".join(f"{config.channels}x{l}{'e' if l % 2 == 0 else 'o'}" for l in range(config.max_L + 1)))
    return dict(
        atomic_inter_scale=float(scale), atomic_inter_shift=float(shift),
        r_max=float(config.cutoff_ang), num_bessel=config.n_bessel, num_polynomial_cutoff=config.envelope_p,
        max_ell=config.l_max, interaction_cls=RealAgnosticResidualInteractionBlock,
        interaction_cls_first=RealAgnosticResidualInteractionBlock, num_interactions=config.layers,
        num_elements=len(config.elements), hidden_irreps=hidden, MLP_irreps=o3.Irreps(f"{config.readout_mlp}x0e"),
        atomic_energies=np.asarray(atomic_energies, np.float64), avg_num_neighbors=float(config.avg_num_neighbors),
        atomic_numbers=list(config.elements), correlation=config.correlation, gate=torch.nn.functional.silu,
        radial_MLP=list(config.radial_mlp))


def torch_model(config, stats: dict, seed: int = 0):
    import torch
    from mace.modules import ScaleShiftMACE

    torch.manual_seed(seed)
    atom_ref = np.asarray(stats["atom_ref"], np.float64)
    return ScaleShiftMACE(**torch_kwargs(config, atom_ref[list(config.elements)], stats["scale"], stats["shift"]))


def _import_torch():
    """torch and mace, with e3nn 0.4.4's constants loadable under torch >= 2.6 (mace sets the same flag)."""
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    import mace.modules  # noqa: F401
    import torch
    return torch


# ---- speed ------------------------------------------------------------------------------------
_MODELS = {}  # (case, config) -> (data, pool, config, energy, params): the batch sizes of a data set share them


def jaxqc_speed(case, batch, n_batches, overrides, quick) -> dict:
    import jax
    import jax.numpy as jnp

    from jaxqc.data.molecules import atom_buckets, edge_options
    from jaxqc.potential import energy_and_forces_fn
    from jaxqc.train import loop

    key = (case, json.dumps(overrides, sort_keys=True, default=str))
    if key not in _MODELS:
        t = time.perf_counter()
        data, pool, _ = load_case_data(case, quick)
        _MODELS[key] = (data, pool, *jaxqc_model(data, pool, overrides), time.perf_counter() - t)
    data, pool, config, energy, params, setup_s = _MODELS[key]
    buckets = atom_buckets(data.n_atoms[pool], n_buckets=QM9_BUCKETS if case == "qm9" else 1, multiple=1)
    edge_kw = edge_options(config, data, pool, buckets)
    groups = groups_like_training(data, pool, batch, buckets, n_batches)
    mols = [jaxqc_batch(data, g, batch, buckets, edge_kw, jnp.float32) for g in groups]
    shapes = {(m.R.shape[1], m.edges.budget): m for m in mols}
    cfg = loop.TrainConfig(batch_size=batch, lr=LR, force_weight=1.0, energy_weight=1.0, ema_decay=None,
                           clip_norm=None)
    tx, train_step, _ = loop.make_steps(energy, cfg, "energy")
    step = jax.jit(train_step, donate_argnums=0)
    own = lambda tree: jax.tree_util.tree_map(jnp.copy, tree)  # noqa: E731  (the step donates its state)
    holder = {"s": loop.TrainState(net=own(params["net"]), stats=own(params["stats"]), opt_state=tx.init(params["net"]),
                                   ema=own(params["net"]), step=jnp.zeros((), jnp.int32))}

    def train_one(b):
        holder["s"], loss = step(holder["s"], b, LR)
        return loss

    infer = jax.jit(energy_and_forces_fn(energy))
    out = {"config": dataclasses.asdict(config), "buckets": list(buckets), "shapes": [list(k) for k in shapes],
           "threads": n_threads(), "setup_s": setup_s,  # setup: data, config, parameter init (its compilation)
           "n_params": int(sum(x.size for x in jax.tree_util.tree_leaves(params["net"])))}
    for key, fn in (("train", train_one), ("infer", lambda b: infer(params, b))):
        for k, b in enumerate(shapes.values()):  # warm-up: the first call of every shape (with its compilation)
            t = time.perf_counter()
            jax.block_until_ready(fn(b))
            if k == 0:
                out[f"{key}_first_call_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for b in mols:
            r = fn(b)
        jax.block_until_ready(r)
        out[f"{key}_mol_per_s"] = batch * len(mols) / (time.perf_counter() - t)
    return out


def torch_speed(case, batch, n_batches, overrides, quick) -> dict:
    torch = _import_torch()
    import mace

    torch.set_num_threads(n_threads())
    torch.set_default_dtype(torch.float32)
    from jaxqc.data.molecules import atom_buckets

    data, pool, _ = load_case_data(case, quick)
    config, stats = jaxqc_setup(data, pool, overrides)  # the same resolved config and stats
    model = torch_model(config, stats)
    buckets = atom_buckets(data.n_atoms[pool], n_buckets=QM9_BUCKETS if case == "qm9" else 1, multiple=1)
    groups = groups_like_training(data, pool, batch, buckets, n_batches)
    inputs = [torch_batch(data, g, config.elements, config.cutoff_ang, torch.float32) for g in groups]
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    scale2 = float(stats["scale"]) ** 2

    def train_one(b):
        b = dict(b, positions=b["positions"].clone())
        res = model(b, training=True, compute_force=True)
        loss = (torch.mean((res["energy"] - b["energy"]) ** 2)
                + torch.mean((res["forces"] - b["forces"]) ** 2)) / scale2
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    def infer_one(b):
        b = dict(b, positions=b["positions"].clone())
        res = model(b, training=False, compute_force=True)
        return res["energy"].detach(), res["forces"].detach()

    out = {"version": mace.__version__, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "first_block": "RealAgnosticResidualInteractionBlock (see torch_kwargs)",
           "n_params": int(sum(p.numel() for p in model.parameters())),  # more than jaxqc's: see _product_weights
           "n_edges": [int(b["edge_index"].shape[1]) for b in inputs]}
    for key, fn in (("train", train_one), ("infer", infer_one)):
        t = time.perf_counter()
        fn(inputs[0])
        out[f"{key}_first_call_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for b in inputs:
            fn(b)
        out[f"{key}_mol_per_s"] = batch * len(inputs) / (time.perf_counter() - t)
    return out


def speed_worker(args) -> dict:
    """One code, one config, every case, in this process's environment."""
    cases = QUICK["cases"] if args.quick else CASES
    n = QUICK["n_batches"] if args.quick else N_BATCHES[args.config]
    overrides = config_overrides(args.config, args.quick)
    fn = jaxqc_speed if args.speed_worker == "jaxqc" else torch_speed
    res = {}
    for case, batch in cases:
        t = time.perf_counter()
        res[f"{case}_b{batch}"] = fn(case, batch, n, overrides, args.quick) | {"case_wall_s": time.perf_counter() - t}
        print(f"  {args.speed_worker} {args.config} {case} batch {batch}: "
              f"{json.dumps({k: round(v, 2) for k, v in res[f'{case}_b{batch}'].items() if k.endswith('_s')})}",
              flush=True)
    return res


def run_worker(argv_w: list, env: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out_w = Path(tmp) / "w.json"
        environ = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env
        subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv_w, "--worker-out", str(out_w)],
                       env=environ, check=True)
        return json.loads(out_w.read_text())


def speed(args, peer: bool) -> dict:
    codes = ("jaxqc", "mace-torch") if peer else ("jaxqc",)
    configs = list(QUICK["configs"]) if args.quick else (args.configs or list(CONFIGS))
    runs = {}
    for config in configs:
        for code in codes:
            envs = list(ENVS) if args.all_envs else [ENV_OF[code]]
            for env in envs:
                print(f"{code}, config {config}, malloc {env} ...", flush=True)
                argv_w = ["--speed-worker", code, "--config", config] + (["--quick"] if args.quick else [])
                runs.setdefault(config, {}).setdefault(code, {})[env] = run_worker(argv_w, ENVS[env])
    best, ratios = {}, {}
    for config, by_code in runs.items():
        for code, by_env in by_code.items():
            for case in next(iter(by_env.values())):
                for key in ("train_mol_per_s", "infer_mol_per_s"):
                    env = max(by_env, key=lambda e: by_env[e][case][key])
                    best.setdefault(config, {}).setdefault(code, {}).setdefault(case, {})[key] = by_env[env][case][key]
                    best[config][code][case][key.replace("mol_per_s", "env")] = env
        if peer:
            ratios[config] = {case: {k: best[config]["jaxqc"][case][k] / best[config]["mace-torch"][case][k]
                                     for k in ("train_mol_per_s", "infer_mol_per_s")}
                              for case in best[config]["jaxqc"]}
    return {"runs": runs, "best": best, "speedup_jaxqc_over_mace_torch": ratios}


# ---- same function: weight transfer --------------------------------------------------------------
def _jax_linear(torch_lin, jax_params: dict) -> dict:
    """An e3nn (torch) o3.Linear's weights as e3nn-jax flax Linear params: one weight [mul_in, mul_out] per
    (input irrep, output irrep) path in both, normalised by 1/sqrt(fan-in) in both (e3nn-jax's default
    gradient_normalization 'path' puts it in the forward pass, as e3nn does); e3nn-jax merges the input
    chunks of one irrep (8x0e = the torch input's 4x0e + 4x0e, in the same sorted order), so the torch
    blocks of those chunks are stacked."""
    blocks, off = [], 0
    for ins in torch_lin.instructions:
        size = int(np.prod(ins.path_shape))
        W = torch_lin.weight.detach().double().numpy()[off:off + size].reshape(ins.path_shape)
        blocks.append((torch_lin.irreps_in[ins.i_in].ir, torch_lin.irreps_out[ins.i_out].ir, ins.i_in, W))
        off += size
    out = {}
    for key, ref in jax_params.items():  # 'w[0,0] 8x0e,4x0e'
        ir_in, ir_out = (s.split("x", 1)[1] for s in key.split(" ", 1)[1].split(","))
        Ws = [W for a, b, _, W in sorted(blocks, key=lambda x: x[2]) if str(a) == ir_in and str(b) == ir_out]
        out[key] = np.concatenate(Ws, 0).reshape(ref.shape)
    return out


def _act_constants() -> tuple:
    """(e3nn's, e3nn-jax's) second-moment normalisation constants of SiLU: both scale it to unit second moment
    under a standard normal input, e3nn by a Monte-Carlo estimate (normalize2mom), e3nn-jax by quadrature
    (normalize_function): they differ in the 4th digit, so a weight after a SiLU is rescaled by their ratio."""
    import e3nn_jax
    import jax
    import torch
    from e3nn.math import normalize2mom

    c_t = float(normalize2mom(torch.nn.functional.silu).cst)
    c_j = float(e3nn_jax.normalize_function(jax.nn.silu)(1.0) / jax.nn.silu(1.0))
    return c_t, c_j


def _product_weights(contraction, nu_weights: dict, l_max: int, out: tuple, ir: str) -> dict:
    """jaxqc's product-basis weights {nu: [E, K_jax, C]} equal to a mace-torch Contraction's.

    Both compute sum_nu sum_k w_nu[z, k, c] P^nu_k(A_c) with P^nu_k equivariant polynomials of degree nu of one
    channel's irreps, but in different bases: mace-torch's U matrices (mace.tools.cg.U_matrix_real, the
    generalized CG products, not symmetrised: K = 11 (0e) / 21 (1o) at nu = 3, l_max 2) against e3nn-jax's
    reduced symmetric basis (K = 5 / 5). Only the symmetric part of a U acts on A (x) A (x) A, and it lies in
    e3nn-jax's span: least squares on random inputs gives X [K_jax, K_torch] with P_torch = P_jax X exactly,
    and w_jax = X w_torch."""
    from jaxqc.models.mace import symmetric_basis

    rng = np.random.default_rng(0)
    d = (l_max + 1) ** 2
    v = rng.normal(size=(64, d))
    res, fit = {}, {}
    for nu, w_t in nu_weights.items():
        U_t = contraction.U_tensors(nu).detach().double().numpy()
        if U_t.ndim == nu + 1:  # scalar output: no m axis
            U_t = U_t[None]
        letters = "abcdefg"[:nu]
        T = np.einsum(f"m{letters}k," + ",".join(f"s{c}" for c in letters) + "->smk", U_t, *([v] * nu))
        tuples, per_irrep = symmetric_basis(l_max, nu, out)
        if ir not in per_irrep:
            res[nu] = None
            fit[nu] = float(np.abs(T).max())
            continue
        U_j = per_irrep[ir]  # [T, K, m]
        mono = np.prod(v[:, tuples], axis=-1)  # [s, T]
        J = np.einsum("st,tkm->smk", mono, U_j)
        X, *_ = np.linalg.lstsq(J.reshape(-1, J.shape[-1]), T.reshape(-1, T.shape[-1]), rcond=None)
        fit[nu] = float(np.abs(J.reshape(-1, J.shape[-1]) @ X - T.reshape(-1, T.shape[-1])).max()
                        / max(np.abs(T).max(), 1e-300))
        res[nu] = np.einsum("jk,ekc->ejc", X, w_t)
    return res, fit


def torch_to_jaxqc(tm, config, template: dict) -> tuple[dict, dict]:
    """(jaxqc params {"net", "stats"} (float64 numpy), basis-fit residuals) of a mace-torch ScaleShiftMACE
    built by torch_kwargs(config): `template` is jaxqc's initialised parameter tree (names and shapes).

    The mapping, part by part (both codes use e3nn's conventions: the same real spherical harmonics (checked:
    identical to 1e-15 to l = 3), the same Clebsch-Gordan component normalisation, weights N(0, 1) with
    1/sqrt(fan-in) in the forward pass):
    - embedding, linear_up, linear (messages), product linears, readouts: e3nn Linear -> e3nn-jax Linear,
      path by path (_jax_linear);
    - radial MLP: the same kernels (no biases in either); the layers after a SiLU rescaled by the ratio of the
      two activation normalisations (_act_constants); the last layer's columns are one block of C per tensor
      product path in the same order in both (mace-torch sorts its paths by output irrep, stably; e3nn-jax's
      tensor_product does the same, regroup_output=False or not), and the paths' CG coefficients are equal;
    - skip connection: e3nn FullyConnectedTensorProduct(h, one-hot) weights [C_in, E, C_out] / sqrt(C_in E)
      -> jaxqc's ElementLinear [E, C_in, C_out] / sqrt(C_in): transpose, divide by sqrt(E);
    - product basis: a change of basis per order and output irrep (_product_weights);
    - last readout: linear_1, SiLU, linear_2 (rescaled by the activation ratio);
    - scale, shift, atomic energies: jaxqc's stats (atom_ref indexed by Z)."""
    c_t, c_j = _act_constants()
    net = {k: dict(v) for k, v in template.items()}
    fits = {}
    net["embedding"] = _jax_linear(tm.node_embedding.linear, template["embedding"])
    for t, (inter, prod) in enumerate(zip(tm.interactions, tm.products)):
        jt = net[f"interaction_{t}"]
        jt["linear_up"] = _jax_linear(inter.linear_up, template[f"interaction_{t}"]["linear_up"])
        jt["linear"] = _jax_linear(inter.linear, template[f"interaction_{t}"]["linear"])
        layers = [m for m in inter.conv_tp_weights if hasattr(m, "weight")]
        radial = {}
        for k, layer in enumerate(layers):
            W = layer.weight.detach().double().numpy() * (c_t / c_j if k > 0 else 1.0)
            radial[f"Dense_{k}"] = {"kernel": W}
        jt["radial"] = radial
        skip = {}
        E = len(config.elements)
        off = 0
        for ins in inter.skip_tp.instructions:
            size = int(np.prod(ins.path_shape))
            W = inter.skip_tp.weight.detach().double().numpy()[off:off + size].reshape(ins.path_shape)  # [u, e, w]
            off += size
            ir = str(inter.skip_tp.irreps_out[ins.i_out].ir)
            skip[f"w_{ir}"] = W.transpose(1, 0, 2) / np.sqrt(E)
        jt["skip"] = skip
        jp = dict(template[f"product_{t}"])
        out_irreps = tuple(str(ir) for _, ir in prod.linear.irreps_out)
        for contraction, ir in zip(prod.symmetric_contractions.contractions, out_irreps):
            nu_w = {contraction.correlation: contraction.weights_max.detach().double().numpy()}
            for i, w in enumerate(contraction.weights):
                nu_w[contraction.correlation - 1 - i] = w.detach().double().numpy()
            mapped, fit = _product_weights(contraction, nu_w, config.l_max, out_irreps, ir)
            for nu, w in mapped.items():
                if w is not None:
                    jp[f"w{nu}_{ir}"] = w
            fits[f"product_{t}_{ir}"] = fit
        net[f"product_{t}"] = jp
        net[f"product_linear_{t}"] = _jax_linear(prod.linear, template[f"product_linear_{t}"])
    for t, ro in enumerate(tm.readouts):
        if hasattr(ro, "linear_1"):
            net[f"readout_{t}"] = _jax_linear(ro.linear_1, template[f"readout_{t}"])
            lin2 = _jax_linear(ro.linear_2, template[f"readout_out_{t}"])
            net[f"readout_out_{t}"] = {k: v * c_t / c_j for k, v in lin2.items()}
        else:
            net[f"readout_{t}"] = _jax_linear(ro.linear, template[f"readout_{t}"])
    atom_ref = np.zeros(max(config.elements) + 1)
    atom_ref[list(config.elements)] = tm.atomic_energies_fn.atomic_energies.detach().double().numpy().reshape(-1)
    stats = {"scale": float(tm.scale_shift.scale), "shift": float(tm.scale_shift.shift), "atom_ref": atom_ref}
    left = [k for k, v in net.items() for kk, vv in v.items() if not isinstance(vv, (np.ndarray, dict))]
    if left:
        raise ValueError(f"jaxqc parameters without a mace-torch counterpart: {left}")
    return {"net": net, "stats": stats}, fits


def _torch_features(tm, b) -> dict:
    """mace-torch's layer-by-layer features of a batch dict (float64)."""
    from mace.modules.utils import get_edge_vectors_and_lengths

    vec, lengths = get_edge_vectors_and_lengths(b["positions"], b["edge_index"], b["shifts"])
    feats = {"Y": tm.spherical_harmonics(vec), "radial": tm.radial_embedding(lengths, b["node_attrs"],
                                                                                b["edge_index"], tm.atomic_numbers)[0]}
    h = tm.node_embedding(b["node_attrs"])
    for t, (inter, prod) in enumerate(zip(tm.interactions, tm.products)):
        A, sc = inter(node_attrs=b["node_attrs"], node_feats=h, edge_attrs=feats["Y"], edge_feats=feats["radial"],
                      edge_index=b["edge_index"], first_layer=t == 0)
        feats[f"A_{t}"] = A  # [n, C, d]
        feats[f"B_{t}"] = prod.symmetric_contractions(A, b["node_attrs"])
        h = prod(node_feats=A, sc=sc, node_attrs=b["node_attrs"])
        feats[f"h_{t}"] = h
    return {k: v.detach().numpy() for k, v in feats.items()}


def same_worker(args) -> dict:
    """Float64: random mace-torch -> jaxqc, energies, forces and features of both."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    torch = _import_torch()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(n_threads())
    from jaxqc.data.graph import edge_geometry
    from jaxqc.data.molecules import edge_options
    from jaxqc.models import mace as jm
    from jaxqc.nn import model as nnmodel
    from jaxqc.nn.cormorant import bond_harmonics
    from jaxqc.potential import energy_and_forces_fn

    configs = SAME_QUICK if args.quick else SAME_CONFIGS
    out = {}
    for cname, overrides, cases in configs:
        overrides = dict(overrides)
        if overrides.pop("paper", False):
            overrides = dict(jm.PAPER) | overrides
        for case in cases:
            data, pool, desc = load_case_data(case, args.quick)
            config, stats = jaxqc_setup(data, pool, overrides)
            energy = nnmodel.make_energy("mace", config)
            rng = np.random.default_rng(1)
            members = np.sort(rng.choice(pool, N_SAME, replace=False))
            buckets = (int(data.n_atoms[members].max()),)
            edge_kw = edge_options(config, data, members, buckets)
            mol = jaxqc_batch(data, members, len(members), buckets, edge_kw, jnp.float64)
            tm = torch_model(config, stats, seed=1)
            # a random scale / shift / atomic energies too, so that every part is exercised
            with torch.no_grad():
                tm.scale_shift.scale.fill_(1.7)
                tm.scale_shift.shift.fill_(-0.3)
                tm.atomic_energies_fn.atomic_energies.copy_(torch.linspace(-3, 2, len(config.elements)))
            template = jax.eval_shape(jm.MACE(config).init, jax.random.PRNGKey(0), mol.Z, mol.R, mol.mask,
                                      edges=mol.edges)["params"]  # names and shapes only (no compilation)
            mapped, fits = torch_to_jaxqc(tm, config, template)
            jparams = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), mapped)
            e_j, f_j = jax.jit(energy_and_forces_fn(energy))(jparams, mol)
            b = torch_batch(data, members, config.elements, config.cutoff_ang, torch.float64)
            res = tm(dict(b, positions=b["positions"].clone()), training=False, compute_force=True)
            e_t, f_t = res["energy"].detach().numpy(), res["forces"].detach().numpy()
            mask = np.asarray(mol.mask)
            f_j = np.asarray(f_j)[mask]
            row = {"data": desc, "molecules": [int(m) for m in members], "config": dataclasses.asdict(config),
                   "energy_max_abs_diff": float(np.abs(np.asarray(e_j) - e_t).max()),
                   "energy_max_abs": float(np.abs(e_t).max()),
                   "interaction_energy_max_abs": float(np.abs(e_t - np.where(mask, mapped["stats"]["atom_ref"][
                       np.asarray(mol.Z)], 0.0).sum(-1)).max()),  # E minus the atomic energies
                   "forces_max_abs_diff": float(np.abs(f_j - f_t).max()), "forces_max_abs": float(np.abs(f_t).max()),
                   "product_basis_fit_rel_residual": fits}
            # features, layer by layer (jaxqc's over the flattened padded atoms; torch's over the real ones)
            ft = _torch_features(tm, dict(b, positions=b["positions"].clone()))
            y, feats = jm.MACE(config).apply({"params": jparams["net"]}, mol.Z, mol.R, mol.mask,
                                             return_features=True, edges=mol.edges)
            flat = mask.reshape(-1)
            vec, dist = edge_geometry(mol.R, mol.edges)
            emask = np.asarray(mol.edges.mask).reshape(-1)
            # jaxqc's edges: molecule by molecule, by receiver then sender, as torch_batch's
            Y = np.asarray(bond_harmonics(-vec, jnp.asarray(emask), config.l_max).array)[emask]
            rad = np.asarray(jm.bessel_basis(dist, config.cutoff_ang, config.n_bessel)
                             * jm.polynomial_envelope(dist, config.cutoff_ang, config.envelope_p)[:, None])[emask]
            diffs = {"Y": float(np.abs(Y - ft["Y"]).max()), "radial": float(np.abs(rad - ft["radial"]).max())}
            for t in range(config.layers):
                A, B, h = feats[3 * t:3 * t + 3]
                diffs[f"A_{t}"] = float(np.abs(np.asarray(A.mul_to_axis().array)[flat] - ft[f"A_{t}"]).max())
                diffs[f"B_{t}"] = float(np.abs(np.asarray(B.array)[flat] - ft[f"B_{t}"]).max())
                diffs[f"h_{t}"] = float(np.abs(np.asarray(h.array)[flat] - ft[f"h_{t}"]).max())
            row["feature_max_abs_diff"] = diffs
            out[f"{cname}_{case}"] = row
            print(f"  {cname} {case}: |dE| {row['energy_max_abs_diff']:.2e} (|E| {row['energy_max_abs']:.2f}, "
                  f"|E - E0| {row['interaction_energy_max_abs']:.2f}), "
                  f"|dF| {row['forces_max_abs_diff']:.2e} (|F| {row['forces_max_abs']:.2f}); features "
                  + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()), flush=True)
    return out


# ---- MD speed: jaxqc's jitted Langevin against ASE + mace-torch's calculator ------------------------------
def md_data(case: str, quick: bool):
    """(Dataset, description): rmd17_<case>_train_01 (ethanol-xtb without ../shared/data or with --quick)."""
    from jaxqc.benchmark.nn_peer import shared_root

    path = shared_root() / "rmd17" / f"rmd17_{case}_train_01.npz"
    if path.exists() and not quick:
        from jaxqc.data.io import read_npz

        return read_npz(path), f"rMD17 {case} ({path.name}), frame 0"
    from jaxqc.data import registry

    return registry.load(FALLBACK), f"{FALLBACK}, frame 0"


def md_worker(args) -> dict:
    """Per case and dtype: steps/s of jaxqc's run_md and of ASE's Langevin with MACECalculator, one random
    mace-torch model (the default config) transferred into jaxqc, energies checked equal at the start."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    from jaxqc.md.run import MDConfig, run_md
    from jaxqc.models import mace as jm
    from jaxqc.nn import model as nnmodel
    from jaxqc.units import EV_KCAL_MOL

    cases = MD_QUICK["cases"] if args.quick else MD_CASES
    steps = MD_QUICK["steps"] if args.quick else MD_STEPS
    peer_steps = MD_QUICK["peer_steps"] if args.quick else MD_PEER_STEPS
    overrides = dict(SAME_QUICK[0][1]) if args.quick else {}   # 2 layers: the transfer maps mace-torch's
    peer = not args.no_peer
    if peer:
        torch = _import_torch()
        torch.set_num_threads(n_threads())
        from ase import Atoms, units
        from ase.md.langevin import Langevin
        from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
        from mace.calculators import MACECalculator
    out = {}
    for case in cases:
        data, desc = md_data(case, args.quick)
        pool = np.arange(min(len(data), 1000))
        config, stats = jaxqc_setup(data, pool, overrides)
        energy = nnmodel.make_energy("mace", config)
        mol = data.molecules(np.arange(1))
        real = np.asarray(data.Z[0]) > 0
        Z, R0 = np.asarray(data.Z[0])[real], np.asarray(data.R[0], np.float64)[real]
        if peer:
            torch.set_default_dtype(torch.float64)
            tm = torch_model(config, stats, seed=1)
            template = jax.eval_shape(jm.MACE(config).init, jax.random.PRNGKey(0), mol.Z, mol.R, mol.mask)["params"]
            params, _ = torch_to_jaxqc(tm, config, template)
        else:
            params = nnmodel.init_params("mace", config, jax.random.PRNGKey(0), data.molecules(pool[:2]), stats)
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), params)
        for dtype in ("float64", "float32"):
            cfg = MDConfig(steps=steps, dt_fs=0.5, temperature_k=500.0, ensemble="nvt", friction_per_fs=0.01,
                           write_every=10, float64=dtype == "float64", bond_range_ang=None)
            res = run_md(energy, params, Z, R0, cfg)
            row = {"data": desc, "atoms": int(len(Z)), "config": dataclasses.asdict(config),
                   "jaxqc": {"steps": res.steps_done, "steps_per_s": res.steps_per_s, "compile_s": res.compile_s,
                             "stopped": res.stopped, "E0_kcal_mol": float(res.E[0])}}
            if peer:
                calc = MACECalculator(models=[tm], device="cpu", default_dtype=dtype,
                                      energy_units_to_eV=1.0 / EV_KCAL_MOL)  # the model speaks kcal/mol
                atoms = Atoms(numbers=Z, positions=R0)
                atoms.calc = calc
                e_peer = atoms.get_potential_energy() * EV_KCAL_MOL
                MaxwellBoltzmannDistribution(atoms, temperature_K=500.0, rng=np.random.default_rng(0))
                dyn = Langevin(atoms, 0.5 * units.fs, temperature_K=500.0, friction=0.01 / units.fs,
                               rng=np.random.default_rng(0))
                dyn.run(MD_WARMUP)
                t = time.perf_counter()
                dyn.run(peer_steps)
                wall = time.perf_counter() - t
                row["ase_mace_torch"] = {"steps": peer_steps, "steps_per_s": peer_steps / wall,
                                         "E0_kcal_mol": float(e_peer)}
                row["E0_abs_diff_kcal_mol"] = abs(float(e_peer) - float(res.E[0]))
                row["speedup_jaxqc_over_ase_mace_torch"] = res.steps_per_s / row["ase_mace_torch"]["steps_per_s"]
            out[f"{case}_{dtype}"] = row
            print(f"  md {case} {dtype}: jaxqc {res.steps_per_s:.0f} steps/s (compile {res.compile_s:.1f} s)"
                  + (f", ASE + mace-torch {row['ase_mace_torch']['steps_per_s']:.0f} steps/s: "
                     f"{row['speedup_jaxqc_over_ase_mace_torch']:.1f}x; |dE0| {row['E0_abs_diff_kcal_mol']:.1e}"
                     if peer else ""), flush=True)
    return out


# ---- main -------------------------------------------------------------------------------------------
def machine() -> dict:
    import jax

    info = {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": n_threads(),
            "python": platform.python_version(), "jax": jax.__version__,
            "xla_flags": os.environ.get("XLA_FLAGS", "")}
    try:
        import e3nn_jax
        info["e3nn_jax"] = e3nn_jax.__version__
    except ImportError:
        pass
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    return info


def peer_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("mace-torch", "torch", "e3nn", "opt-einsum-fx"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def plot_ratios(results: dict, path: Path) -> bool:
    """Bars: jaxqc / mace-torch throughput per config, case and measurement, with the 2x target."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ratios = results["speed"].get("speedup_jaxqc_over_mace_torch") or {}
    if not ratios:
        return False
    labels, train, infer = [], [], []
    for config, by_case in ratios.items():
        for case, r in by_case.items():
            labels.append(f"{config}\n{case.replace('_b', ' x')}")
            train.append(r["train_mol_per_s"])
            infer.append(r["infer_mol_per_s"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(labels) + 2), 3.8))
    ax.bar(x - 0.2, train, 0.4, label="train step (E + F)")
    ax.bar(x + 0.2, infer, 0.4, label="inference (E + F)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(2.0, color="r", ls="--", lw=0.8, label="target 2x")
    ax.set_xticks(x, labels, fontsize=8)
    if max(train + infer) / min(train + infer) > 20:
        ax.set_yscale("log")
    ax.set(ylabel="jaxqc / mace-torch (molecules/s)",
           title=f"MACE, float32, {results['machine']['threads']} CPU threads")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="CI-sized")
    p.add_argument("--no-peer", action="store_true")
    p.add_argument("--section", nargs="+", choices=["speed", "same", "md"], default=["speed", "same"],
                   help="speed: train / inference throughput; same: the weight transfer; md: MD steps/s against "
                        "ASE with mace-torch's calculator")
    p.add_argument("--configs", nargs="+", choices=list(CONFIGS), help="speed: these configs only (default all)")
    p.add_argument("--all-envs", action="store_true", help="time each code under both malloc settings, keep its best")
    p.add_argument("--out", default=str(OUT), help="results prefix: <out>_speed.json / .png")
    p.add_argument("--speed-worker", choices=["jaxqc", "mace-torch"], help=argparse.SUPPRESS)
    p.add_argument("--same-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--md-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.speed_worker or args.same_worker or args.md_worker:
        res = speed_worker(args) if args.speed_worker else same_worker(args) if args.same_worker else md_worker(args)
        Path(args.worker_out).write_text(json.dumps(res, default=float))
        return res
    have_peer = importlib.util.find_spec("mace") is not None and importlib.util.find_spec("torch") is not None
    peer = have_peer and not args.no_peer
    t0 = time.perf_counter()
    results = {"experiment": "mace_peer", "quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M"),
               "machine": machine(), "peer": peer_versions() if peer else None,
               "peer_skipped": None if peer else ("--no-peer" if have_peer else "mace-torch is not installed"),
               "cases": [list(c) for c in (QUICK["cases"] if args.quick else CASES)],
               "n_batches": QUICK["n_batches"] if args.quick else N_BATCHES, "lr": LR,
               "envs": {"all": ENVS, "used": "all, best kept" if args.all_envs else ENV_OF}}
    if "speed" in args.section:
        results["speed"] = speed(args, peer)
    if "same" in args.section and peer:
        print("same function (float64) ...", flush=True)
        results["same_function"] = run_worker(["--same-worker"] + (["--quick"] if args.quick else []), {})
    if "md" in args.section:
        print("MD steps/s ...", flush=True)
        results["md"] = run_worker(["--md-worker"] + (["--quick"] if args.quick else [])
                                   + (["--no-peer"] if not peer else []), {})
    results["wall_s"] = time.perf_counter() - t0
    out = Path(args.out + ("_speed" if "speed" in args.section or "same" in args.section else "_md")).with_suffix(".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if "speed" in results and plot_ratios(results, out.with_suffix(".png")):
        results["plot"] = str(out.with_suffix(".png"))
    from jaxqc.files import atomic_write_text
    atomic_write_text(out, json.dumps(results, indent=1, default=float))
    for config, by_case in (results.get("speed", {}).get("speedup_jaxqc_over_mace_torch") or {}).items():
        for case, r in by_case.items():
            print(f"jaxqc / mace-torch, {config}, {case}: train {r['train_mol_per_s']:.2f}x, "
                  f"inference {r['infer_mol_per_s']:.2f}x", flush=True)
    print(f"wrote {out} ({results['wall_s']:.0f} s)", flush=True)
    return results


if __name__ == "__main__":
    main()
