"""The merge-method interface: two stored LoRAs in, one ordinary LoRA file out.

A merge method (registered in `registry.MERGES`, implemented in baselines/: `direct.py`,
`ziplora.py`) is `fn(a, b, cfg, **inputs) -> (state, rank, info)`: `a` and `b` are the subject and
style LoRAs as `LoraWeights`, `cfg` its typed `MergeConfig`, `inputs` what training-based merges
need (pipe, cond, subject, subject_latents, style, style_latents, seed). `state` is a diffusers-
format LoRA state dict of rank `rank` and scale 1, `info` a JSON-able summary (keys starting with
"_" stay in memory).

A LoRA adds `dW = s * up @ down` to each targeted layer (s = alpha / r; for a Conv2d LoRA, `down`
is a (r, in, k, k) kernel and `up` a (out, r, 1, 1) one). Merges that scale the two deltas and
their input columns are exact as a rank r1 + r2 LoRA (`concat_lora`), so the result loads with
stock `pipe.load_lora_weights`. `merge_loras` is the one path that reads, merges and writes:
`dcobench run --merge` and `dcobench merge` both use it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .adapters import folder_kind
from .errors import DcoError
from .lora import WEIGHT_NAME, adapter_metadata
from .registry import MERGES
from .store import atomic_folder, atomic_write_json, canonicalize_safetensors, read_safetensors


@dataclass
class MergeConfig:
    """Fields shared by every merge method (none yet); each merge subclasses it with its own.
    Merges are not swept: unlike a method's config it has no `sweep`."""


@dataclass
class LoraWeights:
    """Per module: down (r, in[, k, k]) and up (out, r[, 1, 1]) weights, and the scale alpha / r."""

    down: dict[str, torch.Tensor]
    up: dict[str, torch.Tensor]
    scale: float
    source: str
    model: str | None = None  # the base model it was trained on, when dcobench trained it

    @property
    def modules(self) -> list[str]:
        return sorted(self.down)

    def delta(self, module: str) -> torch.Tensor:
        """The dense update of `module`: (out, in) for a Linear, (out, in, k, k) for a Conv2d."""
        up, down = self.up[module].float(), self.down[module].float()
        return self.scale * torch.einsum("or,ri...->oi...", up.flatten(1), down)


def load_lora_weights(path: str | Path) -> LoraWeights:
    """Read a diffusers-format LoRA folder or .safetensors file (as `save_lora_weights` writes it)."""
    path = Path(path)
    kind = folder_kind(path)
    if kind != "lora":  # DoRA's magnitude renormalises each column: its delta is not additive
        raise DcoError(f"{path}: a {kind} adapter; the direct and ZipLoRA merges merge LoRAs only (train.adapter=lora)")
    file = path / WEIGHT_NAME if path.is_dir() else path
    if not file.is_file():
        raise DcoError(f"{file}: LoRA file not found; pass a folder with {WEIGHT_NAME} or the file itself")
    down, up = {}, {}
    tensors, meta = read_safetensors(file, "retrain or re-export that LoRA")
    for key, tensor in tensors.items():
        name = key.removeprefix("unet.")
        for tag, store in ((".lora.down.weight", down), (".lora.up.weight", up),
                           (".lora_A.weight", down), (".lora_B.weight", up)):
            if name.endswith(tag):
                store[name[: -len(tag)]] = tensor.float()
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


def _dense_shape(lora: LoraWeights, m: str) -> tuple:
    return (lora.up[m].shape[0],) + tuple(lora.down[m].shape[1:])


