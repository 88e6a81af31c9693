"""The training loop every network shares: optax, fixed padding buckets, checkpoints, logs, devices.

A run directory holds config.json, checkpoint.npz (the full training state, written atomically after
the first epoch, then every `checkpoint_every_s` seconds and at the end), model.npz (the best model on
validation, a jaxqc model file, written with each checkpoint),
metrics.jsonl / metrics.csv (one row per epoch) and learning_curve.png. `resume=True` continues a killed
run from its checkpoint and reproduces the uninterrupted run: the data order of epoch k depends only on
(seed, k), and the optimiser, EMA, plateau and early-stopping state are all in the checkpoint.

Data parallel: with more than one device the batch is sharded over a 1-D device mesh ("batch") and the
parameters are replicated; XLA inserts the gradient all-reduce. Multi-host runs call
jax.distributed.initialize() first (cli: --coordinator/--num-processes/--process-id).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Protocol

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ..data.io import atomic_path, atomic_write_text
from ..data.molecules import Dataset, Molecules, atom_buckets, batches, edge_options
from ..errors import JaxqcError, WriteError
from ..files import rescue_dir, run_lock, write_failed
from ..potential import energy_and_forces_fn, save_model
from .checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint


class TrainingDiverged(JaxqcError):
    """The loss became NaN/inf or grew past the divergence limit; the last good checkpoint is kept."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    epochs: int = 1000
    time_budget_min: float | None = None    # stop after this much training time (checked every epoch)
    optimizer: str = "adam"                 # adam | adamw
    lr: float = 5e-4
    weight_decay: float = 0.0               # adamw only
    warmup_steps: int = 0                   # linear warm-up of the learning rate
    schedule: str = "plateau"               # plateau (decay on validation plateau) | exponential | constant
    decay_steps: int = 100_000              # exponential: lr * 0.1 ** (step / decay_steps)
    plateau_patience: int = 10              # epochs without validation improvement before lr *= factor
    plateau_factor: float = 0.5
    min_lr: float = 1e-6
    clip_norm: float | None = 10.0          # global gradient-norm clipping
    ema_decay: float | None = 0.99          # exponential moving average of the parameters (validation, model)
    energy_weight: float = 1.0              # loss = w_E MSE(E)/scale^2 + w_F MSE(F)/scale^2
    force_weight: float = 0.0               # > 0: train on forces (-dE/dR) too
    patience: int = 50                      # early stopping: epochs without validation improvement
    divergence_factor: float = 1e3          # stop if an epoch's loss exceeds this x the first epoch's
    seed: int = 0
    n_buckets: int = 8                      # atom-count padding buckets (dense pairs cost A^2: more buckets, less padding)
    checkpoint_every_s: float = 60.0        # checkpoint (and best model file) after epoch 1, then at most this often, and at the end


@flax.struct.dataclass
class TrainState:
    net: dict            # trained parameters
    stats: dict          # fixed scale / shift / element references
    opt_state: optax.OptState
    ema: dict            # EMA of net (equal to net when ema_decay is None)
    step: jnp.ndarray


def make_optimizer(cfg: TrainConfig):
    def build(learning_rate):
        opt = (optax.adamw(learning_rate, weight_decay=cfg.weight_decay) if cfg.optimizer == "adamw"
               else optax.adam(learning_rate))
        return optax.chain(optax.clip_by_global_norm(cfg.clip_norm), opt) if cfg.clip_norm else opt

    if cfg.optimizer not in ("adam", "adamw"):
        raise JaxqcError(f"unknown optimizer {cfg.optimizer!r}; adam or adamw")
    return optax.inject_hyperparams(build)(learning_rate=cfg.lr)


def learning_rate(cfg: TrainConfig, step: int, plateau_scale: float) -> float:
    warm = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
    decay = 0.1 ** (step / cfg.decay_steps) if cfg.schedule == "exponential" else 1.0
    return max(cfg.min_lr, cfg.lr * warm * decay * plateau_scale) if cfg.schedule != "constant" else cfg.lr * warm


