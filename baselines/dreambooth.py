"""DreamBooth as a LoRA (Ruiz et al. 2023): the plain diffusion loss on the references.

    L = || eps_theta(x_t, c, t) - target ||^2

where target is the noise eps for epsilon-prediction schedulers and v = alpha_t * eps - sigma_t * x_0
for v-prediction ones. No reference pass, no class images; sampled with plain CFG.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcobench.config import MethodConfig
from dcobench.methods.base import Objective, per_sample_mse
from dcobench.registry import METHODS


@dataclass
class DreamBoothConfig(MethodConfig):
    pass


@METHODS.register("dreambooth", baseline=True, description="DreamBooth LoRA: plain epsilon/v MSE.")
class DreamBooth(Objective):
    name = "dreambooth"
    config_cls = DreamBoothConfig

    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        mse = per_sample_mse(model_pred, target, weights).mean()
        return mse, {"loss": mse.item(), "mse": mse.item()}
