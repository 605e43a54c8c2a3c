"""Shared by the GPU step benchmarks: time `train_lora` steps of one objective on a real-size denoiser.

The denoiser is built from its published config with random weights (the step cost does not
depend on the weights). The text conditioning is random tensors of the family's shapes, fixed per
prompt, which is what dcobench's cache of the frozen text encoders hands the trainer; so a step
here is exactly a training step of `dcobench run` minus nothing.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import torch

from dcobench.config import TrainConfig
from dcobench.families import FAMILIES
from dcobench.trainer import LatentCache, train_lora

DEVICE = os.environ.get("DCOBENCH_BENCH_DEVICE", "cuda")  # "cpu" only to dry-run a script


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


class RandomCond:
    """Conditioning of the given per-prompt shapes (without the batch dimension), fixed per prompt."""

    def __init__(self, family: str, shapes: dict[str, tuple], device, dtype, fixed: dict | None = None):
        self.family = FAMILIES.get(family)
        self.shapes, self.fixed = shapes, fixed or {}
        self.device, self.dtype, self.cache = device, dtype, {}

    def _one(self, p):
        if p not in self.cache:
            g = torch.Generator().manual_seed(sum(map(ord, p)))
            self.cache[p] = {k: torch.randn(1, *s, generator=g) for k, s in self.shapes.items()}
            self.cache[p].update({k: v.clone() for k, v in self.fixed.items()})
        return self.cache[p]

    def __call__(self, prompts):
        keys = list(self.shapes) + list(self.fixed)
        return {k: torch.cat([self._one(p)[k] for p in prompts]).to(self.device, self.dtype) for k in keys}

    def clear(self):
        pass


def timed_training(denoiser_attr: str, model, scheduler, cond: RandomCond, latent_shape: tuple, objective,
                   cfg: TrainConfig, steps: int, warmup: int) -> dict:
    """Train `cfg.steps = warmup + steps` steps; time the last `steps` and the peak memory over them."""
    dev = torch.device(DEVICE)
    pipe = SimpleNamespace(**{denoiser_attr: model}, vae=None, text_encoder=None, scheduler=scheduler)
    subject = SimpleNamespace(images=[0, 1, 2, 3], captions=[f"a sks dog {i}" for i in range(4)],
                              base_captions=[f"a dog {i}" for i in range(4)], identifier="sks", class_noun="dog")
    latents = LatentCache(mean=torch.randn(4, *latent_shape, device=dev),
                          std=torch.full((4, *latent_shape), 0.1, device=dev))
    marks = {}

    def on_step(step, logs):
        if step + 1 == warmup:
            sync()
            if DEVICE == "cuda":
                torch.cuda.reset_peak_memory_stats()
            marks["t0"] = time.perf_counter()

    report = train_lora(pipe, cond, latents, subject, objective, cfg, 0, on_step=on_step)
    sync()
    per_step = (time.perf_counter() - marks["t0"]) / steps
    return {"objective": objective.name, "ms_per_step": round(1000 * per_step, 1),
            "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if DEVICE == "cuda" else None,
            "params": sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n),
            "lora_params": sum(p.numel() for n, p in model.named_parameters() if "lora_" in n),
            "gradient_checkpointing": cfg.gradient_checkpointing, "final_loss": report.losses[-1]}
