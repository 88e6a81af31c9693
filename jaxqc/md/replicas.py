"""Many independent Langevin trajectories of one molecule at once, for stability studies of force fields.

The replicas' states are stacked on a leading axis [n] and advanced together by one vmapped, jitted BAOAB
step (jaxqc.md.integrators.nvt_langevin), in blocks of `block_steps` steps (one compiled block). After
every step each replica is checked: every covalent bond of the start geometry (jaxqc.md.run.start_bonds,
as `jaxqc md`'s guard) must stay within `bond_range_ang`, and positions and energy must be finite.
A replica's first step outside is recorded and the replica is frozen there (its state stops changing), so
one unphysical trajectory neither stops the others nor spreads non-finite numbers.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from ..elements import masses_amu
from ..errors import JaxqcError
from . import integrators as md
from .models import cast_params
from .run import start_bonds


def langevin_replicas(energy, params, Z, R0, steps: int, dt_fs: float = 0.5, temperature_k: float = 500.0,
                      friction_per_fs: float = 0.01, seed: int = 0, bond_range_ang=(0.7, 2.5),
                      block_steps: int = 2000, float64: bool = False, progress: bool = False) -> dict:
    """Integrate n replicas of the molecule Z [A] from R0 [n, A, 3] Å (Maxwell–Boltzmann velocities at
    temperature_k, seeded per replica) for `steps` steps of Langevin dynamics on energy(params, molecules).

    Returns {"first_bad_step": [n] (-1: stayed within the range for every step), "first_bad_ps": [n] (None
    for those), "why": [n] ("" or the reason), "mean_temperature_K": [n] over the steps each replica lived,
    "bonds": the checked (i, j) pairs, "steps", "run_s" (compilation excluded), "compile_s",
    "replica_steps_per_s"}."""
    Z = np.asarray(Z, np.int32)
    R0 = np.asarray(R0, np.float64)
    if R0.ndim != 3 or R0.shape[1:] != (len(Z), 3):
        raise JaxqcError(f"start geometries must be [replicas, {len(Z)}, 3], got {list(R0.shape)}")
    if steps < 1 or block_steps < 1:
        raise JaxqcError(f"steps and block_steps must be >= 1, got {steps} and {block_steps}")
    n, m = len(R0), masses_amu(Z)
    bi, bj = start_bonds(Z, R0[0], bond_range_ang)
    lo, hi = bond_range_ang
    dtype = jnp.float64 if float64 else jnp.float32
    with jax.enable_x64(float64):
        p = cast_params(params, dtype)
        init_fn, step_fn = md.nvt_langevin(md.molecule_force_field(energy, Z), m, dt_fs, temperature_k,
                                           friction_per_fs)
        keys = jax.random.split(jax.random.PRNGKey(seed), 2 * n)
        v0 = jax.vmap(lambda k: md.maxwell_boltzmann(k, m, temperature_k, dtype))(keys[:n])
        state = jax.jit(jax.vmap(init_fn, in_axes=(None, 0, 0, 0)))(p, jnp.asarray(R0, dtype), v0, keys[n:])
        vstep = jax.vmap(step_fn, in_axes=(None, 0))

        def sane(s):  # [n] bool
            d = jnp.linalg.norm(s.R[:, bi] - s.R[:, bj], axis=-1)
            inside = jnp.all((d >= lo) & (d <= hi), axis=-1) if len(bi) else jnp.ones(n, bool)
            return inside & jnp.isfinite(s.E) & jnp.all(jnp.isfinite(s.R), axis=(1, 2))

        def block(p, state, bad, t_sum, n_steps: int):
            def one(carry, _):
                s, bad, t_sum = carry
                new = vstep(p, s)
                alive = bad < 0
                newly = alive & ~sane(new)
                bad = jnp.where(newly, new.step, bad)
                keep = alive & ~newly
                s = jax.tree_util.tree_map(
                    lambda a, b: jnp.where(keep.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, s)
                T = md.temperature_k(s.v, m)  # [n] K
                return (s, bad, t_sum + jnp.where(keep, T, 0.0)), None

            return jax.lax.scan(one, (state, bad, t_sum), None, length=n_steps)[0]

        compiled, compile_s, run_s = {}, 0.0, 0.0
        bad = jnp.full(n, -1, jnp.int32)
        t_sum = jnp.zeros(n, dtype)
        done = 0
        while done < steps:
            k = min(block_steps, steps - done)
            if k not in compiled:
                t = time.perf_counter()
                compiled[k] = jax.jit(block, static_argnames="n_steps").lower(p, state, bad, t_sum, n_steps=k).compile()
                compile_s += time.perf_counter() - t
            t = time.perf_counter()
            state, bad, t_sum = compiled[k](p, state, bad, t_sum)
            bad_host = np.asarray(bad)
            run_s += time.perf_counter() - t
            done += k
            if progress:
                print(f"  {done * dt_fs / 1000:.1f} ps: {int((bad_host >= 0).sum())}/{n} replicas left the range "
                      f"({done * n / max(run_s, 1e-9):.0f} replica-steps/s)", flush=True)
            if np.all(bad_host >= 0):
                break
    bad = np.asarray(bad)
    lived = np.where(bad >= 0, bad - 1, done)
    return {"first_bad_step": bad.tolist(),
            "first_bad_ps": [float(b * dt_fs / 1000) if b >= 0 else None for b in bad],
            "why": ["" if b < 0 else f"a bond left [{lo:g}, {hi:g}] Å or a non-finite state" for b in bad],
            "mean_temperature_K": (np.asarray(t_sum) / np.maximum(lived, 1)).tolist(),
            "bonds": [[int(a), int(b)] for a, b in zip(bi, bj)], "steps": int(done), "run_s": run_s,
            "compile_s": compile_s, "replica_steps_per_s": done * n / run_s if run_s > 0 else float("nan")}
