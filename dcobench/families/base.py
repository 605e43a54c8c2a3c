"""What the trainer, the reference pass and the sampler ask a model family.

A family describes one kind of diffusers text-to-image pipeline:

- which pipelines it is (`pipelines`: model_index.json `_class_name` values), how to load one
  (`load_kwargs`) and its native resolution;
- how prompts become conditioning (`encode`): a flat dict of batch-first tensors that the trainer
  and sampler index, concatenate and cache without knowing what is inside;
- how training noises a latent and what the denoiser is trained to predict (`noising`);
- which module is the denoiser, which of its layers a LoRA targets, how the LoRA is saved;
- how the denoiser is called (`forward`) and how the sampler sets up its scheduler;
- which text encoders get a trained identifier token, and under which key it is saved.

A new family is one file that subclasses `Family` and registers an instance with
`@register`, plus one import line in `dcobench/families/__init__.py`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..registry import Registry

FAMILIES = Registry("model family")


def register(cls):
    """Class decorator: register one instance of a `Family` subclass under its `name`."""
    FAMILIES.register(cls.name, cls(), description=cls.description)
    return cls


class Noising:
    """Training's forward process: timesteps, noisy latents and the regression target."""

    def timesteps(self, n: int, generator: torch.Generator, device) -> torch.Tensor:
        raise NotImplementedError

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def weights(self, t: torch.Tensor, cfg) -> torch.Tensor | None:
        """Per-sample loss weights for `cfg` (a TrainConfig), or None for uniform."""
        return None


class Family:
    name = ""
    description = ""
    aliases: tuple[str, ...] = ()  # older names, e.g. in token files written before families existed
    pipelines: tuple[str, ...] = ()  # model_index.json `_class_name` values
    components: tuple[str, ...] = ()  # component names that identify a pipeline of another class
    denoiser_attr = "unet"
    # None: TrainConfig's own default (the UNet attention projections)
    lora_targets: list[str] | None = None
    # pipeline attribute of each text encoder that gets a trained token -> its key in the saved
    # file; a single encoder with key None is diffusers' plain `{identifier: tensor}` format
    token_encoders: dict[str, str | None] = {"text_encoder": None}

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def denoiser(self, pipe):
        return getattr(pipe, self.denoiser_attr)

    def load_kwargs(self, index: dict) -> dict:
        """Extra `from_pretrained` arguments: every component the folder leaves out is None
        (diffusers otherwise refuses a folder whose model_index.json has a null entry)."""
        return {k: None for k, v in index.items() if isinstance(v, list) and v == [None, None]}

    def native_resolution(self, model: str) -> int | None:
        """Pixel size the model was trained at, from its configs (no weights), or None."""
        return None

    def run_defaults(self) -> dict:
        """Config defaults for runs on this family, below the suite's own defaults."""
        return {"train": {"target_modules": list(self.lora_targets)}} if self.lora_targets else {}

    def encode(self, pipe, prompts: list[str], resolution: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def forward(self, model, x: torch.Tensor, t: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def noising(self, scheduler) -> Noising:
        raise NotImplementedError

    def set_timesteps(self, scheduler, steps: int, device, model, latent_shape) -> None:
        scheduler.set_timesteps(steps, device=device)

    def init_noise_sigma(self, scheduler) -> float:
        return scheduler.init_noise_sigma

    def scale_model_input(self, scheduler, x: torch.Tensor, t) -> torch.Tensor:
        return scheduler.scale_model_input(x, t)

    def lora_layers(self, model, adapter_name: str) -> dict:
        """The adapter's weights in the key format this family's `load_lora_weights` reads: peft's
        own (`lora_A`/`lora_B`), as diffusers' transformer training scripts save them."""
        from peft.utils import get_peft_model_state_dict

        return get_peft_model_state_dict(model, adapter_name=adapter_name)

    def lora_save_kwargs(self, layers: dict, metadata: dict) -> dict:
        """The `save_lora_weights` arguments for the denoiser's LoRA."""
        return {f"{self.denoiser_attr}_lora_layers": layers, f"{self.denoiser_attr}_lora_adapter_metadata": metadata}

    def check_merges(self) -> None:
        """Merges (direct, ZipLoRA) read and write UNet LoRA keys; families without them refuse."""


def compute_dtype(model) -> torch.dtype:
    """The dtype a denoiser computes in, as diffusers' `model.dtype` gives it (the first
    floating-point parameter outside `_keep_in_fp32_modules`), without `model.dtype`'s walk over
    every submodule for layerwise-casting hooks (dcobench attaches none): that walk costs 2.3 ms
    a call on the micro UNet, whose batch-4 forward pass takes 25 to 35 ms."""
    keep = getattr(model, "_keep_in_fp32_modules", None) or ()
    for name, p in model.named_parameters():
        if p.is_floating_point() and not any(m in name for m in keep):
            return p.dtype
    return model.dtype


def read_config(model: str | Path, subfolder: str, cls_name: str) -> dict | None:
    """A component's config.json (diffusers class `cls_name`) from a local folder or the hub
    cache, without weights; None if unreadable."""
    import diffusers

    try:
        return dict(getattr(diffusers, cls_name).load_config(str(model), subfolder=subfolder))
    except Exception:
        return None


def vae_scale(model: str | Path) -> int | None:
    vae = read_config(model, "vae", "AutoencoderKL")
    return None if vae is None else 2 ** (len(vae["block_out_channels"]) - 1)
