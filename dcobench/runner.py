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
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import DcoError
from .lora import WEIGHT_NAME, has_training_adapter, load_lora, remove_training_adapter, save_lora, unload_lora
from .models.pipeline import Conditioner, load_pipeline, resolve_device
from .plan import Cell, Plan
from .registry import METHODS
from .sampling import GuidedSampler, grid_jobs, sample_grid
from .scoring import Scorer
from .store import RunDir, atomic_folder, atomic_write_json, provenance, read_json, write_json_if_changed
from .prior import class_images, class_prompt_for
from .tokens import META_FILE as TOKENS_META
from .tokens import load_tokens, unload_tokens
from .trainer import PriorData, encode_images, train_lora

console = Console(stderr=True)


def run_plan(plan: Plan, out: str | Path, show_progress: bool = True) -> dict:
    """Run every unfinished cell; returns counts of what was done."""
    from .merging import run_merge_cell  # merging builds on this module's training and sampling

    store = RunDir(out)
    store.root.mkdir(parents=True, exist_ok=True)
    write_json_if_changed(store.root / "run.json", {
        "suite": plan.suite.name, "model": plan.suite.model, "methods": plan.methods,
        **({"merge": plan.config.merge} if plan.config.merge else {}),
        "config": dataclasses.asdict(plan.config),
    })
    todo = [c for c in plan.cells if not store.is_done(c.cell_id)]
    merge_todo = [c for c in plan.merge_cells if not store.is_done(c.cell_id)]
    n_cells = len(plan.cells) + len(plan.merge_cells)
    stats = {"cells": n_cells, "skipped": n_cells - len(todo) - len(merge_todo), "trained": 0, "sampled": 0}
    if not todo and not merge_todo:
        console.print(f"all {n_cells} cells already done in {store.root}")
        return stats
    device = resolve_device(plan.config.device)
    scorer = Scorer(plan.config.score, device) if plan.config.score.enabled else None  # fail fast on weights
    dtype = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[plan.config.train.mixed_precision]
    pipe = load_pipeline(plan.suite.model, device, dtype)
    pipe.vae.to(torch.float32)  # encoding and decoding stay fp32: cheap, and SDXL's VAE overflows in fp16
    first = (plan.cells or plan.merge_cells)[0]
    ctx = _Context(pipe, first.train.resolution, scorer, model_id=first.model_id)
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, disable=not show_progress)
    with progress if show_progress else nullcontext():
        cells_task = progress.add_task("cells", total=n_cells, completed=stats["skipped"])
        for cell in todo:
            lora_dir = store.lora(cell.train_id)
            if not (lora_dir / "train.json").is_file():
                _train(ctx, cell, lora_dir, progress)
                stats["trained"] += 1
            _sample(ctx, cell, lora_dir, store)
            stats["sampled"] += 1
            progress.advance(cells_task)
        for cell in merge_todo:
            stats["trained"] += run_merge_cell(ctx, cell, store, progress)
            stats["sampled"] += 1
            progress.advance(cells_task)
    return stats


class _Context:
    """What a run keeps in memory across cells: the pipeline and per-subject caches."""

    def __init__(self, pipe, resolution: int, scorer: Scorer | None = None, model_id: str = ""):
        self.pipe = pipe
        self.scorer = scorer
        self.model_id = model_id
        self._prior = {}
        self.resolution = resolution
        self.cond = Conditioner(pipe, resolution)
        self.sampler = GuidedSampler(pipe, self.cond, resolution)
        self._latents = {}

    def latents(self, subject):
        key = (subject.name, subject.fingerprint())
        if key not in self._latents:
            self._latents[key] = encode_images(self.pipe.vae, subject.images, self.resolution)
        return self._latents[key]


    def prior(self, cell: Cell) -> PriorData:
        """Class images of the base model for the cell's class prompt, generated once and cached on disk."""
        mcfg = cell.method_cfg
        prompt = class_prompt_for(cell.subject.class_noun, mcfg.class_prompt)
        key = (prompt, mcfg.num_class_images, cell.seed)
        if key not in self._prior:
            sample_cfg = dataclasses.replace(cell.sample, guidance="cfg")
            paths = class_images(self.pipe, self.model_id, prompt, mcfg.num_class_images, cell.seed, sample_cfg,
                                 self.resolution)
            self._prior[key] = PriorData(encode_images(self.pipe.vae, paths, self.resolution), self.cond([prompt]))
        return self._prior[key]