def label(batch: Molecules, target: str):
    return batch.E if target == "energy" else batch.props[target]


def make_train_step(loss_fn, tx, cfg: TrainConfig):
    """train_step(state, batch, lr) -> (state, loss): one optimiser step on loss_fn(net, stats, batch, key)
    (key: a PRNG key of this step, for objectives that draw, e.g. random rotations), then the EMA."""

    def train_step(state: TrainState, batch: Molecules, lr):
        key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), state.step)
        loss, grads = jax.value_and_grad(loss_fn)(state.net, state.stats, batch, key)
        opt_state = state.opt_state
        opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, opt_state.hyperparams["learning_rate"].dtype)
        updates, opt_state = tx.update(grads, opt_state, state.net)
        net = optax.apply_updates(state.net, updates)
        d = cfg.ema_decay
        ema = jax.tree_util.tree_map(lambda a, b: d * a + (1 - d) * b, state.ema, net) if d else net
        return state.replace(net=net, opt_state=opt_state, ema=ema, step=state.step + 1), loss

    return train_step


class Objective(Protocol):
    """What a model trains on when it is more than an energy (SchNOrb: H and S matrices too). The loop asks:
    make_steps(cfg) -> (tx, train_step, eval_step) (make_train_step builds the train step from a loss);
    eval_step(net, stats, batch) -> sums; summarise(sums) -> {metric: value}; metric_key: the name of the
    validation metric (a key of summarise's dict) that selects the best model, smaller is better. Optional:
    legacy_metric_key, what checkpoints older than the recorded key were selected by."""

    metric_key: str

    def make_steps(self, cfg: TrainConfig): ...

    def summarise(self, tot: dict) -> dict: ...


def make_steps(energy, cfg: TrainConfig, target: str):
    """(train_step, eval_step) pure functions for jit."""
    e_and_f = energy_and_forces_fn(energy)
    use_forces = cfg.force_weight > 0
    tx = make_optimizer(cfg)

    def predict(net, stats, batch):
        params = {"net": net, "stats": stats}
        if use_forces:
            return e_and_f(params, batch)
        return energy(params, batch), None

    def loss_fn(net, stats, batch):
        e, f = predict(net, stats, batch)
        m = batch.mol_mask
        n_mol = jnp.maximum(jnp.sum(m), 1)
        scale2 = stats["scale"] ** 2
        loss = cfg.energy_weight * jnp.sum(jnp.where(m, (e - label(batch, target)) ** 2, 0.0)) / n_mol / scale2
        if use_forces:
            am = batch.mask & m[:, None]
            n_comp = jnp.maximum(3 * jnp.sum(am), 1)
            loss = loss + cfg.force_weight * jnp.sum(jnp.where(am[..., None], (f - batch.F) ** 2, 0.0)) / n_comp / scale2
        return loss

    train_step = make_train_step(lambda net, stats, batch, key: loss_fn(net, stats, batch), tx, cfg)

    def eval_step(net, stats, batch: Molecules):
        """Sums over the batch: |dE|, dE^2, molecules, and |dF|, dF^2, components when forces are known."""
        params = {"net": net, "stats": stats}
        if batch.F is not None and target == "energy":
            e, f = e_and_f(params, batch)
        else:
            e, f = energy(params, batch), None
        m = batch.mol_mask
        de = jnp.where(m, e - label(batch, target), 0.0)
        out = {"e_abs": jnp.sum(jnp.abs(de)), "e_sq": jnp.sum(de**2), "n_mol": jnp.sum(m)}
        if f is not None:
            am = (batch.mask & m[:, None])[..., None]
            df = jnp.where(am, f - batch.F, 0.0)
            out.update(f_abs=jnp.sum(jnp.abs(df)), f_sq=jnp.sum(df**2), n_comp=3 * jnp.sum(am))
        return out

    return tx, train_step, eval_step


def device_mesh(n_devices: int | None = None) -> Mesh:
    devices = jax.devices()[: n_devices or len(jax.devices())]
    return Mesh(np.array(devices), ("batch",))


