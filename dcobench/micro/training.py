"""Training the micro base model: the VAE first, then the UNet and the text encoder jointly.

Recipe (from the feasibility study in NOTES.md, "A micro world that worked", and this project's
measurements, see ``data/micro/MODEL_CARD.md``):

* VAE 32x32x3 -> 16x16x4, trained first and frozen; ``scaling_factor`` = 1/std of the training
  latents so the UNet sees unit-variance latents, like SD's 0.18215.  Half of each batch is
  generic two-ink noise textures (``_generic_textures``) so it reproduces two-colour detail that
  held-out concepts need without ever seeing one.
* UNet + CLIPTextModel trained jointly, v-prediction (epsilon-prediction stayed at chance), 10%
  empty captions so classifier-free guidance works, AdamW 1e-3 with warmup, gradient clipping,
  EMA; the EMA weights are saved.

Data is the finite pretraining world: a pool of ``sample_scenes`` draws is rendered once per
distinct scene, and for the UNet each distinct image's VAE posterior is encoded once, so a step
costs only the UNet and the text encoder.  Held-out subjects and styles are never drawn.
"""
from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from .models import (TEXT_LEN, make_text_encoder, make_unet, make_vae, n_params, resolve, to_pixels,  # noqa: F401
                     tokenize, alphas_cumprod)
from .references import reference_scenes, style_reference_scenes
from .world import BACKGROUNDS, CANVAS, COLORS, HELDOUT_STYLES, HELDOUT_SUBJECTS, caption, render, sample_scenes

POOL_CAP = 20000  # draws; covers the pretraining world (with its jitter) many times over
EVAL_SEED_OFFSET = 1000  # eval pools use seed + this: other draws of the same world


class ScenePool:
    """``sample_scenes(n, seed)`` with each distinct scene rendered and captioned once."""

    def __init__(self, n: int, seed: int, pretraining: bool = True):
        scenes = sample_scenes(n, seed, pretraining=pretraining)
        self.scenes = list(dict.fromkeys(scenes))
        where = {s: i for i, s in enumerate(self.scenes)}
        self.draws = torch.tensor([where[s] for s in scenes])  # keeps the sampler's frequencies
        self.images = np.stack([render(s) for s in self.scenes])
        self.captions = [caption(s) for s in self.scenes]

    def __len__(self):
        return len(self.scenes)


def _pool_size(steps: int, batch_size: int) -> int:
    return int(min(POOL_CAP, max(128, steps * batch_size)))


class Ema:
    """EMA of a module's float tensors, decay min(max_decay, (1+n)/(10+n)): short runs (a few
    hundred CPU steps) still average over a sensible window, long GPU runs over ~1/(1-max)."""

    def __init__(self, module, max_decay: float = 0.999):
        self.shadow = [p.detach().clone() for p in module.parameters()]
        self.max_decay, self.n = max_decay, 0

    @torch.no_grad()
    def update(self, module):
        self.n += 1
        decay = min(self.max_decay, (1 + self.n) / (10 + self.n))
        torch._foreach_lerp_(self.shadow, [p.detach() for p in module.parameters()], 1 - decay)

    @torch.no_grad()
    def copy_to(self, module):
        for s, p in zip(self.shadow, module.parameters()):
            p.copy_(s)


