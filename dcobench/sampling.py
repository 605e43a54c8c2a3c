"""Prompt grids with classifier-free or consistency guidance.

The formulas are in the space the denoiser predicts: epsilon (or v) for SD1.5 and SDXL UNets, the
flow-matching velocity for SD3; "eps" below stands for either. Plain CFG (of whatever denoiser is
active, LoRA included):

    eps = eps_theta(0) + s * (eps_theta(c) - eps_theta(0))

DCO's consistency guidance, with eps_phi the denoiser with its LoRA disabled and c_base the base prompt
(class noun in place of the identifier):

    eps = eps_phi(0) + w_text * (eps_phi(c_base) - eps_phi(0)) + w_con * (eps_theta(c) - eps_phi(c_base))

so w_con = 0 is plain CFG of the base model on c_base. Each image's initial noise comes from its
own generator seeded with `noise_seed = 1000 * seed + index`, so an image does not depend on the
batch it was denoised in, and the same seed gives the same noise across prompts and methods.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from .config import SampleConfig
from .lora import lora_disabled
from .models.pipeline import Conditioner, cat
from .store import atomic_save_image


@dataclass
class ImageJob:
    prompt: str
    base_prompt: str
    prompt_index: int
    seed: int
    index: int

    @property
    def noise_seed(self) -> int:
        return 1000 * self.seed + self.index

    @property
    def file(self) -> str:
        return f"images/p{self.prompt_index:02d}_s{self.seed}_i{self.index}.png"


def grid_jobs(prompts: list[str], base_prompts: list[str], cfg: SampleConfig) -> list[ImageJob]:
    return [
        ImageJob(p, b, i, seed, k)
        for i, (p, b) in enumerate(zip(prompts, base_prompts))
        for seed in cfg.seeds
        for k in range(cfg.images_per_prompt)
    ]


def combine_cfg(eps_uncond, eps_cond, scale: float):
    return eps_uncond + scale * (eps_cond - eps_uncond)


def combine_consistency(eps_phi_uncond, eps_phi_base, eps_theta, w_text: float, w_con: float):
    return eps_phi_uncond + w_text * (eps_phi_base - eps_phi_uncond) + w_con * (eps_theta - eps_phi_base)


class GuidedSampler:
    def __init__(self, pipe, cond: Conditioner, resolution: int):
        self.pipe, self.cond, self.resolution = pipe, cond, resolution
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        self._compiled = None

    def denoiser(self, cfg: SampleConfig):
        """What the forward calls go through: the denoiser, or (`sample.compile`) one compiled
        wrapper of it, kept across cells. Adapters are still switched on the module itself, as in
        the trainer; dynamo's guards see the switch and compile the base-model graph once."""
        model = self.cond.denoiser
        if not cfg.compile:
            return model
        if self._compiled is None or self._compiled._orig_mod is not model:
            self._compiled = torch.compile(model)
        return self._compiled

    def guided_eps(self, x, t, prompts, base_prompts, cfg: SampleConfig, guidance: str):
        family, model, n = self.cond.family, self.cond.denoiser, len(prompts)
        fwd = self.denoiser(cfg)
        uncond = self.cond([""] * n)
        x2 = torch.cat([x, x])
        if guidance == "cfg":
            out = family.forward(fwd, x2, t, cat([uncond, self.cond(prompts)]))
            return combine_cfg(*out.chunk(2), cfg.cfg_scale)
        with torch.no_grad(), lora_disabled(model):
            phi_uncond, phi_base = family.forward(fwd, x2, t, cat([uncond, self.cond(base_prompts)])).chunk(2)
        theta = family.forward(fwd, x, t, self.cond(prompts))
        return combine_consistency(phi_uncond, phi_base, theta, cfg.w_text, cfg.w_con)

    @torch.no_grad()
    def sample(self, jobs: list[ImageJob], cfg: SampleConfig, guidance: str) -> list[np.ndarray]:
        """Denoise `jobs` in batches; returns HxWx3 uint8 arrays in job order."""
        from diffusers.utils.torch_utils import randn_tensor

        pipe, family, model = self.pipe, self.cond.family, self.cond.denoiser
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        step_kwargs = {"eta": 0.0} if "eta" in inspect.signature(scheduler.step).parameters else {}
        size = self.resolution // self.vae_scale
        images = []
        for start in range(0, len(jobs), cfg.batch_size):
            batch = jobs[start : start + cfg.batch_size]
            gens = [torch.Generator().manual_seed(j.noise_seed) for j in batch]
            shape = (len(batch), model.config.in_channels, size, size)
            family.set_timesteps(scheduler, cfg.steps, model.device, model, shape)
            latents = randn_tensor(shape, generator=gens, device=model.device, dtype=model.dtype)
            latents = latents * family.init_noise_sigma(scheduler)
            prompts, bases = [j.prompt for j in batch], [j.base_prompt for j in batch]
            for t in scheduler.timesteps:
                x = family.scale_model_input(scheduler, latents, t)
                eps = self.guided_eps(x, t, prompts, bases, cfg, guidance)
                latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
            images.extend(self.decode(latents))
        return images

    def decode(self, latents) -> list[np.ndarray]:
        vae = self.pipe.vae
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        decoded = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor + shift, return_dict=False)[0]
        arr = self.pipe.image_processor.postprocess(decoded, output_type="np")
        return [(np.clip(a, 0, 1) * 255).round().astype(np.uint8) for a in arr]


def sample_grid(sampler: GuidedSampler, jobs: list[ImageJob], cfg: SampleConfig, guidance: str, out_dir) -> dict:
    """Sample every job, write PNGs under `out_dir`, return the manifest."""
    start = time.perf_counter()
    images = sampler.sample(jobs, cfg, guidance)
    records = []
    for job, img in zip(jobs, images):
        atomic_save_image(out_dir / job.file, img)
        records.append({**asdict(job), "noise_seed": job.noise_seed, "file": job.file})
    knobs = {"cfg_scale": cfg.cfg_scale} if guidance == "cfg" else {"w_text": cfg.w_text, "w_con": cfg.w_con}
    return {
        "guidance": {"mode": guidance, **knobs},
        "steps": cfg.steps,
        "resolution": sampler.resolution,
        "scheduler": type(sampler.pipe.scheduler).__name__,
        "images": records,
        "seconds": round(time.perf_counter() - start, 3),
    }
