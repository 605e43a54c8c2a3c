"""Direct Consistency Optimization (Lee, Kwak, Sohn, Shin; arXiv 2402.12004, NeurIPS 2024).

    L = -log sigmoid( -beta * ( ||eps_theta(x_t, c, t) - target||^2 - ||eps_phi(x_t, c_base, t) - target||^2 ) )

eps_theta is the UNet with the LoRA, eps_phi the same UNet with the LoRA disabled, evaluated under
no_grad on the same x_t, t and noise. c_base is the base prompt: the caption with the class noun in
place of the identifier. The squared errors are per-sample means, so at initialisation (LoRA B = 0)
the two terms are equal and L = log 2.

The gradient w.r.t. eps_theta is beta * sigmoid(beta * d) * d||eps_theta - target||^2, with
d = mse_theta - mse_phi: it fades once the fine-tuned model fits the references much better than
the base model, which is what keeps DCO close to the pretrained model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from ..config import MethodConfig, option, positive
from ..registry import METHODS
from .base import Objective, per_sample_mse


@dataclass
class DCOConfig(MethodConfig):
    beta: float = option(1000.0, "Inverse temperature of the consistency loss (paper: 1000 to 2000).", positive)
    reference_prompt: str = option(
        "base",
        "Prompt of the reference pass eps_phi: base (the caption with the class noun in place of the "
        "identifier) or same (the training caption itself; then the loss starts at exactly log 2).",
        choices=["base", "same"],
    )


@METHODS.register("dco", description="Direct Consistency Optimization (reference-regularised LoRA).")
class DCO(Objective):
    name = "dco"
    config_cls = DCOConfig
    needs_reference = True
    default_guidance = "consistency"

    @property
    def reference_uses_base_prompt(self) -> bool:
        return self.cfg.reference_prompt == "base"

    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        if ref_pred is None:
            raise ValueError("DCO needs the reference model's prediction (needs_reference=True)")
        model_mse = per_sample_mse(model_pred, target, weights)
        ref_mse = per_sample_mse(ref_pred, target, weights)
        diff = model_mse - ref_mse
        loss = -F.logsigmoid(-self.cfg.beta * diff).mean()
        return loss, {
            "loss": loss.item(),
            "mse": model_mse.mean().item(),
            "ref_mse": ref_mse.mean().item(),
            "implicit_acc": (diff < 0).float().mean().item(),
            "beta_gap": self.cfg.beta * diff.mean().item(),
        }
