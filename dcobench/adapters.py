"""Every adapter kind (`train.adapter`) through peft: its config, the plan-time check, training,
saving and loading.

- **Config.** `peft_config(train)` builds the kind's peft config from the shared options
  (`train.rank`, `train.alpha`, `train.target_modules`) and `train.adapters.<kind>`; LoRA is
  built exactly as before adapters existed (`lora.add_lora`), so its LoRAs and ids are unchanged.
- **Check.** `check(train, model)` runs at plan time: the config must build, and the adapter is
  put on the denoiser built from its config on the meta device (no weights, no memory), so what
  peft refuses on that model (a layer type a kind cannot adapt, BOFT's block sizes) fails before
  anything trains, in one line naming the option.
- **Files.** LoRA and DoRA are saved as every LoRA is (`save_lora_weights`, loaded by
  `load_lora_weights`). The other kinds have no diffusers loader, so they are saved in peft's own
  format, `adapter_config.json` + `adapter_model.safetensors` with `base_model.model.` keys, the
  files `PeftModel.from_pretrained(pipe.unet, folder)` reads; dcobench loads them back the same
  way peft's `load_adapter` does (inject the config, then `set_peft_model_state_dict`).
- **Reference pass.** `lora.lora_disabled` switches every kind off through peft (see there).
"""

from __future__ import annotations

import functools
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
        raise DcoError(f"train.adapters.{kind}: peft's {kind} config refuses these options ({_first_line(e)}); "
                       f"see `dcobench ls options` for train.adapters.{kind}.*")


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _no_butterfly_compile() -> None:
    """Without a GPU peft's BOFT still tries to compile its CUDA kernel, once per layer, and falls
    back to butterfly factor 1; say once that there is none (factor 1 is what `check` allows there)."""
    import peft.tuners.boft.layer as boft_layer

    if not torch.cuda.is_available() and getattr(boft_layer, "_FBD_CUDA", False) is None:
        boft_layer._FBD_CUDA = False


def check(train: TrainConfig, model: str | None = None) -> None:
    """Fail at plan time, in one line, on what peft would refuse when training starts."""
    peft_config(train)
    if train.adapter == "boft" and train.adapters.boft.n_butterfly_factor > 1 and not torch.cuda.is_available():
        raise DcoError("train.adapters.boft.n_butterfly_factor: factors > 1 need peft's fbd CUDA extension (a GPU); "
                       "without it peft trains factor 1 whatever the config says; set it to 1 or train on a GPU")
    if model:
        config = peft_config(train)
        key = (str(model), json.dumps(adapter_metadata(config), sort_keys=True, default=str))
        if key not in _CHECKED:  # a plan checks every cell; each model and adapter once
            _check_on_model(str(model), train.adapter, config)
            _CHECKED.add(key)


_CHECKED: set = set()


def _check_on_model(model: str, kind: str, config) -> None:
    from peft.tuners.tuners_utils import check_target_module_exists

    denoiser = meta_denoiser(model)
    if denoiser is None:
        return  # no readable config (a hub id not in the cache): training will tell
    matched = [(n, m) for n, m in denoiser.named_modules() if n and check_target_module_exists(config, n)]
    if not matched:
        raise DcoError(f"train.target_modules: {sorted(config.target_modules)} matched no layer of this "
                       f"{type(denoiser).__name__}; use names such as to_q, to_k, to_v, to_out.0 (UNets also conv1, "
                       "conv2; SD3 also add_q_proj, add_k_proj, add_v_proj, to_add_out)")
    convs = sorted({n.rsplit(".", 1)[-1] for n, m in matched if isinstance(m, torch.nn.Conv2d)})
    for k in sorted({m.kernel_size for _, m in matched if isinstance(m, torch.nn.Conv2d)}):
        problem = conv_probe(kind, config, k)
        if problem:
            import peft

            raise DcoError(f"train.target_modules: peft {peft.__version__} cannot put {kind} on a {k[0]}x{k[1]} Conv2d "
                           f"({', '.join(convs)} here: {problem}); drop them from train.target_modules or use "
                           f"another train.adapter (lora, dora, loha, lokr, boft)")
    try:
        add(denoiser, kind, config)
    except (ValueError, TypeError, NotImplementedError, RuntimeError) as e:
        if convs and _fits_without_convs(model, kind, config, matched):
            raise DcoError(f"train.target_modules: peft cannot put {kind} on this model's Conv2d targets "
                           f"({', '.join(convs)}: {_first_line(e)}); drop them from train.target_modules or use "
                           "train.adapter=lora")
        raise DcoError(f"train.adapters.{kind}: peft cannot put {kind} on the targeted layers with these options "
                       f"({_first_line(e)}); change train.adapters.{kind}.* or train.target_modules")


