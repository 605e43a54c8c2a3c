"""`dcobench export --format kohya`: the file diffusers' own kohya-format loader reads back gives
the UNet output of the original LoRA, attention and conv (LoCon) layers alike, alpha included."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from baselines.dreambooth import DreamBooth
from dcobench.cli import main
from dcobench.config import TrainConfig
from dcobench.errors import DcoError
from dcobench.lora import WEIGHT_NAME, export_kohya, remove_training_adapter, save_lora
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.trainer import encode_images, train_lora

ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")


def _lora(tiny_sd_path, subject, folder, targets, rank=4, alpha=8.0):
    pipe = load_pipeline(tiny_sd_path)
    train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject, DreamBooth(),
               TrainConfig(steps=2, lr=5e-2, rank=rank, alpha=alpha, resolution=32, target_modules=list(targets)), 0)
    save_lora(pipe, folder)
    remove_training_adapter(pipe.unet)
    return folder


def _unet_out(pipe, lora_path) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x, emb = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 16, 32, generator=gen)
    with torch.no_grad():
        if lora_path is not None:
            pipe.load_lora_weights(str(lora_path))
        out = pipe.unet(x, torch.tensor([100, 700]), encoder_hidden_states=emb).sample
        if lora_path is not None:
            pipe.unload_lora_weights()
    return out


@pytest.mark.parametrize("targets", [ATTENTION, ATTENTION + ("conv1", "conv2")], ids=["attention", "attention+conv"])
def test_kohya_export_loads_back_to_the_same_unet(targets, tiny_sd_path, tiny_suite, tmp_path):
    from diffusers import StableDiffusionPipeline

    folder = _lora(tiny_sd_path, tiny_suite.subjects[0], tmp_path / "lora", targets)
    out = export_kohya(folder, tmp_path / "kohya.safetensors")
    with safe_open(str(out), "pt") as f:
        keys, meta = list(f.keys()), f.metadata()
        alphas = {k: f.get_tensor(k).item() for k in keys if k.endswith(".alpha")}
    assert keys and all(k.startswith("lora_unet_") for k in keys)
    assert set(alphas.values()) == {8.0} and meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "8.0"
    if "conv1" in targets:
        assert any(k.endswith("_resnets_0_conv1.lora_down.weight") for k in keys)

    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    _, network_alphas = stock.lora_state_dict(str(out))
    assert network_alphas  # it went through diffusers' non-diffusers (kohya) converter
    base, original, kohya = (_unet_out(stock, p) for p in (None, folder / WEIGHT_NAME, out))
    assert (original - base).abs().max() > 1e-3  # the LoRA does something
    assert torch.allclose(kohya, original, atol=1e-5, rtol=0), (kohya - original).abs().max()


def test_export_cli_default_name_and_bad_input(tiny_sd_path, tiny_suite, tmp_path, capsys):
    folder = _lora(tiny_sd_path, tiny_suite.subjects[1], tmp_path / "dco-mug-s0-abc", ATTENTION)
    assert main(["export", str(folder), "--format", "kohya"]) == 0
    assert (folder / "dco-mug-s0-abc.kohya.safetensors").is_file()
    assert "exported (kohya)" in capsys.readouterr().out
    with pytest.raises(DcoError, match="LoRA file not found"):
        export_kohya(tmp_path / "nothing", tmp_path / "x.safetensors")


def _lycoris_delta(tensors: dict, name: str, shape) -> torch.Tensor:
    """ComfyUI's reading of one LyCORIS module (comfy/weight_adapter/loha.py, lokr.py): LoHa
    (w1a w1b) * (w2a w2b) * alpha / dim; LoKr kron(w1, w2) * alpha / dim, with dim the rank of a
    decomposed factor and scale 1 when both factors are full matrices."""
    get = lambda k: tensors.get(f"{name}.{k}")  # noqa: E731
    alpha = get("alpha")
    if get("hada_w1_a") is not None:
        w1b = get("hada_w1_b")
        diff = (get("hada_w1_a") @ w1b) * (get("hada_w2_a") @ get("hada_w2_b"))
        return diff.reshape(shape) * (alpha.item() / w1b.shape[0])
    w1, w2, dim = get("lokr_w1"), get("lokr_w2"), None
    if w1 is None:
        dim, w1 = get("lokr_w1_b").shape[0], get("lokr_w1_a") @ get("lokr_w1_b")
    if w2 is None:
        dim, w2 = get("lokr_w2_b").shape[0], get("lokr_w2_a") @ get("lokr_w2_b")
    if len(shape) == 4:
        w2 = w2.reshape(w2.shape[0], -1, *shape[2:]) if w2.ndim == 2 else w2
        w1 = w1.unsqueeze(2).unsqueeze(2)
    scale = alpha.item() / dim if dim is not None else 1.0
    return torch.kron(w1, w2).reshape(shape) * scale


@pytest.mark.parametrize("kind,options", [("loha", {}), ("lokr", {}), ("lokr", {"decompose_both": True})],
                         ids=["loha", "lokr", "lokr-decomposed"])
def test_lycoris_export_of_loha_and_lokr_reads_back_to_the_same_unet(kind, options, tiny_sd_path, tiny_suite, tmp_path):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from dcobench.adapters import load
    from dcobench.config import from_dict
    from dcobench.kohya import export

    pipe = load_pipeline(tiny_sd_path)
    subject = tiny_suite.subjects[0]
    rank = 2 if options else 4  # rank 2 decomposes both factors of the tiny layers; 4 keeps w1 and w2 full
    cfg = from_dict(TrainConfig, {"adapter": kind, "steps": 2, "lr": 5e-2, "rank": rank, "alpha": 3.0, "resolution": 32,
                                  "target_modules": list(ATTENTION + ("conv1", "conv2")),
                                  "adapters": {kind: options}}, "train.")
    train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject, DreamBooth(), cfg, 0)
    from dcobench.adapters import save

    save(pipe, tmp_path / "a")
    remove_training_adapter(pipe.unet)
    out = export(tmp_path / "a", tmp_path / "kohya.safetensors")
    tensors = load_file(str(out))
    modules = {k.rsplit(".", 1)[0] for k in tensors}
    assert modules and all(m.startswith("lora_unet_") for m in modules)
    assert any(m.endswith("_resnets_0_conv1") for m in modules)
    if kind == "lokr" and not options:
        assert any(k.endswith(".lokr_w1") for k in tensors) and any(k.endswith(".lokr_w2") for k in tensors)
    if options:
        assert any(k.endswith(".lokr_w1_a") for k in tensors)

    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    base = _unet_out(stock, None)
    layers = {"lora_unet_" + n.replace(".", "_"): m for n, m in stock.unet.named_modules()}
    with torch.no_grad():
        for m in modules:
            layers[m].weight += _lycoris_delta(tensors, m, layers[m].weight.shape)
    kohya = _unet_out(stock, None)
    original = load_pipeline(tiny_sd_path)
    load(original, tmp_path / "a")
    adapted = _unet_out(original, None)
    assert (adapted - base).abs().max() > 1e-3
    assert torch.allclose(kohya, adapted, atol=1e-5, rtol=0), (kohya - adapted).abs().max()


@pytest.mark.parametrize("kind", ["dora", "oft", "boft"])
def test_kohya_export_refuses_what_kohya_tools_cannot_read(kind, tiny_sd_path, tiny_suite, tmp_path):
    from dcobench.adapters import save
    from dcobench.config import from_dict
    from dcobench.kohya import export

    pipe = load_pipeline(tiny_sd_path)
    subject = tiny_suite.subjects[0]
    cfg = from_dict(TrainConfig, {"adapter": kind, "steps": 1, "resolution": 32, "target_modules": list(ATTENTION),
                                  "adapters": {"oft": {"block_size": 8}} if kind == "oft" else {}}, "train.")
    train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject, DreamBooth(), cfg, 0)
    save(pipe, tmp_path / "a")
    with pytest.raises(DcoError, match=f"a {kind} adapter; --format kohya covers LoRA, LoHa and LoKr"):
        export(tmp_path / "a", tmp_path / "x.safetensors")
