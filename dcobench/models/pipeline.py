"""Loading pipelines and turning prompts into denoiser conditioning, for every model family.

Conditioning is a flat dict of tensors so the trainer and sampler can concatenate, index and
cache it without knowing the model family (`dcobench.families` knows). Encoding goes through the
pipeline's own `encode_prompt`, so the sampler's classifier-free guidance is bit-for-bit the
stock pipeline's.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import torch

from ..errors import DcoError
from ..families.unet import unet_forward  # noqa: F401  (the UNet call; merges use it directly)


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
    """`DiffusionPipeline.from_pretrained` on a folder or hub id of a supported family, without the
    safety checker, and with any component the folder leaves out (e.g. SD3 without T5) as None."""
    from diffusers import DiffusionPipeline

    from ..families import family_for_index, read_index

    quiet_libraries()
    model = str(model)
    index = read_index(model)
    if index is None:
        raise DcoError(
            f"model '{model}': cannot read its model_index.json; pass a diffusers pipeline folder, or a hub id "
            "that is in the local cache (HF_HUB_OFFLINE=1)"
        )
    kwargs = family_for_index(index, model).load_kwargs(index)
    with warnings.catch_warnings():
        # newer diffusers call it `dtype` and warn on `torch_dtype`; older ones only know the latter
        warnings.simplefilter("ignore", FutureWarning)
        pipe = DiffusionPipeline.from_pretrained(model, torch_dtype=dtype, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def native_resolution(model: str, default: int = 512) -> int:
    """The pixel size a pipeline was trained at: the denoiser's sample size x VAE downsampling
    (512 for SD1.5, 1024 for SDXL and SD3.5, 32 for the tiny models), read from the configs
    without loading weights. A model of an unsupported family fails here, before anything runs."""
    from ..families import family_of_model

    fam = family_of_model(model)
    return (fam.native_resolution(model) if fam else None) or default


class Conditioner:
    """Prompt -> conditioning tensors, cached per prompt (text encoders are frozen).

    The tensors are whatever the model family's denoiser takes (`encoder_hidden_states`, plus
    SDXL's `text_embeds` and `time_ids`, or SD3's `pooled_projections`), batch first."""

    def __init__(self, pipe, resolution: int):
        from ..families import family_of

        self.pipe = pipe
        self.family = family_of(pipe)
        self.resolution = resolution
        self._cache: dict[str, dict[str, torch.Tensor]] = {}

    @property
    def denoiser(self):
        return self.family.denoiser(self.pipe)

    @property
    def device(self):
        return self.denoiser.device

    def clear(self) -> None:
        """Forget cached encodings (after the tokenizer or text encoder changed, e.g. new tokens)."""
        self._cache.clear()

    def with_grad(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Encode with gradients and no cache: for training a token embedding."""
        return self.family.encode(self.pipe, prompts, self.resolution)

    @torch.no_grad()
    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            enc = self.family.encode(self.pipe, missing, self.resolution)
            for i, p in enumerate(missing):
                self._cache[p] = {k: v[i : i + 1] for k, v in enc.items()}
        return cat([self._cache[p] for p in prompts])


def cat(conds: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.cat([c[k] for c in conds]) for k in conds[0]}