@functools.lru_cache(maxsize=32)
def _probe_result(kind: str, config_json: str, kernel: tuple) -> str | None:
    import copy
    import warnings

    from peft import inject_adapter_in_model

    config = copy.deepcopy(_PROBED[config_json])
    config.target_modules = ["conv"]
    width = 2 * max(getattr(config, "oft_block_size", 0), getattr(config, "boft_block_size", 0), 4)
    torch.manual_seed(0)
    layer = torch.nn.Sequential()
    layer.add_module("conv", torch.nn.Conv2d(width, width, kernel, padding=kernel[0] // 2))
    x = torch.randn(2, width, 8, 8)
    with torch.no_grad():
        base = layer(x)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if kind == "boft":
                    _no_butterfly_compile()
                inject_adapter_in_model(config, layer, "probe")
                out = layer(x)
        except Exception as e:  # noqa: BLE001 (peft's own refusal, whatever its type, is the answer)
            return f"peft refuses it: {_first_line(e)}"
    if not torch.allclose(out, base, atol=1e-5):
        return (f"at its initialisation, which must be the base model, the layer's output already moves by up to "
                f"{(out - base).abs().max().item():.2f}")
    return None


_PROBED: dict = {}  # config json -> the config (lru_cache keys must be hashable)


def conv_probe(kind: str, config, kernel: tuple) -> str | None:
    """Why peft's `kind` cannot adapt a Conv2d of this kernel, or None: put on one small conv, it
    must be refused by nothing and, at its initialisation, leave the output unchanged (peft 0.21's
    OFT rotates unfolded 3x3 patches and folds them back summed, so its conv starts away from the
    base model). A probe of the installed peft, so a fixed peft passes it without a change here."""
    key = json.dumps(adapter_metadata(config), sort_keys=True, default=str)
    _PROBED[key] = config
    return _probe_result(kind, key, tuple(kernel))


def _fits_without_convs(model: str, kind: str, config, matched) -> bool:
    """Whether the same adapter goes on the matched layers that are not Conv2d (which to blame)."""
    import copy

    rest = [n for n, m in matched if not isinstance(m, torch.nn.Conv2d)]
    if not rest:
        return True
    config = copy.deepcopy(config)
    config.target_modules = rest  # full names: exactly those layers
    try:
        add(meta_denoiser(model), kind, config)
    except Exception:
        return False
    return True


def meta_denoiser(model: str):
    """The model's denoiser built from its config on the meta device (shapes only), or None."""
    from .families import family_of_model, read_index

    index, family = read_index(model), family_of_model(model)
    if index is None or family is None or family.denoiser_attr not in index:
        return None
    import diffusers

    cls = getattr(diffusers, index[family.denoiser_attr][1])
    try:
        config = cls.load_config(model, subfolder=family.denoiser_attr)
    except Exception:
        return None
    with torch.device("meta"):
        return cls.from_config(config)


def add(model, kind: str, config, name: str = TRAIN_ADAPTER) -> None:
    """Put the adapter on `model` through diffusers' `add_adapter` (peft's `inject_adapter_in_model`)."""
    if kind == "boft":
        _no_butterfly_compile()
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
        raise DcoError(f"train.adapter={train.adapter}: peft cannot add it with these options ({_first_line(e)}); "
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
