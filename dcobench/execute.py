"""Executing one cell: train the LoRAs it needs, sample its grid from the saved file, score, record.

A cell is done when its result.json exists. LoRAs are stored per training config under
loras/<train_id>/ and reused by every cell that shares it; a merge cell also needs its style's
LoRA and, for a merge row, the merged LoRA under merges/<merge_id>/ (`merging.merge_loras`).
Every cell samples from a LoRA file on disk, loaded through `load_lora_weights` exactly as a user
would, and is scored right after sampling, before `build_result`'s record is written: the one
place result.json is assembled.

`Context` is what a run keeps in memory across cells: the pipeline, its conditioning and
sampler, and per-subject caches (VAE posteriors of the references, class images).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path

from .cells import ALONE, Cell, MergeCell
from .lora import WEIGHT_NAME, has_training_adapter, load_lora, remove_training_adapter, save_lora, unload_lora
from .merging import merge_loras
from .models.pipeline import Conditioner
from .prior import class_images, class_prompt_for
from .registry import METHODS
from .sampling import GuidedSampler, grid_jobs, sample_grid
from .scoring import Scorer
from .store import RunDir, atomic_folder, atomic_write_json, provenance, read_json
from .tokens import META_FILE as TOKENS_META
from .tokens import load_tokens, unload_tokens
from .trainer import PriorData, encode_images, train_lora


class Context:
    """The pipeline and per-subject caches a run keeps from training through scoring."""

    def __init__(self, pipe, resolution: int, scorer: Scorer | None = None, model_id: str = ""):
        self.pipe = pipe
        self.scorer = scorer
        self.model_id = model_id
        self.resolution = resolution
        self.cond = Conditioner(pipe, resolution)
        self.sampler = GuidedSampler(pipe, self.cond, resolution)
        self._latents = {}
        self._prior = {}

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


def _save(ctx: Context, folder: Path, tokens) -> None:
    save_lora(ctx.pipe, folder)
    if tokens is not None:
        tokens.save(folder)


def train(ctx: Context, cell: Cell, lora_dir: Path, progress) -> None:
    """Train the cell's LoRA into `lora_dir` (atomically): the weights and train.json, whose
    `curves` hold every logged value of the objective per optimizer step."""
    objective = METHODS.get(cell.method)(cell.method_cfg)
    prior = ctx.prior(cell) if objective.needs_prior else None
    task = progress.add_task(f"train {cell.train_id}", total=cell.train.steps)
    curves: dict[str, list[float]] = {}

    def on_step(step: int, logs: dict) -> None:
        for k, v in logs.items():
            curves.setdefault(k, []).append(round(float(v), 6))
        progress.advance(task)

    for stale in lora_dir.parent.glob(f".{lora_dir.name}.*"):  # left by a killed run of this same LoRA
        shutil.rmtree(stale, ignore_errors=True)
    report = None
    try:
        # a half-finished lora_dir from a killed run never has train.json; this replaces it
        with atomic_folder(lora_dir) as tmp:
            report = train_lora(ctx.pipe, ctx.cond, ctx.latents(cell.subject), cell.training_subject(), objective,
                                cell.train, cell.seed, on_step=on_step, prior=prior,
                                on_checkpoint=lambda step, tokens: _save(ctx, tmp / f"checkpoint-{step}", tokens))
            _save(ctx, tmp, report.tokens)
            atomic_write_json(tmp / "train.json", {
                "train_id": cell.train_id, "config": cell.train_identity(), "losses": report.losses,
                "curves": curves, "last": report.last, "seconds": round(report.seconds, 3), "steps": report.steps,
                "provenance": provenance(),
            })
    finally:
        if has_training_adapter(ctx.cond.denoiser):
            remove_training_adapter(ctx.cond.denoiser)
        if report is not None and report.tokens is not None:
            report.tokens.remove(ctx.pipe)
            ctx.cond.clear()
        progress.remove_task(task)


def sample_from(ctx: Context, folder: Path, token_dirs: list[Path], jobs, sample_cfg, guidance: str,
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


def _merged(ctx: Context, cell: MergeCell, store: RunDir, subject_dir: Path, style_dir: Path) -> Path:
    folder = store.root / "merges" / cell.merge_id
    if not (folder / "merge.json").is_file():
        merge_loras(cell.merge, cell.merge_cfg, subject_dir, style_dir, folder,
                    record={**cell.merge_identity(), "merge_id": cell.merge_id}, pipe=ctx.pipe, cond=ctx.cond,
                    subject=cell.training_subject(), subject_latents=ctx.latents(cell.subject),
                    style=cell.train_cell("style").training_subject(), style_latents=ctx.latents(cell.style),
                    seed=cell.seed)
    return folder


def _lora_source(ctx: Context, cell: Cell, store: RunDir, dirs: list[Path]) -> tuple[Path, list[Path]]:
    """(the LoRA folder the cell samples from, the folders whose trained tokens it loads)."""
    if isinstance(cell, MergeCell):
        if cell.merge in ALONE:
            folder = dirs[ALONE.index(cell.merge)]
            return folder, [folder]
        return _merged(ctx, cell, store, *dirs), dirs
    step = cell.sample.lora_step
    folder = dirs[0] / f"checkpoint-{step}" if step and step != cell.train.steps else dirs[0]
    return folder, [folder]


def build_result(cell: Cell, store: RunDir, folder: Path, timing: dict) -> dict:
    """result.json of a sampled cell, before scoring (`finish_cell` adds images, scores, provenance)."""
    result = {"cell_id": cell.cell_id, "train_id": cell.train_id, **cell.describe(),
              "lora": str(Path("..", "..", folder.relative_to(store.root), WEIGHT_NAME)), "timing": timing}
    if not isinstance(cell, MergeCell):
        info = read_json(store.lora(cell.train_id) / "train.json")
        result["timing"] = {"train_s": info["seconds"], **timing}
        result["train"] = {"final_loss": info["losses"][-1] if info["losses"] else None, "last": info["last"]}
        result["train_log"] = str(Path("..", "..", "loras", cell.train_id, "train.json"))
    return result


def finish_cell(ctx: Context, cell_dir: Path, result: dict, manifest: dict) -> None:
    """Write the manifest, score, and write result.json last: its presence marks the cell done."""
    atomic_write_json(cell_dir / "manifest.json", manifest)
    result.update({"images": [r["file"] for r in manifest["images"]], "manifest": "manifest.json",
                   "guidance": manifest["guidance"], "provenance": provenance()})
    if ctx.scorer is not None:
        result.update(ctx.scorer.score_cell(cell_dir, result, manifest))
    atomic_write_json(cell_dir / "result.json", result)


def execute(ctx: Context, cell: Cell, store: RunDir, progress) -> int:
    """Train what the cell needs and is not stored yet, sample, score, write result.json; returns
    the number of LoRAs trained."""
    trained, dirs = 0, []
    for tc in [cell.train_cell(w) for w in ALONE] if isinstance(cell, MergeCell) else [cell]:
        dirs.append(store.lora(tc.train_id))
        if not (dirs[-1] / "train.json").is_file():
            train(ctx, tc, dirs[-1], progress)
            trained += 1
    folder, token_dirs = _lora_source(ctx, cell, store, dirs)
    cell_dir = store.cell(cell.cell_id)
    prompts = cell.prompts()
    start = time.perf_counter()
    jobs = grid_jobs(prompts, [cell.base(p) for p in prompts], cell.sample)
    manifest = sample_from(ctx, folder, token_dirs, jobs, cell.sample, cell.guidance, cell_dir)
    result = build_result(cell, store, folder, {"sample_s": round(time.perf_counter() - start, 3)})
    finish_cell(ctx, cell_dir, result, manifest)
    return trained
