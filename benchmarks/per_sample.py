"""The batched alternative that issue 14 asks to try: base-model and LoRA rows in one denoiser call,
through peft's per-sample adapter selection (`adapter_names`, its mixed-batch LoRA forward).

diffusers' models do not take `adapter_names`, so it is injected into every peft LoRA layer with a
forward pre-hook, as peft's own `PeftModel` does. Rows named "__base__" get the base layer only;
the others get their adapter's update, computed on their rows alone. Not valid under gradient
checkpointing: the recomputation in backward would run without the hooks.

Measured slower than separate calls on the CPU (`RESULTS.md`), so dcobench's trainer and sampler
keep separate calls; this lives here to keep the comparison reproducible.
"""

from __future__ import annotations

import contextlib

BASE = "__base__"


@contextlib.contextmanager
def per_sample_adapters(model, names: list[str]):
    from peft.tuners.lora import LoraLayer

    def hook(module, args, kwargs):
        kwargs["adapter_names"] = names
        return args, kwargs

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in model.modules() if isinstance(m, LoraLayer)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