def evaluate_batches(eval_step, net, stats, data: Dataset, idx, batch_size, buckets, put=lambda b: b,
                     edge_kw: dict | None = None, summarise=None) -> dict:
    """MAE / RMSE of energies (or the target) and forces over the molecules idx (edge_kw: edge_options);
    summarise(sums) instead for an Objective's own metrics."""
    tot = {}
    for batch in batches(data, idx, batch_size, buckets, **(edge_kw or {})):
        for k, v in eval_step(net, stats, put(batch)).items():
            tot[k] = tot.get(k, 0.0) + np.asarray(v, np.float64)
    if summarise is not None:
        return summarise(tot)
    out = {"energy_mae": tot["e_abs"] / tot["n_mol"], "energy_rmse": math.sqrt(tot["e_sq"] / tot["n_mol"])}
    if "f_abs" in tot:
        out.update(forces_mae=tot["f_abs"] / tot["n_comp"], forces_rmse=math.sqrt(tot["f_sq"] / tot["n_comp"]))
    return out


def _progress(epoch, cfg, t_run, meta, row, metric, end=False):
    # the sooner of the epoch budget (at the pace so far) and the wall-clock budget or guard
    left = t_run / max(1, epoch + 1 - meta["start_epoch"]) * (cfg.epochs - epoch - 1)
    if cfg.time_budget_min:
        left = min(left, max(0.0, 60 * cfg.time_budget_min - t_run))
    of = f"/{cfg.epochs}" if cfg.epochs < 10**8 else ""  # a time budget without an epoch limit: no total
    print(f"\r  epoch {epoch + 1}{of}  loss {row['train_loss']:.4g}  valid MAE {metric:.4g}  "
          f"lr {row['lr']:.2e}  {t_run:.0f} s  ETA {left:.0f} s   ", end="\n" if end else "", file=sys.stderr,
          flush=True)


BUDGET_FIELDS = ("epochs", "time_budget_min", "checkpoint_every_s")  # may change on resume: how long, not what


def run_identity(kind: str, target: str, model_config, cfg: TrainConfig, provenance: dict | None, tr, va) -> dict:
    """What a resumed run must share with its checkpoint, flat and JSON-able: the model family and config,
    the training settings except the budget (BUDGET_FIELDS), the data set's md5 and the split."""
    model = dataclasses.asdict(model_config)
    train = {k if k not in model else f"train.{k}": v for k, v in dataclasses.asdict(cfg).items()
             if k not in BUDGET_FIELDS}
    split = hashlib.md5(np.asarray(tr, np.int64).tobytes() + b"|" + np.asarray(va, np.int64).tobytes())
    ident = {"model": kind, "target": target, "data set md5": (provenance or {}).get("dataset_md5"),
             "train/valid split (md5 of the indices)": split.hexdigest()[:12], **model, **train}
    return json.loads(json.dumps(ident, default=str))


def resume_mismatch(saved: dict, now: dict) -> str | None:
    """'features 64 != 128 in the checkpoint' for the first setting that differs, or None. Settings one side
    does not record (another jaxqc version) are not compared."""
    for k, v in now.items():
        if k in saved and saved[k] != v and v is not None and saved[k] is not None:
            return f"{k} {_show(v)} != {_show(saved[k])} in the checkpoint"
    return None