def _save(ctx: _Context, folder: Path, tokens) -> None:
    save_lora(ctx.pipe, folder)
    if tokens is not None:
        tokens.save(folder)


def _train(ctx: _Context, cell: Cell, lora_dir: Path, progress: Progress) -> None:
    objective = METHODS.get(cell.method)(cell.method_cfg)
    prior = ctx.prior(cell) if objective.needs_prior else None
    task = progress.add_task(f"train {cell.train_id}", total=cell.train.steps)
    for stale in lora_dir.parent.glob(f".{lora_dir.name}.*"):  # left by a killed run of this same LoRA
        shutil.rmtree(stale, ignore_errors=True)
    report = None
    try:
        # a half-finished lora_dir from a killed run never has train.json; this replaces it
        with atomic_folder(lora_dir) as tmp:
            report = train_lora(ctx.pipe, ctx.cond, ctx.latents(cell.subject), cell.subject, objective, cell.train,
                                cell.seed, on_step=lambda step, logs: progress.advance(task),
                                on_checkpoint=lambda step, tokens: _save(ctx, tmp / f"checkpoint-{step}", tokens),
                                prior=prior)
            _save(ctx, tmp, report.tokens)
            atomic_write_json(tmp / "train.json", {
                "train_id": cell.train_id, "config": cell.train_identity(), "losses": report.losses,
                "last": report.last, "seconds": round(report.seconds, 3), "steps": report.steps,
                "provenance": provenance(),
            })
    finally:
        if has_training_adapter(ctx.cond.denoiser):
            remove_training_adapter(ctx.cond.denoiser)
        if report is not None and report.tokens is not None:
            report.tokens.remove(ctx.pipe)
            ctx.cond.clear()
        progress.remove_task(task)


def sample_from(ctx: _Context, folder: Path, token_dirs: list[Path], jobs, sample_cfg, guidance: str,
                cell_dir: Path) -> dict:
    """Sample `jobs` with the LoRA in `folder` (and the new tokens saved in `token_dirs`) loaded
    through diffusers, exactly as a user would; returns the manifest."""
    load_lora(ctx.pipe, folder)
    tokens = []
    try:
        for d in token_dirs:
            if (d / TOKENS_META).is_file():
                tokens += load_tokens(ctx.pipe, d)
        if tokens:
            ctx.cond.clear()
        return sample_grid(ctx.sampler, jobs, sample_cfg, guidance, cell_dir)
    finally:
        unload_lora(ctx.pipe)
        if tokens:
            unload_tokens(ctx.pipe, tokens)
            ctx.cond.clear()


def finish_cell(ctx: _Context, cell_dir: Path, result: dict, manifest: dict) -> None:
    """Write the manifest, score, and write result.json last: its presence marks the cell done."""
    atomic_write_json(cell_dir / "manifest.json", manifest)
    result.update({"images": [r["file"] for r in manifest["images"]], "manifest": "manifest.json",
                   "guidance": manifest["guidance"], "provenance": provenance()})
    if ctx.scorer is not None:
        result.update(ctx.scorer.score_cell(cell_dir, result, manifest))
    atomic_write_json(cell_dir / "result.json", result)


def _sample(ctx: _Context, cell: Cell, lora_dir: Path, store: RunDir) -> None:
    cell_dir = store.cell(cell.cell_id)
    prompts = cell.prompts()
    jobs = grid_jobs(prompts, [cell.subject.base(p) for p in prompts], cell.sample)
    start = time.perf_counter()
    step = cell.sample.lora_step
    folder = lora_dir / f"checkpoint-{step}" if step and step != cell.train.steps else lora_dir
    manifest = sample_from(ctx, folder, [folder], jobs, cell.sample, cell.guidance, cell_dir)
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
        "suite": cell.suite.name,
        "model": cell.suite.model,
        "config": cell.identity(),
        "lora": str(Path("..", "..", "loras", folder.relative_to(store.root / "loras"), WEIGHT_NAME)),
        "references": [str(p) for p in cell.subject.images],
        "timing": {"train_s": train_info["seconds"], "sample_s": round(time.perf_counter() - start, 3)},
        "train": {"final_loss": train_info["losses"][-1] if train_info["losses"] else None, "last": train_info["last"]},
    }
    finish_cell(ctx, cell_dir, result, manifest)


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
