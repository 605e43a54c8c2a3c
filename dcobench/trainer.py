"""The one training loop, for every objective and every model family.

Per subject, the VAE posterior of each reference image and the text conditioning of each caption
(and base caption) are computed once and cached; a step only samples a latent from the cached
posterior, noises it and runs the denoiser (a UNet or an SD3 transformer). The model family
(`cond.family`) decides how to noise, what the target is and how the denoiser is called. The
objective's capability flags decide what else runs: `needs_reference` adds a no-grad pass of the
same denoiser with its adapter disabled, on the same noisy latents, timesteps and noise, conditioned
on the base caption. The adapter is `train.adapter`'s kind (`adapters.py`); "LoRA" below stands for any.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .config import TrainConfig
from .errors import DcoError, UnitFailure
from .adapters import add_adapter
from .lora import lora_disabled, lora_layers
from .methods.base import Objective
from .models.pipeline import Conditioner
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


@dataclass
class TrainReport:
    losses: list[float]
    last: dict
    seconds: float
    steps: int
    tokens: object = None  # the TokenState when train.train_token; the caller saves and removes it


@dataclass
class PriorData:
    """Class images for prior preservation: their cached posteriors and the class prompt's conditioning."""

    latents: LatentCache
    cond: dict[str, torch.Tensor]

    def __len__(self) -> int:
        return self.latents.mean.shape[0]


