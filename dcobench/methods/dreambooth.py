"""DreamBooth as a LoRA (Ruiz et al. 2023): the plain diffusion loss.

    L = || eps_theta(x_t, c, t) - target ||^2

where target is the noise eps for epsilon-prediction schedulers and v = alpha_t * eps - sigma_t * x_0
for v-prediction ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config import MethodConfig
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

    def __call__(self, model_pred, target, ref_pred=None):
        mse = per_sample_mse(model_pred, target)
        loss = mse.mean()
        return loss, {"loss": loss.item(), "mse": loss.item()}