def _generic_textures(n: int, gen: torch.Generator) -> torch.Tensor:
    """Two inks mixed by a random mask (cells of 1-5 px, random phase) in a random box on a third
    colour.  They teach the VAE what held-out subjects need (two inks side by side, fine detail)
    without drawing any held-out concept: trained on flat shapes alone it mixed the checker's
    green and orange and muddied the star's purple heart (held-out MSE 0.02-0.04 -> 0.002-0.005).
    Known limit: the held-out "dotted" style (1 px dots, period 2) is still lost (MSE ~0.1);
    adding regular dot lattices here did not fix it either, so it was left out."""
    pal = torch.tensor(list(COLORS.values()) + list(BACKGROUNDS.values()), dtype=torch.float32) / 127.5 - 1
    cols = pal[torch.randint(len(pal), (n, 3), generator=gen)]  # ink a, ink b, background
    out = cols[:, 2, :, None, None].repeat(1, 1, CANVAS, CANVAS)

    def r(lo, hi):
        return int(torch.randint(lo, hi, (1,), generator=gen))

    for i in range(n):
        side, cell = r(8, CANVAS + 1), r(1, 6)
        y0, x0, oy, ox = r(0, CANVAS - side + 1), r(0, CANVAS - side + 1), r(0, cell), r(0, cell)
        m = torch.rand(1, 1, CANVAS // cell + 2, CANVAS // cell + 2, generator=gen) < 0.5
        m = F.interpolate(m.float(), scale_factor=cell)[0, 0, oy:oy + side, ox:ox + side]
        out[i, :, y0:y0 + side, x0:x0 + side] = m * cols[i, 0, :, None, None] + (1 - m) * cols[i, 1, :, None, None]
    return out


def log_every(steps: int) -> int:
    return max(1, min(500, steps // 10))


def warmup_cosine(opt, peak: float, step: int, steps: int, warmup: int) -> None:
    """Linear warmup over `warmup` steps, then cosine: a short run still ends annealed."""
    for g in opt.param_groups:
        g["lr"] = peak * min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * step / (steps + 1)))


def optimizer_step(opt, loss, params) -> None:
    """Backward, clip the gradient norm at 1, step: every micro-world trainer's update."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def train_vae(steps: int, batch_size: int = 32, seed: int = 0, device=None, log=print,
              kl_weight: float = 1e-6, generic_frac: float = 0.5, stats: dict | None = None,
              eval_n: int = 256):
    """Train the AutoencoderKL (MSE + kl_weight * per-image KL sum, the LDM weighting) and set its
    ``scaling_factor`` to 1/std of the training latents.  ``stats`` (if given) is filled in."""
    device, t0 = resolve(device), time.time()
    pool = ScenePool(_pool_size(steps, batch_size), seed)
    pixels = to_pixels(pool.images).to(device)
    vae = make_vae(seed).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    n_generic = int(round(batch_size * generic_frac))
    # A bank made once: per-step generation in Python would bound the GPU step time.
    bank = _generic_textures(min(4096, max(1, steps * n_generic)), gen).to(device)
    run, every = None, log_every(steps)
    for step in range(1, steps + 1):
        warmup_cosine(opt, 1e-3, step, steps, warmup=100)  # the last steps polish fine detail
        idx = pool.draws[torch.randint(len(pool.draws), (batch_size - n_generic,), generator=gen)]
        x = torch.cat([pixels[idx.to(device)], bank[torch.randint(len(bank), (n_generic,), generator=gen).to(device)]])
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        mse = F.mse_loss(rec, x)
        loss = mse + kl_weight * post.kl().mean()
        optimizer_step(opt, loss, vae.parameters())
        run = mse.item() if run is None else 0.95 * run + 0.05 * mse.item()
        if step % every == 0 or step == steps:
            log(f"vae step {step}/{steps}  mse {run:.4f}  {time.time() - t0:.0f}s")
    vae.eval()
    with torch.no_grad():
        lat = torch.cat([vae.encode(pixels[i:i + 256]).latent_dist.sample() for i in range(0, len(pixels), 256)])
        vae.register_to_config(scaling_factor=float(1.0 / lat.std().clamp_min(1e-6)))
    if stats is not None:
        stats.update(steps=steps, seconds=round(time.time() - t0, 2), final_mse=run,
                     params=n_params(vae), scaling_factor=vae.config.scaling_factor,
                     recon_mse=recon_mse(vae, seed + EVAL_SEED_OFFSET, True, eval_n),
                     heldout_recon_mse=recon_mse(vae, seed + EVAL_SEED_OFFSET, False, eval_n),
                     heldout_recon_by_concept=heldout_recon_by_concept(vae))
    return vae


@torch.no_grad()
def recon_mse(vae, seed: int, pretraining: bool = True, n: int = 256) -> float:
    """Reconstruction MSE (in [-1, 1] units, posterior mean) on fresh draws; with
    ``pretraining=False`` only scenes with a held-out subject or style count."""
    scenes = sample_scenes(4 * n if not pretraining else n, seed, pretraining=pretraining)
    if not pretraining:
        scenes = [s for s in scenes if s.subject or s.style in HELDOUT_STYLES][:n]
    return _mse(vae, scenes)


def _mse(vae, scenes) -> float:
    x = to_pixels(np.stack([render(s) for s in scenes])).to(vae.device, vae.dtype)
    with torch.no_grad():
        rec = vae.decode(vae.encode(x).latent_dist.mode()).sample
    return float(F.mse_loss(rec.float(), x.float()))


def heldout_recon_by_concept(vae) -> dict[str, float]:
    """Reconstruction MSE of each held-out concept's reference images: a concept the VAE cannot
    reproduce cannot be learned by any personalization method (measured: "dotted" ~0.1)."""
    out = {name: _mse(vae, reference_scenes(name)) for name in HELDOUT_SUBJECTS}  # later ones: subject_screen
    return {**out, **{name: _mse(vae, style_reference_scenes(name)) for name in HELDOUT_STYLES}}


def _latent_stats(vae, pixels: torch.Tensor):
    with torch.no_grad():
        parts = [vae.encode(pixels[i:i + 256]).latent_dist for i in range(0, len(pixels), 256)]
    return torch.cat([p.mean for p in parts]), torch.cat([p.std for p in parts])


def _v_batch(mean, std, sf, ab, gen, device):
    """Noisy latents, timesteps and v targets for one batch of posteriors (the DDPM forward)."""
    lat = (mean + std * torch.randn(mean.shape, generator=gen).to(device)) * sf
    noise = torch.randn(lat.shape, generator=gen).to(device)
    t = torch.randint(0, len(ab), (len(lat),), generator=gen).to(device)
    a = ab[t].view(-1, 1, 1, 1)
    return a.sqrt() * lat + (1 - a).sqrt() * noise, t, a.sqrt() * noise - (1 - a).sqrt() * lat


def _unet_loss(unet, text_encoder, noisy, t, target, ids, device):
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        states = text_encoder(ids)[0]
        pred = unet(noisy, t, states).sample
    return F.mse_loss(pred.float(), target)


def train_base(vae, steps: int, batch_size: int = 32, seed: int = 0, device=None,
               time_budget_s: float | None = None, log=print, lr: float = 1e-3,
               empty_frac: float = 0.1, stats: dict | None = None, eval_n: int = 256, attention_16: bool = False,
               init_from=None):
    """Train UNet + text encoder jointly for ``steps`` (or until ``time_budget_s``); returns the
    EMA weights as ``(unet, text_encoder)``.  ``stats`` (if given) is filled in."""
    device, t0 = resolve(device), time.time()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    pool = ScenePool(_pool_size(steps, batch_size), seed)
    vae = vae.to(device).eval()
    mean, std = _latent_stats(vae, to_pixels(pool.images).to(device))
    ids, empty = tokenize(pool.captions).to(device), tokenize([""]).to(device)
    sf, ab = vae.config.scaling_factor, alphas_cumprod().to(device)
    unet = make_unet(seed, attention_16).to(device).train()
    text_encoder = make_text_encoder(seed).to(device).train()
    if init_from is not None:  # (unet, text_encoder) to warm-start from; layers they lack stay fresh
        unet.load_state_dict(init_from[0].state_dict(), strict=False)
        text_encoder.load_state_dict(init_from[1].state_dict())
    emb = text_encoder.get_input_embeddings().weight
    # No weight decay on token embeddings: never-seen tokens (the held-out identifiers) keep their
    # initial norm instead of shrinking towards zero, as in a real pretrained encoder.
    rest = [p for p in list(unet.parameters()) + list(text_encoder.parameters()) if p is not emb]
    params = rest + [emb]
    opt = torch.optim.AdamW([{"params": rest}, {"params": [emb], "weight_decay": 0.0}], lr=lr, weight_decay=1e-2)
    ema_u, ema_t = Ema(unet), Ema(text_encoder)
    gen = torch.Generator().manual_seed(seed + 1)
    run, every, step = None, log_every(steps), 0
    while step < steps and not (time_budget_s and time.time() - t0 > time_budget_s):
        step += 1
        for g in opt.param_groups:  # 100-step warmup: Adam's first steps are large with lr 1e-3
            g["lr"] = lr * min(1.0, step / 100)
        idx = pool.draws[torch.randint(len(pool.draws), (batch_size,), generator=gen)].to(device)
        noisy, t, target = _v_batch(mean[idx], std[idx], sf, ab, gen, device)
        drop = (torch.rand(batch_size, generator=gen) < empty_frac).to(device)
        loss = _unet_loss(unet, text_encoder, noisy, t, target, torch.where(drop[:, None], empty, ids[idx]), device)
        optimizer_step(opt, loss, params)
        ema_u.update(unet)
        ema_t.update(text_encoder)
        run = loss.item() if run is None else 0.98 * run + 0.02 * loss.item()
        if step % every == 0 or step == steps:
            el = time.time() - t0
            log(f"unet step {step}/{steps}  loss {run:.4f}  {step * batch_size / el:.0f} img/s  {el:.0f}s")
    seconds = time.time() - t0
    ema_u.copy_to(unet)
    ema_t.copy_to(text_encoder)
    unet.eval(), text_encoder.eval()
    if stats is not None:
        stats.update(steps=step, seconds=round(seconds, 2), final_loss=run, batch_size=batch_size,
                     images_per_s=round(step * batch_size / max(seconds, 1e-9), 1),
                     eval_loss=eval_loss(vae, unet, text_encoder, seed + EVAL_SEED_OFFSET, eval_n),
                     unet_params=n_params(unet), text_encoder_params=n_params(text_encoder))
    return unet, text_encoder


@torch.no_grad()
def eval_loss(vae, unet, text_encoder, seed: int, n: int = 256) -> float:
    """v-prediction MSE on fresh pretraining draws with fixed noise and timesteps (comparable
    across runs of the same seed)."""
    device = unet.device
    pool = ScenePool(n, seed)
    mean, std = _latent_stats(vae, to_pixels(pool.images).to(device, vae.dtype))
    idx = pool.draws.to(device)
    gen = torch.Generator().manual_seed(seed)
    noisy, t, target = _v_batch(mean[idx].float(), std[idx].float(), vae.config.scaling_factor,
                                alphas_cumprod().to(device), gen, device)
    ids = tokenize(pool.captions).to(device)[idx]
    return float(_unet_loss(unet, text_encoder, noisy, t, target, ids, device))


