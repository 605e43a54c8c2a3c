"""The objective interface the trainer calls.

An objective is a small module: a docstring with its formula, a typed config, and capability
flags the trainer reads instead of checking method names (torchtune's `rlhf/loss/dpo.py` style):

- `needs_reference`: the trainer also runs the frozen base model (LoRA disabled, no grad) on the
  same noisy latents, timesteps and noise, conditioned on the base prompt, and passes `ref_pred`.
- `needs_prior`: the trainer mixes class (prior-preservation) images into each batch.
- `default_guidance`: the sampler's guidance mode when `sample.guidance=auto`.
"""

from __future__ import annotations

import torch

from ..config import MethodConfig


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """||pred - target||^2 averaged over every dimension but the batch, in fp32, times the
    per-sample loss weights (Min-SNR) when given."""
    mse = (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))
    return mse if weights is None else mse * weights.float()


class Objective:
    name = ""
    config_cls = MethodConfig
    needs_reference = False
    needs_prior = False
    default_guidance = "cfg"
    reference_uses_base_prompt = True

    def __init__(self, cfg: MethodConfig | None = None):
        self.cfg = cfg if cfg is not None else self.config_cls()

    def __call__(
        self,
        model_pred: torch.Tensor,
        target: torch.Tensor,
        ref_pred: torch.Tensor | None = None,
        weights: torch.Tensor | None = None,
        prior: tuple | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, floats to log). `weights` are per-sample loss weights or None;
        `prior` is (pred, target, weights) on class images, for objectives that `needs_prior`."""
        raise NotImplementedError
