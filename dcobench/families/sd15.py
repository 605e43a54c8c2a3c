"""Stable Diffusion 1.x / 2.x: one CLIP text encoder, cross-attention conditioning only."""

from __future__ import annotations

from .base import register
from .unet import UNetFamily


@register
class SD15(UNetFamily):
    name = "sd15"
    description = "Stable Diffusion 1.x / 2.x (UNet, one CLIP text encoder; epsilon or v)"
    aliases = ("sd",)
    pipelines = ("StableDiffusionPipeline",)
    components = ("unet", "text_encoder")
    token_encoders = {"text_encoder": None}

    def load_kwargs(self, index):
        kwargs = super().load_kwargs(index)
        if "safety_checker" in index:  # benchmark images are scored, not filtered
            kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        return kwargs

    def encode(self, pipe, prompts, resolution):
        emb, _ = pipe.encode_prompt(prompts, self.denoiser(pipe).device, 1, False)
        return {"encoder_hidden_states": emb}
