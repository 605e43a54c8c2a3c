"""The micro base model: a real StableDiffusionPipeline trained from scratch on the micro world.

Recipe (from the feasibility study in NOTES.md, "A micro world that worked"):

* VAE 32x32x3 -> 16x16x4, trained first and frozen; ``scaling_factor`` = 1/std of the training
  latents so the UNet sees unit-variance latents, like SD's 0.18215.
* UNet (32, 64, 64), cross-attention only at 8x8 and 4x4 (attention at 16x16 costs 5-10x on a
  CPU), ``addition_embed_type="text"``: the UNet attention-pools the text states into its time
  embedding, which made attribute binding learnable at all; the stock pipeline needs no extra
  inputs for it.  v-prediction, linear betas 1e-4..0.02 (epsilon-prediction stayed at chance).
* CLIPTextModel (hidden 64, 2 layers) trained jointly with the UNet, 10% empty captions so
  classifier-free guidance works, AdamW 1e-3, gradient clipping, EMA; the EMA weights are saved.

Text length is 20 tokens, not the 16 of the study: the world's longest captions ("a sks yellow
triangle on a gray background, large, bottom left, in outline style") are 19 tokens with BOS/EOS, and at 16 the
style words of two thirds of the training captions and every held-out-style identifier were cut.

Data is the finite pretraining world (2070 distinct scenes): a pool of ``sample_scenes`` draws is
rendered once per distinct scene, and for the UNet each distinct image's VAE posterior is encoded
once, so a step costs only the UNet and the text encoder.  Held-out subjects and styles are never
drawn (``pretraining=True``).  Half of each VAE batch is generic two-ink noise textures so it can
reproduce the two-colour detail held-out subjects need without seeing them (``_generic_textures``).
"""
from __future__ import annotations

import copy
import functools
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..resources import data_dir
from .world import (BACKGROUNDS, CANVAS, COLORS, HELDOUT_STYLES, SUBJECTS, caption, reference_scenes, render,
                    sample_scenes, style_reference_scenes)

TEXT_LEN = 20
POOL_CAP = 20000  # draws; covers every distinct pretraining scene many times over
EVAL_SEED_OFFSET = 1000  # eval pools use seed + this: other draws of the same world


def default_micro_dir() -> Path:
    """Where the shipped micro weights live (``data/micro``), overridable by $DCOBENCH_MICRO."""
    return Path(os.environ.get("DCOBENCH_MICRO") or data_dir() / "micro")


def resolve(device=None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@functools.lru_cache(maxsize=1)
def tokenizer():
    from ..models.tokenizer import offline_clip_tokenizer

    return offline_clip_tokenizer(TEXT_LEN)


def tokenize(texts: list[str]) -> torch.Tensor:
    # Exactly how StableDiffusionPipeline.encode_prompt tokenizes, so training matches sampling.
    return tokenizer()(list(texts), padding="max_length", max_length=TEXT_LEN, truncation=True,
                       return_tensors="pt").input_ids


def to_pixels(images) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float (N, 3, 32, 32) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


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


def make_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=CANVAS,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
                         layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False)


def make_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=CANVAS // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
        layers_per_block=1, norm_num_groups=8, cross_attention_dim=64, attention_head_dim=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        # 4 pooling heads of 16 dims (the default 64 heads would leave 1 dim per head)
        addition_embed_type="text", addition_embed_type_num_heads=4)


def make_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=TEXT_LEN, projection_dim=64,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(cfg)


SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                prediction_type="v_prediction")


def make_scheduler():
    """The sampling scheduler saved with the pipeline.  "trailing" spacing starts sampling at
    t=999, the noisiest step the UNet was trained on (recommended for v-prediction)."""
    from diffusers import DDIMScheduler

    # steps_offset only applies to "leading"; 1 keeps the stock pipeline from warning about it.
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False,
                         timestep_spacing="trailing", steps_offset=1)


