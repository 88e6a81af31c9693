"""Differentiating through a simulation: trajectory averages as functions of (params, R0) that `jax.grad`
takes through `simulate`'s `lax.scan`, and directional finite-difference checks of such gradients.

    init_fn, step_fn = nve(molecule_force_field(energy, Z), masses, dt_fs)
    mean_co = trajectory_average(init_fn, step_fn, v0, steps, bond_length(1, 2))
    value, (g_params, g_R0) = jax.value_and_grad(mean_co, argnums=(0, 1))(params, R0)

Run in float64 (`jax.enable_x64`) for gradients that agree with finite differences to ~1e-7.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .integrators import simulate


def bond_length(i: int, j: int) -> Callable:
    """observable(R [..., A, 3]) -> [...] Å: the distance between atoms i and j."""
    return lambda R: jnp.linalg.norm(R[..., i, :] - R[..., j, :], axis=-1)


def trajectory_average(init_fn, step_fn, v0, steps: int, observable: Callable) -> Callable:
    """Jitted f(params, R0) -> mean of observable(R) over the `steps` states after the start (positions R0
    [A, 3] Å, velocities v0 [A, 3] Å/fs) of the integrator (init_fn, step_fn); differentiable in both."""

    @jax.jit
    def f(params, R0):
        traj = simulate(step_fn, params, init_fn(params, R0, v0), steps)[1]  # traj.R [steps, A, 3]
        return jnp.mean(observable(traj.R))

    return f


def directional_checks(f, grads, x, rng, relative: bool, step: float = 1e-6) -> list:
    """[{leaf, grad_dot_d, finite_difference, rel_error}] for every floating leaf of the pytree x: the
    gradient `grads` of the scalar f at x along a random direction d (scaled by |x| elementwise when
    `relative`) against the central difference (f(x + step d) - f(x - step d)) / (2 step)."""
    rows = []
    leaves, treedef = jax.tree_util.tree_flatten(x)
    g_leaves = jax.tree_util.tree_leaves(grads)
    names = [jax.tree_util.keystr(k) for k, _ in jax.tree_util.tree_flatten_with_path(x)[0]]
    for i, (leaf, g) in enumerate(zip(leaves, g_leaves)):
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            continue
        d = rng.normal(size=leaf.shape) * (np.abs(np.asarray(leaf)) if relative else 1.0)

        def moved(s):
            new = list(leaves)
            new[i] = leaf + s * step * d
            return jax.tree_util.tree_unflatten(treedef, new)

        fd = float((f(moved(1.0)) - f(moved(-1.0))) / (2 * step))
        an = float(jnp.vdot(g, d))
        rows.append({"leaf": names[i], "grad_dot_d": an, "finite_difference": fd,
                     "rel_error": abs(an - fd) / max(abs(fd), 1e-300) if fd != 0 or an != 0 else 0.0})
    return rows
