"""Stable Diffusion 3 / 3.5: an MMDiT transformer trained by flow matching.

Conditioning is the pipeline's own `encode_prompt`: CLIP-L and CLIP-G penultimate hidden states,
concatenated and zero-padded to T5's width, followed by T5's hidden states along the sequence
(zeros when the folder has no T5), and the two CLIPs' pooled embeddings concatenated.

Training follows diffusers' `train_dreambooth_lora_sd3.py` with its defaults:

    u ~ logit-normal(0, 1) = sigmoid(N(0, 1)),  t = timesteps[floor(u * T)],  sigma = sigma(t)
    x_t = (1 - sigma) x0 + sigma * noise
    target = noise - x0        (the velocity the transformer predicts; uniform loss weights)

where `timesteps` and `sigma` are the scheduler's training schedule (with its shift). DCO's
two squared errors are taken in this velocity space, as is guidance at sampling time.
"""

from __future__ import annotations

import torch

from ..errors import DcoError
from .base import Family, Noising, compute_dtype, read_config, register, vae_scale

LORA_TARGETS = [  # diffusers' train_dreambooth_lora_sd3.py default: image and context projections
    "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out",
    "attn.to_k", "attn.to_out.0", "attn.to_q", "attn.to_v",
]


def logit_normal(n: int, generator: torch.Generator, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """u = sigmoid(z), z ~ N(mean, std): the SD3 paper's timestep density (mean 0, std 1)."""
    return torch.sigmoid(torch.normal(mean, std, size=(n,), generator=generator))


class FlowMatchNoising(Noising):
    def __init__(self, scheduler_config):
        from diffusers import FlowMatchEulerDiscreteScheduler

        # a fresh scheduler holds the full training schedule (set_timesteps would shorten it)
        sched = FlowMatchEulerDiscreteScheduler.from_config(scheduler_config)
        self.schedule, self.sigmas = sched.timesteps.clone(), sched.sigmas.clone()
        self.num_train = sched.config.num_train_timesteps

    def timesteps(self, n, generator, device):
        idx = (logit_normal(n, generator) * self.num_train).long()
        return self.schedule[idx].to(device)

    def sigma(self, t: torch.Tensor, ndim: int) -> torch.Tensor:
        idx = (self.schedule.to(t.device)[None, :] == t[:, None]).int().argmax(dim=1)
        return self.sigmas.to(t.device)[idx].reshape(-1, *[1] * (ndim - 1))

    def add_noise(self, x0, noise, t):
        sigma = self.sigma(t, x0.ndim).to(x0.dtype)
        return (1.0 - sigma) * x0 + sigma * noise

    def target(self, x0, noise, t):
        return noise - x0

    def weights(self, t, cfg):
        if cfg.snr_gamma:
            raise DcoError("train.snr_gamma: Min-SNR weighting is defined for epsilon/v-prediction UNets; sd3 is "
                           "trained by flow matching with a logit-normal timestep density; set train.snr_gamma=0")
        return None  # uniform, as in diffusers' SD3 script with its default logit_normal weighting


@register
class SD3(Family):
    name = "sd3"
    description = "Stable Diffusion 3 / 3.5 (MMDiT transformer, CLIP-L + CLIP-G + optional T5; flow matching)"
    pipelines = ("StableDiffusion3Pipeline",)
    components = ("transformer", "text_encoder_3")
    denoiser_attr = "transformer"
    lora_targets = LORA_TARGETS
    # the identifier gets a row in both CLIPs, as on SDXL; T5 reads it as ordinary word pieces
    token_encoders = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}

    def native_resolution(self, model):
        cfg, scale = read_config(model, "transformer", "SD3Transformer2DModel"), vae_scale(model)
        return None if cfg is None or scale is None else int(cfg["sample_size"]) * scale

    def encode(self, pipe, prompts, resolution):
        emb, _, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, prompt_3=None,
                                               device=self.denoiser(pipe).device, num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
        return {"encoder_hidden_states": emb, "pooled_projections": pooled}

    def forward(self, model, x, t, cond):
        if t.ndim == 0:
            t = t.expand(x.shape[0])  # as the stock pipeline does
        dtype = compute_dtype(model)
        return model(
            hidden_states=x.to(dtype),
            timestep=t,
            encoder_hidden_states=cond["encoder_hidden_states"].to(dtype),
            pooled_projections=cond["pooled_projections"].to(dtype),
            return_dict=False,
        )[0]

    def noising(self, scheduler):
        return FlowMatchNoising(scheduler.config)

    def set_timesteps(self, scheduler, steps, device, model, latent_shape):
        kwargs = {}
        if scheduler.config.get("use_dynamic_shifting", False):  # resolution-dependent shift, as the pipeline
            from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

            patch = model.config.patch_size
            seq_len = (latent_shape[-2] // patch) * (latent_shape[-1] // patch)
            c = scheduler.config
            kwargs["mu"] = calculate_shift(seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                                           c.get("base_shift", 0.5), c.get("max_shift", 1.16))
        scheduler.set_timesteps(steps, device=device, **kwargs)

    def init_noise_sigma(self, scheduler):
        return 1.0  # flow matching starts from unit Gaussian noise

    def scale_model_input(self, scheduler, x, t):
        return x

    def check_merges(self):
        raise DcoError("merge: direct and ziplora merge UNet LoRAs (sd15, sdxl); sd3 LoRAs are not supported yet; "
                       "drop --merge for this model")