def _alphas_cumprod() -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE).alphas_cumprod.float()


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


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
    out = {name: _mse(vae, reference_scenes(name)) for name in SUBJECTS}
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
               empty_frac: float = 0.1, stats: dict | None = None, eval_n: int = 256):
    """Train UNet + text encoder jointly for ``steps`` (or until ``time_budget_s``); returns the
    EMA weights as ``(unet, text_encoder)``.  ``stats`` (if given) is filled in."""
    device, t0 = resolve(device), time.time()
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    pool = ScenePool(_pool_size(steps, batch_size), seed)
    vae = vae.to(device).eval()
    mean, std = _latent_stats(vae, to_pixels(pool.images).to(device))
    ids, empty = tokenize(pool.captions).to(device), tokenize([""]).to(device)
    sf, ab = vae.config.scaling_factor, _alphas_cumprod().to(device)
    unet, text_encoder = make_unet(seed).to(device).train(), make_text_encoder(seed).to(device).train()
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
                                _alphas_cumprod().to(device), gen, device)
    ids = tokenize(pool.captions).to(device)[idx]
    return float(_unet_loss(unet, text_encoder, noisy, t, target, ids, device))


def build_micro_pipeline(vae, unet, text_encoder, scheduler=None):
    """Assemble the stock StableDiffusionPipeline (no safety checker) from trained parts."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer(), unet=unet,
                                   scheduler=scheduler or make_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def save_pipeline(pipe, path, dtype=torch.float16) -> Path:
    """``save_pretrained`` (safetensors) into a temporary sibling folder, then rename, so a reader
    never sees half a model.  fp16 halves the size (the 49408x64 token table is most of it);
    load with ``torch_dtype=torch.float32`` to get fp32 weights back."""
    from ..models.pipeline import quiet_libraries
    from ..store import atomic_folder

    quiet_libraries()  # diffusers warns about fp16 pipelines on the CPU: we only store them
    path = Path(path)
    with atomic_folder(path) as tmp:  # a previous build is moved aside only once this one is complete
        copy.deepcopy(pipe).to("cpu", dtype).save_pretrained(tmp, safe_serialization=True)
        # transformers 5 loads in the config's dtype by default while diffusers upcasts to fp32:
        # declaring fp32 keeps a plain from_pretrained(path) consistent (fp16 is only storage).
        cfg = tmp / "text_encoder" / "config.json"
        cfg.write_text(cfg.read_text().replace('"dtype": "float16"', '"dtype": "float32"'))
    return path


def build(out_dir, vae_steps: int, unet_steps: int, seed: int = 0, device=None, log=print,
          batch_size: int = 32, time_budget_s: float | None = None, save_dtype=torch.float16,
          eval_n: int = 256, vae_batch_size: int | None = None, vae_generic_frac: float = 0.5) -> dict:
    """Train VAE, then UNet + text encoder, save the pipeline to ``out_dir/base``; return stats.
    ``vae_batch_size`` (default ``batch_size``): on a GPU the VAE step is latency-bound, so 128+
    trains it several times faster per second."""
    from ..models.pipeline import quiet_libraries

    quiet_libraries()
    device, t0 = resolve(device), time.time()
    stats = {"seed": seed, "device": str(device), "text_len": TEXT_LEN, "vae": {}, "unet": {}}
    log(f"micro build on {device}: vae {vae_steps} steps (batch {vae_batch_size or batch_size}), "
        f"unet {unet_steps} steps (batch {batch_size})")
    vae = train_vae(vae_steps, vae_batch_size or batch_size, seed, device, log, generic_frac=vae_generic_frac,
                    stats=stats["vae"], eval_n=eval_n)
    unet, text_encoder = train_base(vae, unet_steps, batch_size, seed, device, time_budget_s, log,
                                    stats=stats["unet"], eval_n=eval_n)
    path = save_pipeline(build_micro_pipeline(vae, unet, text_encoder), Path(out_dir) / "base", save_dtype)
    stats["saved"] = {"path": str(path), "bytes": folder_bytes(path), "dtype": str(save_dtype).split(".")[-1]}
    stats["total_seconds"] = round(time.time() - t0, 2)
    log(f"saved {path} ({stats['saved']['bytes'] / 1e6:.1f} MB) in {stats['total_seconds']:.0f}s")
    return stats
