"""Running one unit (`plan.Unit`: a training and every cell that uses its LoRA) under the run
folder's locks, going on past a cell that fails.

Any number of processes, shards or Ray tasks can share one folder: the unit's lock keeps two of
them off one unit, and each cell is checked again under its own lock, so each LoRA is trained once
and each cell run once. A cell or training that raises is recorded where its output would have gone
(`failures.py`) and the unit goes on with its other cells, unless `fail_fast`.
"""

from __future__ import annotations

import torch

from . import failures
from .execute import execute
from .locks import Locks
from .store import RunDir


def _free(device: torch.device) -> None:
    """After a failed unit: give back what an out-of-memory left cached, so the next unit starts clean."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_unit(open_context, unit, store: RunDir, progress, wait: bool = True, on_cell=None,
             fail_fast: bool = False) -> dict | None:
    """Run a unit's unfinished cells under the folder's locks; returns counts (and `failed`: the
    records of the cells that failed), or None when `wait` is off and another process is on this
    unit now. Each cell is checked again under its own lock, so it runs exactly once however many
    processes share the folder. `open_context()` gives the Context, called only if there is
    something to run (a Context that cannot open stops the run: that is no one unit's fault);
    `on_cell()` is told of each finished or failed cell. A cell or training that raises is recorded
    (`failures.py`) and the unit goes on, unless `fail_fast`."""
    stats = {"trained": 0, "sampled": 0, "failed": []}
    locks = Locks(store.root)
    failed: dict | None = None if fail_fast else {}
    with locks.hold("unit", unit.key, wait=wait) as mine:
        if not mine:
            return None
        for cell in unit.cells:
            if not store.is_done(cell.cell_id):
                with locks.hold("cell", cell.cell_id):
                    if not store.is_done(cell.cell_id):
                        ctx = open_context()
                        cell_dir = store.cell(cell.cell_id)
                        failures.clear(cell_dir)
                        try:
                            stats["trained"] += execute(ctx, cell, store, progress, failed)
                            stats["sampled"] += 1
                        except Exception as e:
                            if fail_fast or not (isinstance(e, failures.TrainingFailed) or failures.belongs_to_unit(e)):
                                raise
                            stage = getattr(e, "dcobench_stage", "train")
                            stats["failed"].append(failures.cell_failed(store.root, cell_dir, cell, e, stage))
                            _free(ctx.pipe.device)
            if on_cell:
                on_cell()
    return stats