def make_optimizer(params, cfg: TrainConfig):
    if cfg.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise DcoError("train.optimizer: adamw8bit needs bitsandbytes; `pip install bitsandbytes` (CUDA) "
                           "or use train.optimizer=adamw")
        return bnb.optim.AdamW8bit(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def train_lora(
    pipe,
    cond: Conditioner,
    latents: LatentCache,
    subject: Subject,
    objective: Objective,
    cfg: TrainConfig,
    seed: int,
    on_step: Callable[[int, dict], None] | None = None,
    on_start: Callable[[int, object], None] | None = None,
    on_checkpoint: Callable[[int, object], None] | None = None,
    prior: PriorData | None = None,
    resume=None,
) -> TrainReport:
    """Train a LoRA on the denoiser (`pipe.unet` or `pipe.transformer`) in place; the adapter
    stays attached for the caller to save.

    `cfg.steps` counts optimizer steps, each of `cfg.grad_accum` micro-batches of `cfg.batch_size`.
    `on_start(first_step, optimizer)` is called once before the first step (after a resume, with
    the step it resumes from); `on_step(step, logs)` after each optimizer step.
    `on_checkpoint(step, tokens)` is called every `cfg.checkpoint_every` steps before the last.
    With `cfg.train_token` the identifier also becomes a new token trained at `cfg.token_lr`, so the
    captions are re-encoded with gradients each step; the base captions (no identifier) stay cached.
    `prior` (class images) is required when the objective `needs_prior`: each micro-batch then
    holds `batch_size` instance and `batch_size` class examples in one denoiser call.
    `resume` (a `resume.Resume`) restores a killed training's last saved state before the first
    step and saves it again every `resume.every` steps.
    With `cfg.compile` the forward calls go through `torch.compile(model)`; the reference pass
    switches the adapters off, which compiles a second graph once.
    """
    family = cond.family
    model = family.denoiser(pipe)
    for name in ("vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
        module = getattr(pipe, name, None)
        if module is not None:
            module.requires_grad_(False)
    params = add_adapter(model, cfg, seed)  # train.adapter: LoRA, DoRA, LoHa, LoKr, OFT or BOFT
    layers = lora_layers(model)
    if cfg.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    # a compiled wrapper for the forward calls only: adapters are switched on `model`, and the
    # pipeline keeps the plain module for sampling and saving
    fwd_model = torch.compile(model) if cfg.compile else model
    noising = family.noising(pipe.scheduler)
    optimizer = make_optimizer(params, cfg)
    tokens = None
    if cfg.train_token:
        from .tokens import add_identifier_tokens

        tokens = add_identifier_tokens(pipe, subject.identifier, subject.class_noun)
        cond.clear()  # cached encodings predate the new token
        optimizer.add_param_group({"params": tokens.params(), "lr": cfg.token_lr, "weight_decay": 0.0})
    if objective.needs_prior and prior is None:
        raise ValueError(f"{objective.name} needs class images (needs_prior=True)")
    captions = cond(subject.captions)
    base_caps = None
    if objective.needs_reference:
        base_caps = cond(subject.base_captions) if objective.reference_base(bool(cfg.train_token)) else captions
    gen = torch.Generator().manual_seed(seed)
    n_images, device = len(subject.images), model.device
    losses, last, start = [], {}, time.perf_counter()
    first = 0
    restored = resume.load(model, optimizer, gen, tokens) if resume is not None else None
    if restored:
        first, losses, last, start = restored["step"], restored["losses"], restored["last"], start - restored["seconds"]
    if on_start:
        on_start(first, optimizer)
    model.train()
    for step in range(first, cfg.steps):
        total = 0.0
        for _ in range(cfg.grad_accum):
            idx = torch.randint(0, n_images, (cfg.batch_size,), generator=gen)
            x0 = latents.sample(idx, gen)
            noise = torch.randn(x0.shape, generator=gen)
            if cfg.offset_noise:
                noise = noise + cfg.offset_noise * torch.randn(x0.shape[:2] + (1, 1), generator=gen)
            noise = noise.to(device, x0.dtype)
            t = noising.timesteps(cfg.batch_size, gen, device)
            x_t = noising.add_noise(x0, noise, t)
            target = noising.target(x0, noise, t)
            weights = noising.weights(t, cfg)
            caps = cond.with_grad([subject.captions[i] for i in idx.tolist()]) if tokens else \
                {k: v[idx.to(v.device)] for k, v in captions.items()}
            prior_batch = None
            if objective.needs_prior:
                pidx = torch.randint(0, len(prior), (cfg.batch_size,), generator=gen)
                px0 = prior.latents.sample(pidx, gen)
                pnoise = torch.randn(px0.shape, generator=gen).to(device, px0.dtype)
                pt = noising.timesteps(cfg.batch_size, gen, device)
                pcond = {k: v.expand(cfg.batch_size, *v.shape[1:]) for k, v in prior.cond.items()}
                prior_batch = (noising.add_noise(px0, pnoise, pt), pt, pcond, noising.target(px0, pnoise, pt),
                               noising.weights(pt, cfg))
            if prior_batch is None:
                pred = family.forward(fwd_model, x_t, t, caps)
            else:  # instance and class examples in one call, as DreamBooth trainers batch them
                both = family.forward(fwd_model, torch.cat([x_t, prior_batch[0]]), torch.cat([t, prior_batch[1]]),
                                      {k: torch.cat([caps[k], prior_batch[2][k].to(caps[k].dtype)]) for k in caps})
                pred, prior_pred = both.split([x_t.shape[0], prior_batch[0].shape[0]])
            ref = None
            if objective.needs_reference:
                with torch.no_grad(), lora_disabled(model, layers):
                    ref = family.forward(fwd_model, x_t, t, {k: v[idx.to(v.device)] for k, v in base_caps.items()})
            prior_args = None if prior_batch is None else (prior_pred, prior_batch[3], prior_batch[4])
            loss, last = objective(pred, target, ref, weights, prior_args)
            if not math.isfinite(loss.item()):
                raise UnitFailure(f"training diverged at step {step} (loss {loss.item()}); lower train.lr")
            (loss / cfg.grad_accum).backward()
            total += loss.item() / cfg.grad_accum
        if cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)  # the LoRA's; the token keeps its norm
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if tokens:
            tokens.after_step()
        losses.append(round(total, 6))
        if on_step:
            on_step(step, last)
        done = step + 1
        if on_checkpoint and cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < cfg.steps:
            on_checkpoint(done, tokens)
        if resume is not None and resume.due(done, cfg.steps):
            resume.save(done, model, optimizer, gen, tokens, losses, last, time.perf_counter() - start)
    if cfg.gradient_checkpointing:
        model.disable_gradient_checkpointing()
    model.eval()
    return TrainReport(losses=losses, last=last, seconds=time.perf_counter() - start, steps=cfg.steps, tokens=tokens)
