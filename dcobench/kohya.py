"""`dcobench export --format kohya` for every adapter kind that kohya-format tools read.

- LoRA: `lora.export_kohya` (diffusers' own converters; `lora_down` / `lora_up` / `alpha`).
- LoHa and LoKr: LyCORIS keys under kohya's module names, the layout ComfyUI, A1111 / Forge
  (through LyCORIS) and kohya's scripts read: `lora_unet_<module>` with `.hada_w1_a`, `.hada_w1_b`,
  `.hada_w2_a`, `.hada_w2_b` (LoHa) or `.lokr_w1[_a/_b]`, `.lokr_w2[_a/_b]` (LoKr), and `.alpha`.
  peft's parameters are LyCORIS' own (peft ported them) with the same shapes, so the tensors are
  copied; what differs is the scale. Readers take `alpha / dim`, with `dim` the rank of a
  decomposed factor, and for a LoKr layer whose two factors are both full matrices they take 1
  (ComfyUI, LyCORIS), where peft still multiplies by alpha / r: there the scale is baked into
  `lokr_w1` and alpha written as r.
- DoRA, OFT and BOFT: refused; kohya's LoRA format has no magnitude vector, and no kohya-format
  tool reads peft's OFT / BOFT rotations.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .adapters import PEFT_CONFIG, PEFT_PREFIX, PEFT_WEIGHTS, folder_kind
from .errors import DcoError
from .lora import export_kohya as export_lora
from .store import atomic_write_bytes, canonical_safetensors, read_safetensors

LYCORIS = {"loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"),
           "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b")}
UNET_TOP = ("conv_in", "time_embedding", "add_embedding", "down_blocks", "mid_block", "up_blocks", "conv_out")


def export(src: str | Path, out: str | Path) -> Path:
    """Write the adapter in `src` (a folder, or a LoRA file) in kohya's format; see the module doc."""
    src = Path(src)
    kind = folder_kind(src)
    if kind == "lora":
        return export_lora(src, out)
    if kind not in LYCORIS:
        why = ("kohya's LoRA format has no DoRA magnitude vector" if kind == "dora" else
               f"no kohya-format tool reads peft's {kind.upper()} rotations")
        raise DcoError(f"{src}: a {kind} adapter; --format kohya covers LoRA, LoHa and LoKr ({why}); load it "
                       "where docs/adapters.md says it loads")
    return export_lycoris(src, out, kind)


def _modules(state: dict, kind: str, file: Path) -> dict[str, dict[str, torch.Tensor]]:
    """{module: {LyCORIS tensor name: tensor}} from peft's keys (`base_model.model.<module>.<name>`)."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module, _, name = key.removeprefix(PEFT_PREFIX).rpartition(".")
        if name in ("hada_t1", "hada_t2", "lokr_t2"):
            raise DcoError(f"{file}: {module} has Tucker factors (train.adapters.{kind}.use_effective_conv2d); the "
                           "kohya export writes plain factors only; retrain without use_effective_conv2d")
        if name not in LYCORIS[kind]:
            raise DcoError(f"{file}: unexpected tensor {key}; export adapters dcobench saved")
        if module.split(".", 1)[0] not in UNET_TOP:
            raise DcoError(f"{file}: {module} is not a UNet layer; the kohya export covers UNet adapters (SD1.5, "
                           "SDXL), not SD3's transformer")
        out.setdefault(module, {})[name] = tensor
    return out


def export_lycoris(src: Path, out: str | Path, kind: str) -> Path:
    from safetensors.torch import save

    config_path, file = src / PEFT_CONFIG, src / PEFT_WEIGHTS
    if not file.is_file():
        raise DcoError(f"{file}: adapter file not found; pass the adapter's folder")
    config = json.loads(config_path.read_text())
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise DcoError(f"{config_path}: per-layer ranks or alphas are not exported; export an adapter with one rank")
    r, alpha = int(config["r"]), float(config["alpha"])
    state, _ = read_safetensors(file, "export an adapter that loads (retrain it if it was cut off)")
    tensors: dict[str, torch.Tensor] = {}
    for module, parts in sorted(_modules(state, kind, file).items()):
        name = "lora_unet_" + module.replace(".", "_")
        parts = {k: v.float() for k, v in parts.items()}
        written = alpha
        if kind == "lokr" and "lokr_w1" in parts and "lokr_w2" in parts:  # readers take scale 1 here
            parts["lokr_w1"] = parts["lokr_w1"] * (alpha / r)
            written = float(r)
        tensors.update({f"{name}.{k}": v.contiguous() for k, v in parts.items()})
        tensors[f"{name}.alpha"] = torch.tensor(written)
    header = {"ss_network_module": "lycoris.kohya", "ss_network_args": json.dumps({"algo": kind}),
              "ss_network_dim": str(r), "ss_network_alpha": str(alpha), "dcobench_source": file.name}
    out = Path(out)
    atomic_write_bytes(out, canonical_safetensors(save(tensors, metadata=header)))
    return out
