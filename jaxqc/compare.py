"""`jaxqc compare`, kept as a compatibility module: the comparison lives in jaxqc.benchmark (protocol,
runner, worker, report, budgets) and every method comes from the model registry.

    from jaxqc.compare import main          # the CLI command
    python -m jaxqc.compare SPEC.json       # an alias of python -m jaxqc.benchmark.worker SPEC.json
"""
from __future__ import annotations

import sys

from .benchmark.budgets import ADVERTISED as BUDGETS
from .benchmark.budgets import NOTES as BUDGET_NOTES
from .benchmark.protocol import check_test_data, data_kind, formula, make_protocol, read_data
from .benchmark.report import format_plan, format_table, make_plots, table_rows
from .benchmark.runner import build, main, make_plan, parse_methods, plan_json, run, run_method
from .benchmark.worker import peak_mb, reset_peak, status_mb
from .benchmark.worker import main as worker_main

__all__ = ["BUDGETS", "BUDGET_NOTES", "METHODS", "build", "check_test_data", "data_kind", "format_plan",
           "format_table", "formula", "main", "make_plan", "make_plots", "make_protocol", "parse_methods", "peak_mb",
           "plan_json", "read_data", "reset_peak", "run", "run_method", "status_mb", "table_rows", "worker_main"]


def __getattr__(name: str):
    if name == "METHODS":  # every registered method, in table order (read when asked: plugins may add some)
        from .benchmark.runner import all_methods

        return tuple(all_methods())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1]))
