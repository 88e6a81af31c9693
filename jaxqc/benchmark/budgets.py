"""Budgets of a comparison: each family's frozen `Budget` (models/<family>.py), read here, never edited.

A budget counts work, not wall time: training sizes, optimiser epochs (networks) and grids, so the same
command gives the same table on a busy machine as on an idle one. `max_minutes` is a guard only: a run
that hits it says so (`hit_time_guard` in its row) and is then not reproducible.
"""
from __future__ import annotations

from ..errors import JaxqcError
from ..models.registry import LEVELS, Budget

ADVERTISED = ("quick", "paper")  # "tiny" (seconds; tests) is accepted but not advertised

NOTES = {
    "quick": ("quick: small N, networks trained for a fixed number of epochs (not to convergence); about 9 min "
              "on 2 idle CPU cores for ethanol-xtb"),
    "paper": ("paper: the published protocols (rMD17: 1000 frames = 950 training + 50 validation; QM9: N up to "
              "110k; networks at their published sizes, trained to early stopping with a 24 h (MD) / 48 h (QM9) "
              "wall-clock guard): runs for accelerators"),
    "tiny": "tiny: a few frames and epochs; exercises every code path in seconds (tests), no meaningful errors",
}

# budget options that describe a run instead of configuring it (shown in the plan, not in "settings")
DESCRIPTIVE = ("model", "note", "reference")


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise JaxqcError(f"unknown budget {level!r}; one of {', '.join(ADVERTISED)}")
    return level


def train_sizes(budget: Budget, n_pool: int) -> list:
    """The budget's training sizes clamped to the pool (N = 1000 on rMD17 is 950 + 50 validation)."""
    return sorted({min(int(n), int(n_pool)) for n in budget.n_train})


def for_data(budget: Budget, learn_forces: bool) -> Budget:
    """The budget a method runs with: option "forces" (fit forces too) set where the data has forces and
    the model outputs them, unless the spec's budget decides it."""
    if learn_forces and "forces" not in budget.options:
        return budget.replace(options={**budget.options, "forces": True})
    return budget


def settings(budget: Budget) -> dict:
    """What the plan shows of a budget: epochs, the time guard and the options that configure the fit."""
    out = {k: v for k, v in budget.options.items() if k not in DESCRIPTIVE}
    if budget.epochs is not None:
        out["epochs"] = int(budget.epochs)
    if budget.max_minutes is not None:
        out["max_minutes"] = float(budget.max_minutes)
    return out


def size_note(spec, config, budget: Budget) -> str | None:
    """'features 64 (published 128), ...' for the budget's model settings that differ from the family's."""
    published = spec.make_config()
    diffs = [f"{k} {getattr(config, k)} (published {getattr(published, k)})"
             for k in budget.options.get("model", {}) if getattr(config, k) != getattr(published, k)]
    return "model settings of this budget: " + ", ".join(diffs) if diffs else None


def epochs_note(budget: Budget) -> str | None:
    """The note of a budget counted in epochs: fixed work, best-on-validation model, the guard."""
    if budget.epochs is None:
        return None
    guard = (f"; a {budget.max_minutes:g}-min wall-clock guard stops it earlier (then hit_time_guard is true and "
             f"the row depends on the machine's speed)" if budget.max_minutes is not None else "")
    return (f"trained for {budget.epochs} epochs (or early stopping on the validation frames), not to "
            f"convergence; the best validation model is evaluated{guard}")
