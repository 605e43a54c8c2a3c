"""DreamBooth as a LoRA (Ruiz et al. 2023): the plain diffusion loss, optionally with prior
preservation.

    L = || eps_theta(x_t, c, t) - target ||^2
      + prior_loss_weight * || eps_theta(x'_t, c_class, t') - target' ||^2     (dreambooth_pp)

where target is the noise eps for epsilon-prediction schedulers and v = alpha_t * eps - sigma_t * x_0
for v-prediction ones, and x' are class images that the base model generated from the class
prompt (`needs_prior`: the trainer generates, caches and batches them).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MethodConfig, non_negative, option, positive
from ..registry import METHODS
from .base import Objective, per_sample_mse


@dataclass
class DreamBoothConfig(MethodConfig):
    pass


@METHODS.register("dreambooth", description="DreamBooth LoRA: plain epsilon/v MSE.")
class DreamBooth(Objective):
    name = "dreambooth"
    config_cls = DreamBoothConfig
    needs_reference = False
    default_guidance = "cfg"

    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        mse = per_sample_mse(model_pred, target, weights).mean()
        if prior is None:
            return mse, {"loss": mse.item(), "mse": mse.item()}
        prior_pred, prior_target, prior_weights = prior
        prior_mse = per_sample_mse(prior_pred, prior_target, prior_weights).mean()
        loss = mse + self.cfg.prior_loss_weight * prior_mse
        return loss, {"loss": loss.item(), "mse": mse.item(), "prior_mse": prior_mse.item()}


@dataclass
class DreamBoothPPConfig(MethodConfig):
    prior_loss_weight: float = option(1.0, "Weight of the class-image (prior preservation) loss.", non_negative)
    num_class_images: int = option(100, "Class images the base model generates (cached and shared).", positive)
    class_prompt: str = option("a photo of {class_noun}", "Prompt of the class images; {class_noun} is filled in.")


@METHODS.register("dreambooth_pp", description="DreamBooth LoRA with prior preservation (class images).")
class DreamBoothPP(DreamBooth):
    name = "dreambooth_pp"
    config_cls = DreamBoothPPConfig
    needs_prior = True
