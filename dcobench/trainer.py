"""The one training loop, for every objective.

Per subject, the VAE posterior of each reference image and the text conditioning of each caption
(and base caption) are computed once and cached; a step only samples a latent from the cached
posterior, noises it and runs the UNet. The objective's capability flags decide what else runs:
`needs_reference` adds a no-grad pass of the same UNet with its LoRA disabled, on the same noisy
latents, timesteps and noise, conditioned on the base caption.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .config import TrainConfig
from .errors import DcoError
from .lora import add_lora
from .methods.base import Objective
from .models.pipeline import Conditioner, unet_forward
from .suites.base import Subject


def load_image(path, resolution: int) -> torch.Tensor:
    """Resize the shorter side to `resolution`, centre-crop, scale to [-1, 1], CHW."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = resolution / min(w, h)
            im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
            w, h = im.size
            left, top = (w - resolution) // 2, (h - resolution) // 2
            im = im.crop((left, top, left + resolution, top + resolution))
            arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    except OSError as e:
        raise DcoError(f"{path}: cannot read image ({type(e).__name__}); replace or delete the file")
    return torch.from_numpy(arr).permute(2, 0, 1)


@dataclass
class LatentCache:
    """The VAE posterior (mean, std) of each reference image, in scaled latent space."""

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, idx: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        mean, std = self.mean[idx], self.std[idx]
        eps = torch.randn(mean.shape, generator=generator).to(mean.device, mean.dtype)
        return mean + std * eps


@torch.no_grad()
def encode_images(vae, paths, resolution: int, batch_size: int = 8) -> LatentCache:
    pixels = torch.stack([load_image(p, resolution) for p in paths])
    means, stds = [], []
    for chunk in pixels.split(batch_size):
        dist = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        means.append(dist.mean)
        stds.append(dist.std)
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return LatentCache(mean=(torch.cat(means) - shift) * scale, std=torch.cat(stds) * scale)


def diffusion_target(scheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise DcoError(f"scheduler prediction_type '{kind}' is not supported; use epsilon or v_prediction")


@dataclass
class TrainReport:
    losses: list[float]
    last: dict
    seconds: float
    steps: int


def train_lora(
    pipe,
    cond: Conditioner,
    latents: LatentCache,
    subject: Subject,
    objective: Objective,
    cfg: TrainConfig,
    seed: int,
    on_step: Callable[[int, dict], None] | None = None,
) -> TrainReport:
    """Train a LoRA on `pipe.unet` in place; the adapter stays attached for the caller to save."""
    from diffusers import DDPMScheduler

    unet = pipe.unet
    for module in (pipe.vae, pipe.text_encoder, getattr(pipe, "text_encoder_2", None)):
        if module is not None:
            module.requires_grad_(False)
    params = add_lora(unet, cfg.rank, cfg.alpha, cfg.target_modules, seed)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    captions = cond(subject.captions)
    base_caps = None
    if objective.needs_reference:
        base_caps = cond(subject.base_captions) if objective.reference_uses_base_prompt else captions
    gen = torch.Generator().manual_seed(seed)
    n_images, device = len(subject.images), unet.device
    losses, last, start = [], {}, time.perf_counter()
    unet.train()
    for step in range(cfg.steps):
        idx = torch.randint(0, n_images, (cfg.batch_size,), generator=gen)
        x0 = latents.sample(idx, gen)
        noise = torch.randn(x0.shape, generator=gen).to(device, x0.dtype)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
        x_t = noise_sched.add_noise(x0, noise, t)
        target = diffusion_target(noise_sched, x0, noise, t)
        c = {k: v[idx.to(v.device)] for k, v in captions.items()}
        pred = unet_forward(unet, x_t, t, c)
        ref = None
        if objective.needs_reference:
            with torch.no_grad():
                unet.disable_adapters()
                try:
                    ref = unet_forward(unet, x_t, t, {k: v[idx.to(v.device)] for k, v in base_caps.items()})
                finally:
                    unet.enable_adapters()
        loss, last = objective(pred, target, ref)
        if not math.isfinite(loss.item()):
            raise DcoError(f"training diverged at step {step} (loss {loss.item()}); lower train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        losses.append(round(loss.item(), 6))
        if on_step:
            on_step(step, last)
    unet.eval()
    return TrainReport(losses=losses, last=last, seconds=time.perf_counter() - start, steps=cfg.steps)
