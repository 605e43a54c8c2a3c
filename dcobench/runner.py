"""`dcobench run`: hand every unfinished unit of a plan to an executor, resumably.

A cell is done when its result.json exists; a rerun skips it, and a killed run resumes where it
stopped (a killed training from its last saved state, `resume.py`). `shard=(i, n)` keeps shard i
of n of the plan's units (`plan.shard`), so n processes or machines split a sweep without
training a LoRA twice. The executor (`executor.name`: local or ray) decides who runs the units;
every unit runs under the folder's locks, so any number of processes can share one folder.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .executors import get_executor
from .failures import failed_cells
from .locks import Locks
from .plan import Plan, shard as shard_units
from .store import RunDir, check_writable, write_json_if_changed

console = Console(stderr=True)


def record_run(plan: Plan, store: RunDir) -> None:
    """run.json: the resolved config, without how it was executed (the files do not depend on it)."""
    config = dataclasses.asdict(plan.config)
    config.pop("executor")
    with Locks(store.root).hold("run", "json"):
        write_json_if_changed(store.root / "run.json", {
            "suite": plan.suite.name, "model": plan.suite.model, "methods": plan.methods,
            **({"merge": plan.config.merge} if plan.config.merge else {}), "config": config,
        })


def run_plan(plan: Plan, out: str | Path, show_progress: bool = True, shard: tuple[int, int] | None = None) -> dict:
    """Run every unfinished cell (of shard `shard`, when given); returns counts of what was done and
    `failed`: the records of this shard's cells that failed and are not done (`failures.py`)."""
    store = RunDir(out)
    check_writable(store.root)
    record_run(plan, store)
    units = plan.units()
    if shard is not None:
        units = shard_units(units, *shard)
    every = [c for u in units for c in u.cells]
    done = sum(store.is_done(c.cell_id) for c in every)
    stats = {"cells": len(every), "skipped": done, "trained": 0, "sampled": 0, "elsewhere": 0, "failed": []}
    todo = [u for u in units if not all(store.is_done(c.cell_id) for c in u.cells)]
    if not todo:
        console.print(f"all {len(every)} cells already done in {store.root}")
        return stats
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=not show_progress)
    with progress if show_progress else nullcontext():
        # run_unit reports every cell of a unit it takes, finished ones too
        cells_task = progress.add_task("cells", total=len(every), completed=len(every) - sum(len(u.cells) for u in todo))
        stats.update(get_executor(plan.config.executor.name)(plan, store, todo, progress,
                                                             lambda: progress.advance(cells_task)))
    stats["elsewhere"] = sum(store.is_done(c.cell_id) for c in every) - done - stats["sampled"]
    stats["failed"] = failed_cells(store, every)  # read back: a Ray worker's or another shard's count too
    return stats
