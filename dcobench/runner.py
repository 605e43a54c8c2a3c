"""`dcobench run`: train, sample and store every cell of a plan, resumably.

A cell is done when its result.json exists; a rerun skips it. LoRAs are stored per training
config under loras/<train_id>/ and reused by every cell that shares it. The pipeline is loaded
once, reference latents and text conditioning are cached per subject, and each cell samples from
the LoRA file on disk, loaded through `load_lora_weights`, exactly as a user would, and is scored
right after sampling, before its result.json is written.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import DcoError
from .lora import WEIGHT_NAME, load_lora, remove_training_adapter, save_lora, unload_lora
from .models.pipeline import Conditioner, load_pipeline, resolve_device
from .plan import Cell, Plan
from .registry import METHODS
from .sampling import GuidedSampler, grid_jobs, sample_grid
from .scoring import Scorer
from .store import RunDir, atomic_write_json, provenance, read_json, write_json_if_changed
from .trainer import encode_images, train_lora

console = Console(stderr=True)


def run_plan(plan: Plan, out: str | Path, show_progress: bool = True) -> dict:
    """Run every unfinished cell; returns counts of what was done."""
    store = RunDir(out)
    store.root.mkdir(parents=True, exist_ok=True)
    write_json_if_changed(store.root / "run.json", {
        "suite": plan.suite.name, "model": plan.suite.model, "methods": plan.methods,
        "config": dataclasses.asdict(plan.config),
    })
    todo = [c for c in plan.cells if not store.is_done(c.cell_id)]
    stats = {"cells": len(plan.cells), "skipped": len(plan.cells) - len(todo), "trained": 0, "sampled": 0}
    if not todo:
        console.print(f"all {len(plan.cells)} cells already done in {store.root}")
        return stats
    device = resolve_device(plan.config.device)
    scorer = Scorer(plan.config.score, device) if plan.config.score.enabled else None  # fail fast on weights
    pipe = load_pipeline(plan.suite.model, device)
    ctx = _Context(pipe, plan.cells[0].train.resolution, scorer)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=not show_progress)
    with progress if show_progress else nullcontext():
        cells_task = progress.add_task("cells", total=len(plan.cells), completed=stats["skipped"])
        for cell in todo:
            lora_dir = store.lora(cell.train_id)
            if not (lora_dir / "train.json").is_file():
                _train(ctx, cell, lora_dir, progress)
                stats["trained"] += 1
            _sample(ctx, cell, lora_dir, store)
            stats["sampled"] += 1
            progress.advance(cells_task)
    return stats


class _Context:
    """What a run keeps in memory across cells: the pipeline and per-subject caches."""

    def __init__(self, pipe, resolution: int, scorer: Scorer | None = None):
        self.pipe = pipe
        self.scorer = scorer
        self.resolution = resolution
        self.cond = Conditioner(pipe, resolution)
        self.sampler = GuidedSampler(pipe, self.cond, resolution)
        self._latents = {}

    def latents(self, subject):
        key = (subject.name, subject.fingerprint())
        if key not in self._latents:
            self._latents[key] = encode_images(self.pipe.vae, subject.images, self.resolution)
        return self._latents[key]


def _train(ctx: _Context, cell: Cell, lora_dir: Path, progress: Progress) -> None:
    objective = METHODS.get(cell.method)(cell.method_cfg)
    task = progress.add_task(f"train {cell.train_id}", total=cell.train.steps)
    try:
        report = train_lora(ctx.pipe, ctx.cond, ctx.latents(cell.subject), cell.subject, objective, cell.train,
                            cell.seed, on_step=lambda step, logs: progress.advance(task))
        lora_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=lora_dir.parent, prefix=f".{lora_dir.name}."))
        save_lora(ctx.pipe, tmp)
        atomic_write_json(tmp / "train.json", {
            "train_id": cell.train_id, "config": cell.train_identity(), "losses": report.losses,
            "last": report.last, "seconds": round(report.seconds, 3), "steps": report.steps,
            "provenance": provenance(),
        })
        if lora_dir.exists():  # a half-finished folder from a killed run never has train.json
            shutil.rmtree(lora_dir)
        tmp.rename(lora_dir)
    finally:
        if "dcobench_train" in getattr(ctx.pipe.unet, "peft_config", {}):
            remove_training_adapter(ctx.pipe.unet)
        progress.remove_task(task)


def _sample(ctx: _Context, cell: Cell, lora_dir: Path, store: RunDir) -> None:
    cell_dir = store.cell(cell.cell_id)
    prompts = cell.prompts()
    jobs = grid_jobs(prompts, [cell.subject.base(p) for p in prompts], cell.sample)
    start = time.perf_counter()
    load_lora(ctx.pipe, lora_dir)
    try:
        manifest = sample_grid(ctx.sampler, jobs, cell.sample, cell.guidance, cell_dir)
    finally:
        unload_lora(ctx.pipe)
    atomic_write_json(cell_dir / "manifest.json", manifest)
    train_info = read_json(lora_dir / "train.json")
    result = {
        "cell_id": cell.cell_id,
        "train_id": cell.train_id,
        "method": cell.method,
        "subject": cell.subject.name,
        "class_noun": cell.subject.class_noun,
        "kind": cell.subject.kind,
        "identifier": cell.subject.identifier,
        "seed": cell.seed,
        "knobs": cell.knobs,
        "guidance": manifest["guidance"],
        "suite": cell.suite.name,
        "model": cell.suite.model,
        "config": cell.identity(),
        "lora": str(Path("..", "..", "loras", cell.train_id, WEIGHT_NAME)),
        "images": [r["file"] for r in manifest["images"]],
        "manifest": "manifest.json",
        "references": [str(p) for p in cell.subject.images],
        "timing": {"train_s": train_info["seconds"], "sample_s": round(time.perf_counter() - start, 3)},
        "train": {"final_loss": train_info["losses"][-1] if train_info["losses"] else None, "last": train_info["last"]},
        "provenance": provenance(),
    }
    if ctx.scorer is not None:
        result.update(ctx.scorer.score_cell(cell_dir, result, manifest))
    atomic_write_json(store.result_path(cell.cell_id), result)


def rescore(run_dir: str | Path, cfg, force: bool = False) -> dict:
    """Score every finished cell of a run under `cfg` (a ScoreConfig), without retraining."""
    store = RunDir(run_dir)
    results = store.results()
    if not results:
        raise DcoError(f"{store.root}: no finished cells (no cells/*/result.json); run `dcobench run --out {store.root}` first")
    run_cfg = read_json(store.root / "run.json") if (store.root / "run.json").is_file() else {}
    scorer = Scorer(cfg, resolve_device(run_cfg.get("config", {}).get("device", "auto")))
    proto_id = scorer.protocol()["id"]
    stats = {"cells": len(results), "scored": 0, "skipped": 0, "protocol": proto_id}
    for result in results:
        cell_dir = store.cell(result["cell_id"])
        if not force and result.get("protocol", {}).get("id") == proto_id and (cell_dir / result.get("scores", "")).is_file():
            stats["skipped"] += 1
            continue
        result.update(scorer.score_cell(cell_dir, result, read_json(cell_dir / result["manifest"])))
        atomic_write_json(store.result_path(result["cell_id"]), result)
        stats["scored"] += 1
    return stats
