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
