"""LoRA in and out, only through diffusers and peft APIs.

Training adds a peft adapter to the denoiser (`unet.add_adapter`, `transformer.add_adapter`).
Saving takes peft's state dict in the key format the family's loader reads and writes it with the
pipeline class's `save_lora_weights` (`unet_lora_layers=` or `transformer_lora_layers=`, as the model family says),
together with the adapter's LoraConfig as metadata so that alpha survives. Sampling loads the saved file with
`pipe.load_lora_weights`, so every image dcobench scores came from the file a user would load.
`export_kohya` rewrites a saved LoRA in kohya's format (ComfyUI, A1111, kohya's scripts) with
diffusers' own state-dict converters.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from .errors import DcoError
from .store import (atomic_write_bytes, canonical_safetensors, canonicalize_safetensors, check_safetensors,
                    read_safetensors)

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TRAIN_ADAPTER = "dcobench_train"


def add_lora(model, rank: int, alpha: float, target_modules: list[str], seed: int) -> list[torch.nn.Parameter]:
    """Freeze the denoiser, add a LoRA adapter, return its (trainable, fp32) parameters."""
    from peft import LoraConfig

    model.requires_grad_(False)
    torch.manual_seed(seed)  # LoRA A is random; B starts at 0, so step 0 equals the base model
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        init_lora_weights="gaussian",
        target_modules=list(target_modules),
    )
    model.add_adapter(config, adapter_name=TRAIN_ADAPTER)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    if not params:
        raise DcoError(
            f"train.target_modules: {target_modules} matched no layer of this {type(model).__name__}; use names "
            "such as to_q, to_k, to_v, to_out.0 (SD3 also add_q_proj, add_k_proj, add_v_proj, to_add_out)"
        )
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_layers(model) -> list:
    """The denoiser's peft LoRA layers (what `lora_disabled` switches)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def lora_disabled(model, layers: list | None = None):
    """The base model eps_phi: the same denoiser with its adapters switched off, whatever their kind.

    peft LoRA layers (DoRA's too: the same layer class) are switched one by one with peft's
    `enable_adapters`, as diffusers' `disable_adapters()` and `enable_adapters()` do, but without
    their package-version lookup and module walk on every call: 1.5 ms instead of 5.1 ms a pair on
    the micro UNet, a reference pass every training step and two every sampling step. Pass `layers`
    (from `lora_layers`) to skip the walk as well. Any other kind (LoHa, LoKr, OFT, BOFT) goes
    through diffusers' own `disable_adapters()` / `enable_adapters()`, which peft's layers of that
    kind implement; tests check that the reference output equals the base model's exactly.
    """
    if not getattr(model, "_hf_peft_config_loaded", False):
        yield
        return
    from peft.tuners.lora import LoraLayer

    layers = lora_layers(model) if layers is None else layers
    if not all(isinstance(layer, LoraLayer) for layer in layers):
        model.disable_adapters()
        try:
            yield
        finally:
            model.enable_adapters()
        return
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


def save_lora(pipe, folder: Path) -> Path:
    from .families import family_of

    family = family_of(pipe)
    model = family.denoiser(pipe)
    state = family.lora_layers(model, TRAIN_ADAPTER)
    metadata = adapter_metadata(model.peft_config[TRAIN_ADAPTER])
    type(pipe).save_lora_weights(folder, **family.lora_save_kwargs(state, metadata), weight_name=WEIGHT_NAME)
    canonicalize_safetensors(Path(folder) / WEIGHT_NAME)
    return Path(folder) / WEIGHT_NAME


def adapter_metadata(config) -> dict:
    """A LoraConfig as saved metadata, with its sets (target_modules) sorted: their order changes
    with each process's string hashing, and the same training should write the same bytes."""
    return {k: sorted(v) if isinstance(v, (set, frozenset)) else v for k, v in config.to_dict().items()}


def has_training_adapter(model) -> bool:
    return TRAIN_ADAPTER in getattr(model, "peft_config", {})


def remove_training_adapter(model) -> None:
    """Delete the training adapter; with none left, put every base layer back (peft leaves empty
    wrappers of the last kind, which the next training of another kind would stack on)."""
    model.delete_adapters(TRAIN_ADAPTER)
    if not getattr(model, "peft_config", None):
        model.unload_lora()


def load_lora(pipe, folder: Path, adapter_name: str = "dcobench") -> str:
    path = Path(folder) / WEIGHT_NAME
    if not path.is_file():
        raise DcoError(f"{path}: LoRA file not found; rerun training or point to a folder with {WEIGHT_NAME}")
    check_safetensors(path, f"delete {Path(folder)} and rerun to train it again")
    pipe.load_lora_weights(str(folder), weight_name=WEIGHT_NAME, adapter_name=adapter_name)
    return adapter_name


def unload_lora(pipe) -> None:
    pipe.unload_lora_weights()


def _adapter_config(meta: dict, file: Path) -> tuple[int, float]:
    """(r, lora_alpha) of a LoRA file saved with its LoraConfig as metadata (alpha = r without it)."""
    import json

    config = json.loads(meta.get("lora_adapter_metadata", "{}") or "{}")
    if config.get("unet.rank_pattern") or config.get("unet.alpha_pattern"):
        raise DcoError(f"{file}: per-layer ranks or alphas (rank_pattern / alpha_pattern) are not supported by "
                       "the kohya export; export a LoRA with one rank and one alpha")
    return config.get("unet.r"), config.get("unet.lora_alpha")


def export_kohya(src: str | Path, out: str | Path) -> Path:
    """Write the diffusers-format UNet LoRA `src` (a folder or file) as a kohya-format file
    (`lora_unet_*` keys with `.lora_down` / `.lora_up` / `.alpha`), the format ComfyUI, A1111 and
    kohya's scripts load, through diffusers' converters: to peft keys, then to kohya keys. The
    converter writes alpha = rank; the LoRA's own alpha replaces it, so the scale survives."""
    from safetensors.torch import save
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya, convert_unet_state_dict_to_peft

    src = Path(src)
    file = src / WEIGHT_NAME if src.is_dir() else src
    if not file.is_file():
        raise DcoError(f"{file}: LoRA file not found; pass a LoRA folder (with {WEIGHT_NAME}) or the file")
    state, meta = read_safetensors(file, "export a LoRA that loads (retrain it if it was cut off)")
    if not state or not all(k.startswith("unet.") for k in state):
        raise DcoError(f"{file}: not a diffusers-format UNet LoRA (keys 'unet.*'); export LoRAs dcobench saved")
    peft = convert_unet_state_dict_to_peft({k.removeprefix("unet."): v for k, v in state.items()})
    kohya = convert_state_dict_to_kohya({f"unet.{k}": v for k, v in peft.items()})
    rank, alpha = _adapter_config(meta, file)
    ranks = {int(v.shape[0]) for k, v in kohya.items() if k.endswith(".lora_down.weight")}
    for key in [k for k in kohya if k.endswith(".alpha")]:
        kohya[key] = torch.tensor(float(alpha if alpha is not None else kohya[key]))
    header = {"ss_network_module": "networks.lora", "ss_network_dim": str(rank or max(ranks)),
              "ss_network_alpha": str(alpha if alpha is not None else max(ranks)), "dcobench_source": file.name}
    out = Path(out)
    atomic_write_bytes(out, canonical_safetensors(save({k: v.contiguous() for k, v in kohya.items()}, metadata=header)))
    return out
