"""The plan-time check of `train.adapter`: what peft would refuse when training starts fails before
anything trains, in one line naming the option.

The kind's config must build; then the adapter is put on the model's denoiser built from its config
on the meta device (no weights, no memory), so peft's refusals on that very model (a layer type a
kind cannot adapt, BOFT's block sizes) surface at once. Each Conv2d kernel size among the targets is
also probed on one small real conv: the adapter at its initialisation must leave the output
unchanged, since DCO's reference pass and every "step 0 is the base model" argument rest on it.
peft 0.21's OFT fails that on a 3x3 conv, so `train.adapter=oft` with conv1/conv2 is refused.
"""

from __future__ import annotations

import copy
import functools
import json

import torch

from .adapters import add, first_line, no_butterfly_compile, peft_config
from .config import TrainConfig
from .errors import DcoError
from .lora import adapter_metadata


def check(train: TrainConfig, model: str | None = None) -> None:
    """Fail at plan time, in one line, on what peft would refuse when training starts."""
    peft_config(train)
    if train.adapter == "boft" and train.adapters.boft.n_butterfly_factor > 1 and not _butterfly_kernel():
        raise DcoError("train.adapters.boft.n_butterfly_factor: factors > 1 need peft's fbd CUDA extension, which "
                       "needs a GPU and builds here only if nvcc and ninja can compile it against this torch; without "
                       "it peft trains factor 1 whatever the config says; set it to 1")
    if model:
        config = peft_config(train)
        key = (str(model), json.dumps(adapter_metadata(config), sort_keys=True, default=str))
        if key not in _CHECKED:  # a plan checks every cell; each model and adapter once
            _check_on_model(str(model), train.adapter, config)
            _CHECKED.add(key)


_CHECKED: set = set()


def _butterfly_kernel() -> bool:
    """Whether peft's BOFT CUDA kernel loads (built once per machine; on the H200 peft 0.21's source
    failed to compile against torch 2.11)."""
    if not torch.cuda.is_available():
        return False
    from peft.tuners.boft.layer import get_fbd_cuda

    return get_fbd_cuda() is not None


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
                           f"({', '.join(convs)}: {first_line(e)}); drop them from train.target_modules or use "
                           "train.adapter=lora")
        raise DcoError(f"train.adapters.{kind}: peft cannot put {kind} on the targeted layers with these options "
                       f"({first_line(e)}); change train.adapters.{kind}.* or train.target_modules")


@functools.lru_cache(maxsize=32)
def _probe_result(kind: str, config_json: str, kernel: tuple) -> str | None:
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
                    no_butterfly_compile()
                inject_adapter_in_model(config, layer, "probe")
                out = layer(x)
        except Exception as e:  # noqa: BLE001 (peft's own refusal, whatever its type, is the answer)
            return f"peft refuses it: {first_line(e)}"
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
