"""Merging a subject LoRA with a style LoRA, exported as one ordinary LoRA file.

A LoRA adds `dW = s * up @ down` to each targeted layer (s = alpha / r). Both merges here are
exact as a rank r1 + r2 LoRA, so the result loads with stock `pipe.load_lora_weights`:

- `direct` (the paper's "merge by addition"): dW = w1 dW1 + w2 dW2, i.e.
  down = [down1; down2], up = [w1 s1 up1, w2 s2 up2], scale 1;
- `ziplora` (Shah et al. 2023, `ziplora.py`): dW = m1 ⊙ dW1 + m2 ⊙ dW2 with per-column merger
  vectors m (one weight per input feature); scaling the columns of dW = up @ down is scaling the
  columns of down, so down = [down1 * m1; down2 * m2], up = [s1 up1, s2 up2].

LoRAs are read and written through diffusers' own LoRA format and `save_lora_weights`; a pair whose
targets differ, a LoRA inconsistent in itself, or one trained for another base model is refused
with one line naming the module and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from dcobench.config import MethodConfig, option
from dcobench.errors import DcoError
from dcobench.lora import WEIGHT_NAME
from dcobench.registry import Registry

MERGES = Registry("merge method")


@dataclass
class LoraWeights:
    """Per module: down (r, in) and up (out, r) matrices, and the scale alpha / r."""

    down: dict[str, torch.Tensor]
    up: dict[str, torch.Tensor]
    scale: float
    source: str
    model: str | None = None  # the base model it was trained on, when dcobench trained it

    @property
    def modules(self) -> list[str]:
        return sorted(self.down)

    def delta(self, module: str) -> torch.Tensor:
        return self.scale * self.up[module].float() @ self.down[module].float()


def load_lora_weights(path: str | Path) -> LoraWeights:
    """Read a diffusers-format LoRA folder or .safetensors file (as `save_lora_weights` writes it)."""
    from safetensors import safe_open

    path = Path(path)
    file = path / WEIGHT_NAME if path.is_dir() else path
    if not file.is_file():
        raise DcoError(f"{file}: LoRA file not found; pass a folder with {WEIGHT_NAME} or the file itself")
    down, up = {}, {}
    with safe_open(str(file), "pt") as f:
        meta = f.metadata() or {}
        for key in f.keys():
            name = key.removeprefix("unet.")
            for tag, store in ((".lora.down.weight", down), (".lora.up.weight", up),
                               (".lora_A.weight", down), (".lora_B.weight", up)):
                if name.endswith(tag):
                    store[name[: -len(tag)]] = f.get_tensor(key).float()
    if not down or set(down) != set(up):
        raise DcoError(f"{file}: not a UNet LoRA in diffusers format (no matching lora down/up pairs)")
    for m in down:
        if up[m].shape[1] != down[m].shape[0]:
            raise DcoError(f"{file}: module {m} has mismatched ranks (down {tuple(down[m].shape)}, up "
                           f"{tuple(up[m].shape)}); the file is corrupt, retrain or re-export it")
    ranks = {down[m].shape[0] for m in down}
    config = json.loads(meta.get("lora_adapter_metadata", "{}") or "{}")
    r = int(config.get("unet.r", max(ranks)))
    alpha = float(config.get("unet.lora_alpha", r))
    train = file.parent / "train.json"
    model = json.loads(train.read_text()).get("config", {}).get("model") if train.is_file() else None
    return LoraWeights(down, up, alpha / r, str(file), model)


def check_pair(a: LoraWeights, b: LoraWeights, unet=None, model_id: str | None = None) -> None:
    if set(a.modules) != set(b.modules):
        only = sorted(set(a.modules) ^ set(b.modules))[0]
        raise DcoError(f"LoRAs target different layers ({only} is in only one of {a.source}, {b.source}); "
                       "train both with the same train.target_modules")
    for m in a.modules:
        if a.down[m].shape[1] != b.down[m].shape[1] or a.up[m].shape[0] != b.up[m].shape[0]:
            raise DcoError(f"{b.source}: module {m} is {tuple(b.up[m].shape[:1]) + tuple(b.down[m].shape[1:])} "
                           f"but {a.source} has {tuple(a.up[m].shape[:1]) + tuple(a.down[m].shape[1:])}: the two "
                           "LoRAs were trained on different base models")
    for lora in (a, b):
        if model_id and lora.model and lora.model != model_id:
            raise DcoError(f"{lora.source}: trained on base model {lora.model}, not {model_id}; merge LoRAs of the same model")
        if unet is not None:
            layers = dict(unet.named_modules())
            for m in lora.modules:
                layer = layers.get(m)
                weight = getattr(getattr(layer, "base_layer", layer), "weight", None)
                if weight is None or tuple(weight.shape) != (lora.up[m].shape[0], lora.down[m].shape[1]):
                    raise DcoError(f"{lora.source}: module {m} does not fit this base model's UNet; the LoRA was "
                                   "trained for another base model")


def concat_lora(a: LoraWeights, b: LoraWeights, ma: dict | None = None, mb: dict | None = None,
                wa: float = 1.0, wb: float = 1.0) -> tuple[dict[str, torch.Tensor], int]:
    """The rank r1 + r2 LoRA (diffusers keys, scale 1) whose delta is wa ma⊙dWa + wb mb⊙dWb."""
    state, rank = {}, 0
    for m in a.modules:
        da = a.down[m] * (ma[m][None, :] if ma else 1.0)
        db = b.down[m] * (mb[m][None, :] if mb else 1.0)
        state[f"{m}.lora.down.weight"] = torch.cat([da, db]).contiguous()
        state[f"{m}.lora.up.weight"] = torch.cat([wa * a.scale * a.up[m], wb * b.scale * b.up[m]], dim=1).contiguous()
        rank = max(rank, da.shape[0] + db.shape[0])
    return state, rank


def save_merged(state: dict[str, torch.Tensor], rank: int, modules: list[str], folder: str | Path,
                pipeline_cls=None, extra: dict | None = None) -> Path:
    """Write the merged LoRA with diffusers' `save_lora_weights` (alpha = rank: scale 1)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    from dcobench.store import atomic_write_json

    targets = sorted({".".join(m.split(".")[-2:]) if m.split(".")[-1].isdigit() else m.split(".")[-1] for m in modules})
    ranks = {v.shape[0] for k, v in state.items() if k.endswith("down.weight")}
    if ranks != {rank}:
        raise DcoError("merged LoRA: modules have different ranks; merge LoRAs whose every layer has one rank")
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    folder = Path(folder)
    (pipeline_cls or StableDiffusionPipeline).save_lora_weights(
        folder, unet_lora_layers=state, unet_lora_adapter_metadata=cfg.to_dict(), weight_name=WEIGHT_NAME)
    if extra:
        atomic_write_json(folder / "merge.json", extra)
    return folder / WEIGHT_NAME


@dataclass
class DirectConfig(MethodConfig):
    weight_subject: float = option(1.0, "Weight of the subject LoRA's delta.")
    weight_style: float = option(1.0, "Weight of the style LoRA's delta.")


@MERGES.register("direct", description="weighted sum of the two LoRAs' deltas, exported as a rank r1+r2 LoRA")
def direct(a: LoraWeights, b: LoraWeights, cfg: DirectConfig | None = None, **_):
    cfg = cfg or DirectConfig()
    check_pair(a, b)
    state, rank = concat_lora(a, b, wa=cfg.weight_subject, wb=cfg.weight_style)
    return state, rank, {"method": "direct", "weights": [cfg.weight_subject, cfg.weight_style]}


direct.config_cls = DirectConfig

MERGES.register("ziplora", "baselines.ziplora:ziplora",
                description="learned per-column merger vectors (ZipLoRA), exported as a rank r1+r2 LoRA")
