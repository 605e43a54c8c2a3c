"""What SD1.x/2.x and SDXL share: a UNet trained on DDPM noise, called with cross-attention
conditioning (plus SDXL's added pooled embeddings and time ids).

    x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps,   t ~ U{0, ..., T-1}
    target = eps (epsilon-prediction) or v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (v-prediction)

Min-SNR-gamma weighting (`train.snr_gamma`) is min(SNR, gamma) / SNR for epsilon and
min(SNR, gamma) / (SNR + 1) for v-prediction.
"""

from __future__ import annotations

import torch

from ..errors import DcoError
from .base import Family, Noising, compute_dtype, read_config, vae_scale


def diffusion_target(scheduler, latents, noise, timesteps) -> torch.Tensor:
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    raise DcoError(f"scheduler prediction_type '{kind}' is not supported; use epsilon or v_prediction")


def min_snr_weights(scheduler, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-gamma (Hang et al. 2023): min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v."""
    abar = scheduler.alphas_cumprod.to(timesteps.device)[timesteps].float()
    snr = abar / (1 - abar)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if scheduler.config.prediction_type == "v_prediction" else clipped / snr


class DDPMNoising(Noising):
    def __init__(self, scheduler_config):
        from diffusers import DDPMScheduler

        self.scheduler = DDPMScheduler.from_config(scheduler_config)

    def timesteps(self, n, generator, device):
        return torch.randint(0, self.scheduler.config.num_train_timesteps, (n,), generator=generator).to(device)

    def add_noise(self, x0, noise, t):
        return self.scheduler.add_noise(x0, noise, t)

    def target(self, x0, noise, t):
        return diffusion_target(self.scheduler, x0, noise, t)

    def weights(self, t, cfg):
        return min_snr_weights(self.scheduler, t, cfg.snr_gamma) if cfg.snr_gamma else None


def unet_forward(unet, latents: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    # inputs follow the UNet's weight dtype (fp16/bf16 under mixed precision); peft's fp32 LoRA
    # layers cast to their own dtype and back
    dtype = compute_dtype(unet)
    added = {k: cond[k].to(dtype) for k in ("text_embeds", "time_ids") if k in cond}
    return unet(
        latents.to(dtype),
        t,
        encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
        added_cond_kwargs=added or None,
        return_dict=False,
    )[0]


class UNetFamily(Family):
    denoiser_attr = "unet"

    def native_resolution(self, model):
        unet, scale = read_config(model, "unet", "UNet2DConditionModel"), vae_scale(model)
        return None if unet is None or scale is None else int(unet["sample_size"]) * scale

    def forward(self, model, x, t, cond):
        return unet_forward(model, x, t, cond)

    def lora_layers(self, model, adapter_name):
        # diffusers' UNet scripts convert to its own key names; on a transformer that conversion
        # renames to_q/k/v/out but not add_*_proj, and the SD3 loader then drops the renamed ones
        from diffusers.utils import convert_state_dict_to_diffusers

        state = convert_state_dict_to_diffusers(super().lora_layers(model, adapter_name))
        # The converter renames attention (Linear) layers only. A file that mixed its lora.down keys
        # with peft's lora_A keys of ResNet convs lost every attention layer in load_lora_weights
        # (measured: only the 22 conv layers were loaded), so every layer gets diffusers' names.
        return {k.replace(".lora_A.weight", ".lora.down.weight").replace(".lora_B.weight", ".lora.up.weight"): v
                for k, v in state.items()}

    def noising(self, scheduler):
        return DDPMNoising(scheduler.config)