def check_pair(a: LoraWeights, b: LoraWeights, unet=None, model_id: str | None = None) -> None:
    if set(a.modules) != set(b.modules):
        only = sorted(set(a.modules) ^ set(b.modules))[0]
        raise DcoError(f"LoRAs target different layers ({only} is in only one of {a.source}, {b.source}); "
                       "train both with the same train.target_modules")
    for m in a.modules:
        if _dense_shape(a, m) != _dense_shape(b, m):
            raise DcoError(f"{b.source}: module {m} is {_dense_shape(b, m)} but {a.source} has {_dense_shape(a, m)}: "
                           "the two LoRAs were trained on different base models")
    for lora in (a, b):
        if model_id and lora.model and lora.model != model_id:
            raise DcoError(f"{lora.source}: trained on base model {lora.model}, not {model_id}; merge LoRAs of the same model")
        if unet is not None:
            layers = dict(unet.named_modules())
            for m in lora.modules:
                layer = layers.get(m)
                weight = getattr(getattr(layer, "base_layer", layer), "weight", None)
                if weight is None or tuple(weight.shape) != _dense_shape(lora, m):
                    raise DcoError(f"{lora.source}: module {m} does not fit this base model's UNet; the LoRA was "
                                   "trained for another base model")


def _columns(m: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-input-feature weights shaped to scale the columns of a (r, in[, k, k]) down weight."""
    return m.reshape(1, -1, *([1] * (like.ndim - 2)))


def concat_lora(a: LoraWeights, b: LoraWeights, ma: dict | None = None, mb: dict | None = None,
                wa: float = 1.0, wb: float = 1.0) -> tuple[dict[str, torch.Tensor], int]:
    """The rank r1 + r2 LoRA (diffusers keys, scale 1) whose delta is wa ma⊙dWa + wb mb⊙dWb."""
    state, rank = {}, 0
    for m in a.modules:
        da = a.down[m] * (_columns(ma[m], a.down[m]) if ma else 1.0)
        db = b.down[m] * (_columns(mb[m], b.down[m]) if mb else 1.0)
        state[f"{m}.lora.down.weight"] = torch.cat([da, db]).contiguous()
        state[f"{m}.lora.up.weight"] = torch.cat([wa * a.scale * a.up[m], wb * b.scale * b.up[m]], dim=1).contiguous()
        rank = max(rank, da.shape[0] + db.shape[0])
    return state, rank


def save_merged(state: dict[str, torch.Tensor], rank: int, modules: list[str], folder: str | Path,
                pipeline_cls=None) -> Path:
    """Write the merged LoRA with diffusers' `save_lora_weights` (alpha = rank: scale 1)."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    targets = sorted({".".join(m.split(".")[-2:]) if m.split(".")[-1].isdigit() else m.split(".")[-1] for m in modules})
    ranks = {v.shape[0] for k, v in state.items() if k.endswith("down.weight")}
    if ranks != {rank}:
        raise DcoError("merged LoRA: modules have different ranks; merge LoRAs whose every layer has one rank")
    cfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=targets)
    folder = Path(folder)
    (pipeline_cls or StableDiffusionPipeline).save_lora_weights(
        folder, unet_lora_layers=state, unet_lora_adapter_metadata=adapter_metadata(cfg), weight_name=WEIGHT_NAME)
    canonicalize_safetensors(folder / WEIGHT_NAME)
    return folder / WEIGHT_NAME


def merge_loras(method: str, cfg: MergeConfig | None, subject_lora: str | Path, style_lora: str | Path,
                folder: str | Path, record: dict | None = None, pipeline_cls=None, **inputs) -> dict:
    """Merge two stored LoRAs with a registered merge method and write `folder` atomically: the
    merged LoRA and `merge.json` (the method's summary, `record`, rank, seconds). Returns merge.json."""
    fn = MERGES.get(method)
    cfg = cfg if cfg is not None else fn.config_cls()
    a, b = load_lora_weights(subject_lora), load_lora_weights(style_lora)
    start = time.perf_counter()
    state, rank, info = fn(a, b, cfg, **inputs)
    pipe = inputs.get("pipe")
    summary = {**{k: v for k, v in info.items() if not k.startswith("_")}, **(record or {}), "rank": rank,
               "seconds": round(time.perf_counter() - start, 3)}
    with atomic_folder(folder) as tmp:  # replaces a killed run's leftover (it has no merge.json)
        save_merged(state, rank, a.modules, tmp, pipeline_cls or (type(pipe) if pipe is not None else None))
        atomic_write_json(tmp / "merge.json", summary)
    return summary
