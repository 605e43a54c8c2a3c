"""The local executor: this process runs every unit in turn, with one pipeline in memory.

A unit another process is running right now (a second `dcobench run` or shard on the same folder)
is put off to the end and then waited for, so the processes split the work between them.
"""

from __future__ import annotations

from ..execute import Context
from ..units import run_unit
from . import add, context_spec


def run_local(plan, store, units, progress, on_cell) -> dict:
    ctx: list[Context] = []

    def context() -> Context:
        if not ctx:
            ctx.append(Context.open(*context_spec(plan)))
        return ctx[0]

    totals = {"trained": 0, "sampled": 0, "failed": []}
    fail_fast = plan.config.executor.fail_fast
    later = []
    for unit in units:
        stats = run_unit(context, unit, store, progress, wait=False, on_cell=on_cell, fail_fast=fail_fast)
        if stats is None:
            later.append(unit)
        add(totals, stats)
    for unit in later:  # another process held them: wait for it, then finish what it left
        add(totals, run_unit(context, unit, store, progress, wait=True, on_cell=on_cell, fail_fast=fail_fast))
    return totals
