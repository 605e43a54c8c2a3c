"""`dcobench run`: hand every unfinished cell of a plan to `execute.execute`, resumably.

A cell is done when its result.json exists; a rerun skips it, and a killed run resumes where it
stopped. The pipeline is loaded once per run and the scorer before anything trains, so missing
scoring weights fail in seconds, not after the first LoRA.
"""

from __future__ import annotations

import dataclasses
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .execute import Context, execute
from .models.pipeline import load_pipeline, resolve_device
from .plan import Plan
from .scoring import Scorer
from .store import RunDir, write_json_if_changed

console = Console(stderr=True)
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def run_plan(plan: Plan, out: str | Path, show_progress: bool = True) -> dict:
    """Run every unfinished cell; returns counts of what was done."""
    store = RunDir(out)
    store.root.mkdir(parents=True, exist_ok=True)
    write_json_if_changed(store.root / "run.json", {
        "suite": plan.suite.name, "model": plan.suite.model, "methods": plan.methods,
        **({"merge": plan.config.merge} if plan.config.merge else {}),
        "config": dataclasses.asdict(plan.config),
    })
    every = plan.cells + plan.merge_cells
    todo = [c for c in every if not store.is_done(c.cell_id)]
    stats = {"cells": len(every), "skipped": len(every) - len(todo), "trained": 0, "sampled": 0}
    if not todo:
        console.print(f"all {len(every)} cells already done in {store.root}")
        return stats
    device = resolve_device(plan.config.device)
    scorer = Scorer(plan.config.score, device) if plan.config.score.enabled else None  # fail fast on weights
    pipe = load_pipeline(plan.suite.model, device, DTYPES[plan.config.train.mixed_precision])
    pipe.vae.to(torch.float32)  # encoding and decoding stay fp32: cheap, and SDXL's VAE overflows in fp16
    ctx = Context(pipe, every[0].train.resolution, scorer, model_id=every[0].model_id)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=not show_progress)
    with progress if show_progress else nullcontext():
        cells_task = progress.add_task("cells", total=len(every), completed=stats["skipped"])
        for cell in todo:
            stats["trained"] += execute(ctx, cell, store, progress)
            stats["sampled"] += 1
            progress.advance(cells_task)
    return stats
