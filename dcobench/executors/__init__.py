"""Executors: who runs a plan's units (`plan.Unit`: one training and the cells that use its LoRA).

    local   this process, one unit after another (`local.py`)
    ray     one Ray core task per unit, on a local Ray instance or a cluster (`ray.py`)

An executor is a function `run(plan, store, units, progress, on_cell) -> {"trained": n, "sampled": n,
"failed": [records]}` (`failures.py`: a unit that raises is recorded and the others go on, unless
`executor.fail_fast`).
Both hand each unit to `execute.run_unit`, which does the work under the run folder's locks, so the
files a run writes, and the report folded from them, do not depend on the executor, and any mix of
processes, shards and executors can share one folder.
"""

from __future__ import annotations

import importlib

EXECUTORS = {"local": "dcobench.executors.local:run_local", "ray": "dcobench.executors.ray:run_ray"}


def get_executor(name: str):
    """The executor function, imported on first use (Ray only when it is asked for)."""
    module, _, attr = EXECUTORS[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def context_spec(plan) -> tuple:
    """What a worker needs to open the run's Context (`execute.Context.open`)."""
    cells = plan.cells + plan.merge_cells
    return plan.config, plan.suite.model, cells[0].train.resolution, cells[0].model_id


def add(totals: dict, stats: dict | None) -> None:
    """Counts add up; lists (`failed`: the failed cells' records) are joined."""
    for k, v in (stats or {}).items():
        totals[k] = totals.get(k, [] if isinstance(v, list) else 0) + v
