"""SDXL: CLIP-L and CLIP-G, their hidden states concatenated, CLIP-G's pooled embedding and the
six size/crop time ids added to the UNet's time embedding."""

from __future__ import annotations

import torch

from .base import register
from .unet import UNetFamily


@register
class SDXL(UNetFamily):
    name = "sdxl"
    description = "Stable Diffusion XL (UNet, CLIP-L + CLIP-G, pooled embeddings and time ids)"
    pipelines = ("StableDiffusionXLPipeline",)
    components = ("unet", "text_encoder_2")
    token_encoders = {"text_encoder": "clip_l", "text_encoder_2": "clip_g"}

    def encode(self, pipe, prompts, resolution):
        dev = self.denoiser(pipe).device
        emb, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=dev, num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
        if getattr(pipe.config, "force_zeros_for_empty_prompt", False):
            # the stock SDXL pipeline uses zeros, not the encoded "", as its negative
            empty = torch.tensor([p == "" for p in prompts], device=dev)
            emb = torch.where(empty[:, None, None], torch.zeros_like(emb), emb)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        r = resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=dev, dtype=emb.dtype).repeat(len(prompts), 1)
        return {"encoder_hidden_states": emb, "text_embeds": pooled, "time_ids": time_ids}
