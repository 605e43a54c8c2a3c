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


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """||pred - target||^2 averaged over every dimension but the batch; computed in fp32."""
    return (pred.float() - target.float()).pow(2).mean(dim=tuple(range(1, pred.ndim)))


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
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return (scalar loss, floats to log)."""
        raise NotImplementedError
