"""Direct merge, the paper's "merge by addition": dW = w_subject dW_subject + w_style dW_style.

Exact as a rank r1 + r2 LoRA: down = [down1; down2], up = [w1 s1 up1, w2 s2 up2], scale 1
(`dcobench.merging.concat_lora`), so the merged file loads with stock `load_lora_weights`.
Linear and Conv2d LoRAs alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from dcobench.config import option
from dcobench.merging import LoraWeights, MergeConfig, check_pair, concat_lora
from dcobench.registry import MERGES


@dataclass
class DirectConfig(MergeConfig):
    weight_subject: float = option(1.0, "Weight of the subject LoRA's delta.")
    weight_style: float = option(1.0, "Weight of the style LoRA's delta.")


@MERGES.register("direct", baseline=True,
                 description="weighted sum of the two LoRAs' deltas, exported as a rank r1+r2 LoRA")
def direct(a: LoraWeights, b: LoraWeights, cfg: DirectConfig | None = None, **_):
    cfg = cfg or DirectConfig()
    check_pair(a, b)
    state, rank = concat_lora(a, b, wa=cfg.weight_subject, wb=cfg.weight_style)
    return state, rank, {"method": "direct", "weights": [cfg.weight_subject, cfg.weight_style]}


direct.config_cls = DirectConfig
