"""Loading pipelines and turning prompts into UNet conditioning, for SD and SDXL alike.

Conditioning is a flat dict of tensors (`encoder_hidden_states`, plus `text_embeds` and
`time_ids` for SDXL) so the trainer and sampler can concatenate, index and cache it without
knowing the model family. Encoding goes through the pipeline's own `encode_prompt`, so the
sampler's classifier-free guidance is bit-for-bit the stock pipeline's.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from ..errors import DcoError


def quiet_libraries() -> None:
    """Silence per-call progress bars and info logs; dcobench shows its own progress."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("diffusers", "transformers", "huggingface_hub", "peft"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import diffusers.utils.logging as dlog
        import transformers.utils.logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - an older library without these helpers; logging is cosmetic
        pass


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DcoError(f"device: '{device}' was asked for but no CUDA device is visible; use device=cpu")
    return torch.device(device)


def load_pipeline(model: str | Path, device: torch.device | str = "cpu", dtype=torch.float32):
    """`DiffusionPipeline.from_pretrained` on a folder or hub id, without the safety checker."""
    from diffusers import DiffusionPipeline

    quiet_libraries()
    model = str(model)
    try:
        index = DiffusionPipeline.load_config(model)
    except Exception as e:
        raise DcoError(
            f"model '{model}': cannot read its model_index.json ({type(e).__name__}); pass a "
            "diffusers pipeline folder, or a hub id that is in the local cache (HF_HUB_OFFLINE=1)"
        )
    kwargs = {}
    if "safety_checker" in index:
        kwargs = {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False}
    with warnings.catch_warnings():
        # newer diffusers call it `dtype` and warn on `torch_dtype`; older ones only know the latter
        warnings.simplefilter("ignore", FutureWarning)
        pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_resolution(model: str, default: int = 512) -> int:
    """The pixel size a pipeline was trained at: UNet sample size x VAE downsampling (512 for SD1.5,
    1024 for SDXL, 32 for the tiny models), read from the configs without loading weights."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    try:
        unet = UNet2DConditionModel.load_config(str(model), subfolder="unet")
        vae = AutoencoderKL.load_config(str(model), subfolder="vae")
    except (OSError, ValueError):  # no such folder or cached hub id: loading the pipeline will say so
        return default
    return int(unet["sample_size"]) * 2 ** (len(vae["block_out_channels"]) - 1)


def family(pipe) -> str:
    return "sdxl" if getattr(pipe, "text_encoder_2", None) is not None else "sd"


class Conditioner:
    """Prompt -> conditioning tensors, cached per prompt (text encoders are frozen)."""

    def __init__(self, pipe, resolution: int):
        self.pipe = pipe
        self.family = family(pipe)
        self.resolution = resolution
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def device(self):
        return self.pipe.unet.device

    def clear(self) -> None:
        """Forget cached encodings (after the tokenizer or text encoder changed, e.g. new tokens)."""
        self._cache.clear()

    def with_grad(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Encode with gradients and no cache: for training a token embedding."""
        return self._encode(prompts)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            enc = self._encode(missing)
            for i, p in enumerate(missing):
                self._cache[p] = {k: v[i : i + 1] for k, v in enc.items()}
        return cat([self._cache[p] for p in prompts])

    def _encode(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        pipe, dev = self.pipe, self.device
        if self.family == "sd":
            emb, _ = pipe.encode_prompt(prompts, dev, 1, False)
            return {"encoder_hidden_states": emb}
        emb, _, pooled, _ = pipe.encode_prompt(prompt=prompts, device=dev, num_images_per_prompt=1,
                                               do_classifier_free_guidance=False)
        if getattr(pipe.config, "force_zeros_for_empty_prompt", False):
            # the stock SDXL pipeline uses zeros, not the encoded "", as its negative
            empty = torch.tensor([p == "" for p in prompts], device=dev)
            emb = torch.where(empty[:, None, None], torch.zeros_like(emb), emb)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        r = self.resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=dev, dtype=emb.dtype).repeat(len(prompts), 1)
        return {"encoder_hidden_states": emb, "text_embeds": pooled, "time_ids": time_ids}



def cat(conds: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([c[k] for c in conds]) for k in conds[0]}


def unet_forward(unet, latents: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
    added = {k: cond[k].to(unet.dtype) for k in ("text_embeds", "time_ids") if k in cond}
    # inputs follow the UNet's weight dtype (fp16/bf16 under mixed precision); peft's fp32 LoRA
    # layers cast to their own dtype and back
    return unet(
        latents.to(unet.dtype),
        t,
        encoder_hidden_states=cond["encoder_hidden_states"].to(unet.dtype),
        added_cond_kwargs=added or None,
        return_dict=False,
    )[0]
