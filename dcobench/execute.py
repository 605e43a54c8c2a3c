"""Executing one cell: train the LoRAs it needs, sample its grid from the saved file, score, record.

A cell is done when its result.json exists. LoRAs are stored per training config under
loras/<train_id>/ and reused by every cell that shares it; a merge cell also needs its style's
LoRA and, for a merge row, the merged LoRA under merges/<merge_id>/ (`merging.merge_loras`).
Every cell samples from a LoRA file on disk, loaded through `load_lora_weights` exactly as a user
would (an adapter of another kind through peft, as `adapters.load` says), and is scored right after sampling, before `build_result`'s record is written: the one
place result.json is assembled.

`Context` is what a run keeps in memory across cells: the pipeline, its conditioning and
sampler, and per-subject caches (VAE posteriors of the references, class images).

`units.run_unit` runs one unit (`plan.Unit`: a training and its cells) with `execute` under the run
folder's locks (`locks.py`), so that any number of processes, shards or Ray tasks can share one
folder: each LoRA is trained once, each cell run once. A training saves a resumable state as it goes
(`resume.py`).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .cells import ALONE, Cell, MergeCell
from . import adapters, failures
from .cost import CostMeter
from .lora import has_training_adapter, remove_training_adapter, unload_lora
from .locks import Locks
from .merging import merge_loras
from .models.pipeline import Conditioner, load_pipeline, resolve_device
from .prior import class_images, class_prompt_for
from .registry import METHODS
from .resume import Resume, resume_interval
from .sampling import GuidedSampler, grid_jobs, sample_grid
from .scoring import Scorer
from .store import RunDir, atomic_folder, atomic_write_json, provenance, read_json, writing
from .tokens import META_FILE as TOKENS_META
from .tokens import load_tokens, unload_tokens
from .tracking import open_tracker
from .trainer import PriorData, encode_images, train_lora


DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class Context:
    """The pipeline and per-subject caches a run keeps from training through scoring."""

    @classmethod
    def open(cls, config, model: str, resolution: int, model_id: str) -> "Context":
        """The scorer first (missing weights fail in seconds, before any training), then the pipeline."""
        if config.deterministic:  # before the first CUDA call: cuBLAS reads its workspace setting once
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        device = resolve_device(config.device)
        scorer = Scorer(config.score, device) if config.score.enabled else None
        pipe = load_pipeline(model, device, DTYPES[config.train.mixed_precision])
        pipe.vae.to(torch.float32)  # encoding and decoding stay fp32: cheap, and SDXL's VAE overflows in fp16
        return cls(pipe, resolution, scorer, model_id=model_id)

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
    adapters.save(ctx.pipe, folder)
    if tokens is not None:
        tokens.save(folder)


def _save_folder(ctx: Context, folder: Path, tokens) -> None:
    with atomic_folder(folder) as tmp:
        _save(ctx, tmp, tokens)


def train(ctx: Context, cell: Cell, lora_dir: Path, progress) -> None:
    """Train the cell's LoRA into `lora_dir`: the weights, then train.json (its presence marks the
    LoRA final), whose `curves` hold every logged value of the objective per optimizer step.
    A killed training resumes from `lora_dir/resume/`; checkpoints go straight to
    `lora_dir/checkpoint-N/`, each atomically."""
    objective = METHODS.get(cell.method)(cell.method_cfg)
    prior = ctx.prior(cell) if objective.needs_prior else None
    task = progress.add_task(f"train {cell.train_id}", total=cell.train.steps)
    curves: dict[str, list[float]] = {}
    tracker = []  # the live logger (train.log_to), opened once the step to start from is known

    meter = CostMeter(ctx.cond.denoiser.device)

    def on_start(first: int, optimizer) -> None:
        meter.start(ctx.cond.denoiser)
        tracker.append(open_tracker(cell.train.log_to, lora_dir.parent.parent, cell.train_id, cell.train_identity(),
                                    first, optimizer))

    def on_step(step: int, logs: dict) -> None:
        meter.step()
        for k, v in logs.items():
            curves.setdefault(k, []).append(round(float(v), 6))
        if tracker:
            tracker[0].log(step, logs)
        progress.advance(task)

    for stale in [*lora_dir.parent.glob(f".{lora_dir.name}.*"), *lora_dir.glob(".*")]:  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    resume = Resume(lora_dir / "resume", resume_interval(cell.train), extra={"curves": curves},
                    on_load=lambda step: progress.update(task, completed=step))
    report = None
    try:
        report = train_lora(ctx.pipe, ctx.cond, ctx.latents(cell.subject), cell.training_subject(), objective, cell.train,
                            cell.seed, on_step=on_step, on_start=on_start, prior=prior, resume=resume,
                            on_checkpoint=lambda step, tokens: _save_folder(ctx, lora_dir / f"checkpoint-{step}", tokens))
        with writing(lora_dir):  # each file renamed into place, then train.json last
            lora_dir.mkdir(parents=True, exist_ok=True)
            stage = Path(tempfile.mkdtemp(dir=lora_dir, prefix=".final."))
            try:
                _save(ctx, stage, report.tokens)
                for f in sorted(stage.iterdir()):
                    os.replace(f, lora_dir / f.name)
            finally:
                shutil.rmtree(stage, ignore_errors=True)
        atomic_write_json(lora_dir / "train.json", {
            "train_id": cell.train_id, "config": cell.train_identity(), "losses": report.losses,
            "curves": curves, "last": report.last, "seconds": round(report.seconds, 3), "steps": report.steps,
            "cost": {"adapter": cell.train.adapter, **meter.result()}, "provenance": provenance(),
        })
        resume.clear()
    finally:
        for t in tracker:
            t.close()
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
    adapters.load(ctx.pipe, folder)
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
    with Locks(store.root).hold("merge", cell.merge_id):
        if (folder / "merge.json").is_file():
            return folder
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
              "lora": str(Path("..", "..", adapters.weight_file(folder).relative_to(store.root))), "timing": timing}
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
        _reset_peak(ctx.pipe.device)
        start = time.perf_counter()
        result.update(ctx.scorer.score_cell(cell_dir, result, manifest))
        result.setdefault("timing", {}).update(score_s=round(time.perf_counter() - start, 3),
                                                  **_peak("score", ctx.pipe.device))
    atomic_write_json(cell_dir / "result.json", result)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak(stage: str, device: torch.device) -> dict:
    """`<stage>_peak_mb`: on a GPU, torch's max_memory_allocated on the run's device since the last
    reset (the stage's peak, model included); nothing on a CPU, where one process's stages cannot be
    told apart."""
    if device.type != "cuda":
        return {}
    return {f"{stage}_peak_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}


def execute(ctx: Context, cell: Cell, store: RunDir, progress, failed: dict | None = None) -> int:
    """Train what the cell needs and is not stored yet, sample, score, write result.json; returns
    the number of LoRAs trained. Each training runs under its lock: a LoRA another process is
    training is waited for, then read. With `failed` (a dict, train id -> failure record, shared by
    the cells of one unit), a training that raises is recorded in its folder (`failures.py`) and
    raised as `TrainingFailed`, so the unit's other cells that need it fail at once instead of
    training it again; the stage a cell failed in is put on the exception (`dcobench_stage`)."""
    trained, dirs = 0, []
    locks = Locks(store.root)
    for tc in [cell.train_cell(w) for w in ALONE] if isinstance(cell, MergeCell) else [cell]:
        dirs.append(store.lora(tc.train_id))
        if failed is not None and tc.train_id in failed:
            raise failures.TrainingFailed(failed[tc.train_id])
        with locks.hold("train", tc.train_id):
            if not (dirs[-1] / "train.json").is_file():
                if failed is None:
                    train(ctx, tc, dirs[-1], progress)
                else:
                    failures.clear(dirs[-1])
                    try:
                        train(ctx, tc, dirs[-1], progress)
                    except Exception as e:
                        if not failures.belongs_to_unit(e):
                            raise
                        failed[tc.train_id] = failures.training_failed(store.root, dirs[-1], tc, e)
                        raise failures.TrainingFailed(failed[tc.train_id]) from e
                trained += 1
    stage = "sample"
    try:
        folder, token_dirs = _lora_source(ctx, cell, store, dirs)
        cell_dir = store.cell(cell.cell_id)
        prompts = cell.prompts()
        _reset_peak(ctx.pipe.device)
        start = time.perf_counter()
        jobs = grid_jobs(prompts, [cell.base(p) for p in prompts], cell.sample)
        manifest = sample_from(ctx, folder, token_dirs, jobs, cell.sample, cell.guidance, cell_dir)
        result = build_result(cell, store, folder, {"sample_s": round(time.perf_counter() - start, 3),
                                                    **_peak("sample", ctx.pipe.device)})
        stage = "score"
        finish_cell(ctx, cell_dir, result, manifest)
    except Exception as e:
        e.dcobench_stage = stage
        raise
    return trained