def _show(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def train(kind: str, model_config, energy, params: dict, data: Dataset, split: dict, cfg: TrainConfig,
          run_dir, target: str = "energy", resume: bool = False, n_devices: int | None = None,
          provenance: dict | None = None, progress: bool = True, stop_after_epochs: int | None = None,
          check_same_run: bool = True, objective: Objective | None = None) -> dict:
    """Train `params` ({"net", "stats"}) of `energy` on data[split["train"]], validating on split["valid"].
    Returns a summary dict; raises TrainingDiverged (after keeping the last good checkpoint), WriteError
    (a file could not be written: the state is saved elsewhere if possible) and RunLocked (another process
    writes `run_dir`: the run directory is locked for the whole run, on process 0 of a multi-host run).
    `resume` continues from run_dir's checkpoint (if there is one) after checking that the run is the same
    (run_identity; `check_same_run=False` continues a checkpoint with other settings on purpose).
    `stop_after_epochs` ends this call early (as a kill would), for tests of --resume. `objective`: the
    model's own loss and validation metrics (default: energies, and forces when force_weight > 0)."""
    lock = run_lock(run_dir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return _train(kind, model_config, energy, params, data, split, cfg, Path(run_dir), target, resume,
                      n_devices, provenance, progress, stop_after_epochs, check_same_run, objective)


def _train(kind, model_config, energy, params, data, split, cfg, run_dir: Path, target, resume, n_devices,
           provenance, progress, stop_after_epochs, check_same_run, objective=None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    mesh = device_mesh(n_devices)
    n_dev = mesh.devices.size
    if cfg.batch_size % n_dev:
        raise JaxqcError(f"batch size {cfg.batch_size} is not divisible by the {n_dev} devices")
    repl = NamedSharding(mesh, PartitionSpec())
    shard = NamedSharding(mesh, PartitionSpec("batch"))
    put = lambda b: jax.device_put(b, shard)  # noqa: E731
    tx, train_step, eval_step = objective.make_steps(cfg) if objective else make_steps(energy, cfg, target)
    summarise = objective.summarise if objective else None

    def select_key(valid: dict) -> str:
        """The validation metric that selects the model: the objective's; else forces when they are trained,
        else the energy (or property)."""
        if objective:
            return objective.metric_key
        return "forces_mae" if cfg.force_weight > 0 and "forces_mae" in valid else "energy_mae"

    def select(valid: dict) -> float:
        return valid[select_key(valid)]

    train_step = jax.jit(train_step, out_shardings=(repl, repl), donate_argnums=0)
    eval_step = jax.jit(eval_step)
    tr, va = np.asarray(split["train"]), np.asarray(split["valid"])
    buckets = atom_buckets(data.n_atoms[np.concatenate([tr, va])], n_buckets=cfg.n_buckets, multiple=1)
    edge_kw = edge_options(model_config, data, np.concatenate([tr, va]), buckets)  # {} for dense-pair networks

    state = TrainState(net=params["net"], stats=params["stats"], opt_state=tx.init(params["net"]),
                       ema=jax.tree_util.tree_map(jnp.copy, params["net"]),  # own buffers: the step donates both
                       step=jnp.zeros((), jnp.int32))
    meta = {"epoch": -1, "best": None, "best_epoch": -1, "bad_epochs": 0, "plateau_bad": 0, "plateau_scale": 1.0,
            "first_loss": None, "elapsed_s": 0.0, "best_metric": None}
    ckpt, model_path, log_path = run_dir / "checkpoint.npz", run_dir / "model.npz", run_dir / "metrics.jsonl"
    identity = run_identity(kind, target, model_config, cfg, provenance, tr, va)
    if resume and ckpt.exists():
        differs = check_same_run and resume_mismatch(read_checkpoint_meta(ckpt).get("run", {}), identity)
        if differs:
            raise JaxqcError(f"--resume: {differs} ({ckpt}); resume with the settings the run was started with")
        state, saved = load_checkpoint(ckpt, state)
        meta.update({k: saved[k] for k in meta if k in saved})
        if "best_metric" not in saved and objective is not None:
            meta["best_metric"] = getattr(objective, "legacy_metric_key", None)
        if log_path.exists():  # drop rows of epochs after the checkpoint: they are trained again
            rows = [r for r in read_log(log_path) if r["epoch"] <= meta["epoch"] + 1]
            atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in rows))
        if progress:
            print(f"  resuming after epoch {meta['epoch'] + 1} ({meta['elapsed_s']:.0f} s trained)", file=sys.stderr)
    elif log_path.exists():
        log_path.unlink()
    config_json = {"kind": kind, "target": target, "model": dataclasses.asdict(model_config),
                   "train": dataclasses.asdict(cfg), "buckets": list(buckets), "n_devices": n_dev}
    atomic_write_text(run_dir / "config.json", json.dumps(config_json, indent=1))
    state = jax.device_put(state, repl)
    meta["start_epoch"] = meta["epoch"] + 1
    t_start = time.perf_counter() - meta["elapsed_s"]
    step = int(state.step)  # counted on the host: reading state.step would wait for every step
    best_params, ckpt_epoch, t_ckpt = None, meta["epoch"], time.perf_counter()
    config_units = _units(target)

    def save_pair(folder: Path, best):
        """The best model (if it changed) and then the full state: the pair always agrees on disk."""
        if best is not None:
            save_model(folder / model_path.name, kind, {"net": jax.device_get(best[0]),
                                                        "stats": jax.device_get(state.stats)},
                       config_json, {**(provenance or {}), "epoch": best[1], "validation": best[2],
                                     "train_idx": tr, "valid_idx": va}, config_units)
        save_checkpoint(folder / ckpt.name, jax.device_get(state),
                        {**{k: v for k, v in meta.items() if k != "start_epoch"}, "run": identity})

    def stopped(err: Exception, rescued: Path | None = None) -> WriteError:
        """The one-line error of a write that failed mid-run: what failed, and where the trained state is."""
        if progress:
            print(file=sys.stderr)  # end the progress line: the error is a line of its own
        msg = str(err) if isinstance(err, WriteError) else write_failed(run_dir, err)
        msg += f"; training stopped after epoch {meta['epoch'] + 1}"
        if rescued is not None:
            msg += f"; its state is saved in {rescued} (move those files into {run_dir}, then add --resume)"
        if ckpt_epoch >= 0:
            msg += f"; the last checkpoint written (after epoch {ckpt_epoch + 1}) is kept in {ckpt}"
        return WriteError(msg + ("" if rescued is not None or ckpt_epoch >= 0 else "; no checkpoint was written"))

    def write_checkpoint():
        nonlocal best_params, ckpt_epoch, t_ckpt
        try:
            save_pair(run_dir, best_params)
        except (OSError, WriteError) as err:
            raise stopped(err, rescue_dir(lambda folder: save_pair(folder, best_params))) from None
        best_params = None
        ckpt_epoch, t_ckpt = meta["epoch"], time.perf_counter()

    stop_reason = "epochs"
    for epoch in range(meta["epoch"] + 1, cfg.epochs):
        losses, weights = [], []
        for batch in batches(data, tr, cfg.batch_size, buckets, shuffle=True, seed=cfg.seed * 100_003 + epoch,
                             **edge_kw):
            lr = learning_rate(cfg, step, meta["plateau_scale"])
            state, loss = train_step(state, put(batch), lr)
            step += 1
            losses.append(loss)
            weights.append(float(np.sum(np.asarray(batch.mol_mask))))
        train_loss = float(np.average(np.asarray(jax.device_get(losses)), weights=weights))
        if meta["first_loss"] is None:
            meta["first_loss"] = train_loss
        if not np.isfinite(train_loss) or train_loss > cfg.divergence_factor * meta["first_loss"]:
            if progress:
                print(file=sys.stderr)
            raise TrainingDiverged(
                f"training diverged in epoch {epoch + 1}: loss {train_loss:.4g} (first epoch {meta['first_loss']:.4g}); "
                f"stopped, the last good checkpoint (after epoch {ckpt_epoch + 1}) and best model are kept in "
                f"{run_dir}. Lower the learning rate (now {cfg.lr:g}) or raise clipping")
        params_eval = state.ema
        valid = evaluate_batches(eval_step, params_eval, state.stats, data, va, cfg.batch_size, buckets, put, edge_kw,
                                 summarise)
        metric = select(valid)
        t_run = time.perf_counter() - t_start
        row = {"epoch": epoch + 1, "step": step, "time_s": t_run, "lr": lr, "train_loss": train_loss,
               **{f"valid_{k}": v for k, v in valid.items()}}
        try:
            with open(log_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
        except OSError as err:
            raise stopped(WriteError(write_failed(log_path, err))) from None
        key = select_key(valid)
        if meta["best"] is not None and meta["best_metric"] not in (None, key):
            # a resumed run whose best model was chosen by another metric: comparing the two would be wrong
            if progress:
                print(f"\n  the best model so far was chosen by validation {meta['best_metric']}; from epoch "
                      f"{epoch + 1} it is chosen by {key}", file=sys.stderr)
            meta["best"] = None
        improved = meta["best"] is None or metric < meta["best"]
        if improved:
            meta.update(best=metric, best_epoch=epoch + 1, bad_epochs=0, plateau_bad=0, best_metric=key)
            # a copy: the next train_step donates (overwrites) the state's buffers
            best_params = (jax.tree_util.tree_map(jnp.copy, params_eval), epoch + 1, valid)
        else:
            meta["bad_epochs"] += 1
            meta["plateau_bad"] += 1
            if cfg.schedule == "plateau" and meta["plateau_bad"] >= cfg.plateau_patience:
                meta["plateau_scale"] *= cfg.plateau_factor
                meta["plateau_bad"] = 0
        meta.update(epoch=epoch, elapsed_s=t_run)
        if epoch == meta["start_epoch"] or time.perf_counter() - t_ckpt >= cfg.checkpoint_every_s:
            write_checkpoint()
        if progress:
            _progress(epoch, cfg, t_run, meta, row, metric)
        if meta["bad_epochs"] >= cfg.patience:
            stop_reason = "early stopping"
            break
        if cfg.time_budget_min and t_run >= 60 * cfg.time_budget_min:
            stop_reason = "time budget"
            break
        if cfg.schedule == "plateau" and cfg.lr * meta["plateau_scale"] < cfg.min_lr:
            stop_reason = "learning rate below min_lr"
            break
        if stop_after_epochs is not None and epoch + 1 - meta["start_epoch"] >= stop_after_epochs:
            stop_reason = "stopped (stop_after_epochs)"
            break
    if ckpt_epoch != meta["epoch"] or best_params is not None:
        write_checkpoint()
    if progress:
        print(file=sys.stderr)
    write_csv(log_path, run_dir / "metrics.csv")
    plot_learning_curve(log_path, run_dir / "learning_curve.png")
    return {"stop_reason": stop_reason, "epochs": meta["epoch"] + 1, "best_epoch": meta["best_epoch"],
            "best_valid": meta["best"], "best_metric": meta["best_metric"], "time_s": meta["elapsed_s"], "steps": step,
            "state": jax.device_get(state), "run_dir": str(run_dir)}


def _units(target: str) -> dict:
    from ..data.qm9 import QM9_TARGETS

    return {"R": "Å", "E": "kcal/mol", "F": "kcal/mol/Å", "target": QM9_TARGETS.get(target, "kcal/mol")}


def read_log(log_path) -> list:
    """The rows of metrics.jsonl; a last line cut short (a full disk, a kill mid-write) is dropped."""
    lines = [line for line in Path(log_path).read_text().splitlines() if line.strip()]
    rows = []
    for k, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if k < len(lines) - 1:
                raise
    return rows


def write_csv(log_path, csv_path) -> None:
    rows = read_log(log_path) if Path(log_path).exists() else []
    if not rows:
        return
    keys = list(rows[-1])
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    atomic_write_text(csv_path, "\n".join(lines) + "\n")


def plot_learning_curve(log_path, png_path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    rows = read_log(log_path) if Path(log_path).exists() else []
    if not rows:
        return False
    t = [r["time_s"] / 60 for r in rows]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9, 3.5))
    a1.semilogy(t, [r["train_loss"] for r in rows])
    a1.set(xlabel="training time (min)", ylabel="train loss")
    keys = [k for k in ("valid_energy_mae", "valid_forces_mae") if k in rows[-1]]
    if not keys:  # an objective's own metrics (SchNOrb, G-SchNet): its validation loss or first metric
        keys = [k for k in rows[-1] if k.startswith("valid_") and isinstance(rows[-1][k], float)][:1]
    for k in keys:
        a2.semilogy(t, [r[k] for r in rows], label=k[6:])
    a2.set(xlabel="training time (min)", ylabel="validation")
    if keys:
        a2.legend()
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return True
