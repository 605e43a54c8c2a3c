"""Every adapter kind (`train.adapter`) through peft: its config, the plan-time check, training,
saving and loading.

- **Config.** `peft_config(train)` builds the kind's peft config from the shared options
  (`train.rank`, `train.alpha`, `train.target_modules`) and `train.adapters.<kind>`; LoRA is
  built exactly as before adapters existed (`lora.add_lora`), so its LoRAs and ids are unchanged.
- **Check.** `adapter_check.check(train, model)` runs at plan time (see there).
- **Files.** LoRA and DoRA are saved as every LoRA is (`save_lora_weights`, loaded by
  `load_lora_weights`). The other kinds have no diffusers loader, so they are saved in peft's own
  format, `adapter_config.json` + `adapter_model.safetensors` with `base_model.model.` keys, the
  files `PeftModel.from_pretrained(pipe.unet, folder)` reads; dcobench loads them back the same
  way peft's `load_adapter` does (inject the config, then `set_peft_model_state_dict`).
- **Reference pass.** `lora.lora_disabled` switches every kind off through peft (see there).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import TrainConfig
from .errors import DcoError
from .lora import TRAIN_ADAPTER, WEIGHT_NAME, adapter_metadata, add_lora, load_lora, save_lora
from .store import atomic_write_bytes, canonical_safetensors, check_safetensors, read_safetensors

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PeftModel's key prefix: the files load with PeftModel.from_pretrained
LORA_FILES = ("lora", "dora")  # saved with save_lora_weights; the others in peft's format
# the name every trainable parameter of a kind carries (peft's tuner prefix)
PREFIX = {"lora": "lora_", "dora": "lora_", "loha": "hada_", "lokr": "lokr_", "oft": "oft_", "boft": "boft_"}
KIND_OF_PEFT_TYPE = {"LORA": "lora", "LOHA": "loha", "LOKR": "lokr", "OFT": "oft", "BOFT": "boft"}


def peft_config(train: TrainConfig):
    """The peft config of `train.adapter` (one line naming the option when peft refuses it)."""
    import peft

    kind, targets, o = train.adapter, list(train.target_modules), getattr(train.adapters, train.adapter, None)
    try:
        if kind in LORA_FILES:
            return peft.LoraConfig(r=train.rank, lora_alpha=train.alpha, init_lora_weights="gaussian",
                                   target_modules=targets, use_dora=kind == "dora")
        if kind == "loha":
            return peft.LoHaConfig(r=train.rank, alpha=train.alpha, target_modules=targets, rank_dropout=o.rank_dropout,
                                   module_dropout=o.module_dropout, use_effective_conv2d=o.use_effective_conv2d)
        if kind == "lokr":
            return peft.LoKrConfig(r=train.rank, alpha=train.alpha, target_modules=targets, rank_dropout=o.rank_dropout,
                                   module_dropout=o.module_dropout, decompose_both=o.decompose_both,
                                   decompose_factor=o.decompose_factor, use_effective_conv2d=o.use_effective_conv2d,
                                   rank_dropout_scale=o.rank_dropout_scale)
        if kind == "oft":
            return peft.OFTConfig(r=0, oft_block_size=o.block_size, target_modules=targets,
                                  module_dropout=o.module_dropout, coft=o.coft, eps=o.eps, block_share=o.block_share,
                                  use_cayley_neumann=o.use_cayley_neumann,
                                  num_cayley_neumann_terms=o.num_cayley_neumann_terms)
        return peft.BOFTConfig(boft_block_size=o.block_size, boft_block_num=o.block_num,
                               boft_n_butterfly_factor=o.n_butterfly_factor, boft_dropout=o.dropout,
                               target_modules=targets)
    except (ValueError, TypeError) as e:
        raise DcoError(f"train.adapters.{kind}: peft's {kind} config refuses these options ({first_line(e)}); "
                       f"see `dcobench ls options` for train.adapters.{kind}.*")


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def no_butterfly_compile() -> None:
    """Without a GPU peft's BOFT still tries to compile its CUDA kernel, once per layer, and falls
    back to butterfly factor 1; say once that there is none (factor 1 is what `check` allows there)."""
    import peft.tuners.boft.layer as boft_layer

    if not torch.cuda.is_available() and getattr(boft_layer, "_FBD_CUDA", False) is None:
        boft_layer._FBD_CUDA = False


def add(model, kind: str, config, name: str = TRAIN_ADAPTER) -> None:
    """Put the adapter on `model` through diffusers' `add_adapter` (peft's `inject_adapter_in_model`)."""
    if kind == "boft":
        no_butterfly_compile()
    model.add_adapter(config, adapter_name=name)


def add_adapter(model, train: TrainConfig, seed: int) -> list[torch.nn.Parameter]:
    """Freeze the denoiser, add `train.adapter`, return its (trainable, fp32) parameters."""
    if train.adapter == "lora":
        return add_lora(model, train.rank, train.alpha, train.target_modules, seed)
    model.requires_grad_(False)
    torch.manual_seed(seed)  # every kind starts at the base model; the seed fixes its random factors
    try:
        add(model, train.adapter, peft_config(train))
    except (ValueError, TypeError, NotImplementedError) as e:
        raise DcoError(f"train.adapter={train.adapter}: peft cannot add it with these options ({first_line(e)}); "
                       f"change train.adapters.{train.adapter}.* or train.target_modules")
    params = adapter_parameters(model, train.adapter)
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def adapter_parameters(model, kind: str | None = None) -> list[torch.nn.Parameter]:
    """The adapter's parameters, by peft's prefix of `kind` (any kind's when None)."""
    prefixes = {PREFIX[kind]} if kind else set(PREFIX.values())
    return [p for n, p in model.named_parameters() if any(pre in n for pre in prefixes)]


def kind_of(model) -> str:
    from peft import LoraConfig

    config = model.peft_config[TRAIN_ADAPTER]
    if isinstance(config, LoraConfig):
        return "dora" if config.use_dora else "lora"
    return KIND_OF_PEFT_TYPE[str(config.peft_type.value if hasattr(config.peft_type, "value") else config.peft_type)]


def weight_name(kind: str) -> str:
    return WEIGHT_NAME if kind in LORA_FILES else PEFT_WEIGHTS


def weight_file(folder: Path) -> Path:
    """The saved adapter's weights in `folder`, whichever format it is in."""
    folder = Path(folder)
    return folder / PEFT_WEIGHTS if (folder / PEFT_CONFIG).is_file() else folder / WEIGHT_NAME


def save(pipe, folder: Path) -> Path:
    """Save the training adapter: LoRA and DoRA as LoRA files, the others in peft's format."""
    from .families import family_of

    model = family_of(pipe).denoiser(pipe)
    if kind_of(model) in LORA_FILES:
        return save_lora(pipe, folder)
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save as to_bytes

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = adapter_metadata(model.peft_config[TRAIN_ADAPTER])
    config.update(inference_mode=True, base_model_name_or_path=None)  # as PeftModel.save_pretrained writes it
    state = get_peft_model_state_dict(model, adapter_name=TRAIN_ADAPTER)
    tensors = {PEFT_PREFIX + k: v.detach().contiguous() for k, v in sorted(state.items())}
    atomic_write_bytes(folder / PEFT_WEIGHTS, canonical_safetensors(to_bytes(tensors, metadata={"format": "pt"})))
    atomic_write_bytes(folder / PEFT_CONFIG, (json.dumps(config, indent=2, sort_keys=True, default=str) + "\n").encode())
    return folder / PEFT_WEIGHTS


def folder_kind(folder: Path) -> str:
    """The kind of a saved adapter folder (or LoRA file): peft's config, else the LoRA's metadata."""
    folder = Path(folder)
    if folder.is_dir() and (folder / PEFT_CONFIG).is_file():
        peft_type = json.loads((folder / PEFT_CONFIG).read_text()).get("peft_type", "")
        return KIND_OF_PEFT_TYPE.get(peft_type, peft_type.lower())
    file = folder / WEIGHT_NAME if folder.is_dir() else folder
    if not file.is_file():
        return "lora"
    _, meta = read_safetensors(file, "retrain or re-export it")
    config = json.loads(meta.get("lora_adapter_metadata", "{}") or "{}")
    return "dora" if any(k.endswith("use_dora") and v for k, v in config.items()) else "lora"


def load(pipe, folder: Path, adapter_name: str = "dcobench") -> str:
    """Load a saved adapter of any kind onto the pipeline's denoiser, as a user would."""
    folder = Path(folder)
    if not (folder / PEFT_CONFIG).is_file():
        return load_lora(pipe, folder, adapter_name)
    from peft import PeftConfig
    from peft.utils import set_peft_model_state_dict

    from .families import family_of

    path = folder / PEFT_WEIGHTS
    if not path.is_file():
        raise DcoError(f"{path}: adapter file not found; rerun training or point to a folder with {PEFT_WEIGHTS}")
    check_safetensors(path, f"delete {folder} and rerun to train it again")
    model = family_of(pipe).denoiser(pipe)
    config = PeftConfig.from_pretrained(str(folder))
    config.inference_mode = True
    add(model, KIND_OF_PEFT_TYPE.get(str(config.peft_type.value), ""), config, adapter_name)
    state, _ = read_safetensors(path, f"delete {folder} and rerun to train it again")
    result = set_peft_model_state_dict(model, {k.removeprefix(PEFT_PREFIX): v for k, v in state.items()},
                                       adapter_name=adapter_name)
    if result.unexpected_keys:
        raise DcoError(f"{path}: {len(result.unexpected_keys)} tensors fit no layer of this model (e.g. "
                       f"{result.unexpected_keys[0]}); the adapter was trained on another base model")
    model.set_adapter(adapter_name)
    return adapter_name
