"""DreamBooth with prior preservation (Ruiz et al. 2023), as a LoRA.

    L = || eps_theta(x_t, c, t) - target ||^2 + prior_loss_weight * || eps_theta(x'_t, c_class, t') - target' ||^2

x' are class images that the base model generated from the class prompt (`needs_prior`: the
trainer generates, caches and batches them, `prior.py`); each micro-batch holds `batch_size`
instance and `batch_size` class examples in one UNet call.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcobench.config import MethodConfig, non_negative, option, positive
from dcobench.methods.base import per_sample_mse
from dcobench.registry import METHODS

from .dreambooth import DreamBooth


@dataclass
class DreamBoothPPConfig(MethodConfig):
    prior_loss_weight: float = option(1.0, "Weight of the class-image (prior preservation) loss.", non_negative)
    num_class_images: int = option(100, "Class images the base model generates (cached and shared).", positive)
    class_prompt: str = option("a photo of {class_noun}", "Prompt of the class images; {class_noun} is filled in.")


@METHODS.register("dreambooth_pp", baseline=True,
                  description="DreamBooth LoRA with prior preservation (class images).")
class DreamBoothPP(DreamBooth):
    name = "dreambooth_pp"
    config_cls = DreamBoothPPConfig
    needs_prior = True

    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        if prior is None:
            raise ValueError("dreambooth_pp needs the class images' predictions (needs_prior=True)")
        mse, logs = super().__call__(model_pred, target, weights=weights)
        prior_pred, prior_target, prior_weights = prior
        prior_mse = per_sample_mse(prior_pred, prior_target, prior_weights).mean()
        loss = mse + self.cfg.prior_loss_weight * prior_mse
        return loss, {**logs, "loss": loss.item(), "prior_mse": prior_mse.item()}
