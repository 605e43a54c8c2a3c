"""Merging LoRAs: exact rank r1+r2 exports, ZipLoRA's loss and gradients, bad input."""

import json

import pytest
import torch

from baselines.direct import DirectConfig
from baselines.dreambooth import DreamBooth
from baselines.ziplora import ZipLoRAConfig, _Merger
from dcobench.config import TrainConfig
from dcobench.errors import DcoError
from dcobench.lora import remove_training_adapter, save_lora
from dcobench.merging import check_pair, concat_lora, load_lora_weights, save_merged
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.registry import MERGES
from dcobench.trainer import encode_images, train_lora


def _train(pipe, subject, folder, seed, targets=("to_q", "to_k", "to_v", "to_out.0"), rank=4):
    train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject, DreamBooth(),
               TrainConfig(steps=2, lr=5e-2, rank=rank, alpha=2.0 * rank, resolution=32, target_modules=list(targets)),
               seed)
    save_lora(pipe, folder)
    remove_training_adapter(pipe.unet)
    return folder


@pytest.fixture(scope="module")
def loras(tmp_path_factory, tiny_sd_path, tiny_suite):
    pipe = load_pipeline(tiny_sd_path)
    root = tmp_path_factory.mktemp("loras")
    a = _train(pipe, tiny_suite.subjects[0], root / "a", 0)
    b = _train(pipe, tiny_suite.subjects[1], root / "b", 1, rank=2)  # ranks may differ: r1 + r2 = 6
    return a, b


def test_direct_merge_is_the_weighted_sum_exactly(loras, tmp_path):
    a, b = (load_lora_weights(p) for p in loras)
    assert a.scale == 2.0 and b.scale == 2.0  # alpha / r survives the round trip through the file
    state, rank, info = MERGES.get("direct")(a, b, DirectConfig(weight_subject=0.7, weight_style=1.3))
    save_merged(state, rank, a.modules, tmp_path)
    merged = load_lora_weights(tmp_path)
    assert rank == 6 and merged.scale == 1.0
    for m in a.modules:
        assert torch.allclose(merged.delta(m), 0.7 * a.delta(m) + 1.3 * b.delta(m), atol=1e-6)


def test_ziplora_export_equals_the_dense_column_merge(loras, tmp_path):
    a, b = (load_lora_weights(p) for p in loras)
    g = torch.Generator().manual_seed(0)
    m1 = {m: torch.rand(a.down[m].shape[1], generator=g) for m in a.modules}
    m2 = {m: torch.rand(a.down[m].shape[1], generator=g) for m in a.modules}
    state, rank = concat_lora(a, b, m1, m2)
    save_merged(state, rank, a.modules, tmp_path)
    merged = load_lora_weights(tmp_path)
    for m in a.modules:
        dense = a.delta(m) * m1[m][None, :] + b.delta(m) * m2[m][None, :]
        assert torch.allclose(merged.delta(m), dense, atol=1e-6)


def test_export_loads_into_a_stock_pipeline(loras, tmp_path, tiny_sd_path):
    from diffusers import StableDiffusionPipeline

    a, b = (load_lora_weights(p) for p in loras)
    state, rank, _ = MERGES.get("direct")(a, b)
    save_merged(state, rank, a.modules, tmp_path)
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    x, t = torch.randn(1, 4, 16, 16), torch.tensor(400)
    emb = torch.randn(1, 16, 32)
    with torch.no_grad():
        base = stock.unet(x, t, encoder_hidden_states=emb).sample
        stock.load_lora_weights(tmp_path)
        merged = stock.unet(x, t, encoder_hidden_states=emb).sample
        stock.unload_lora_weights()
        layers = dict(stock.unet.named_modules())
        for m in a.modules:  # the same model with the dense merged delta written into the weights
            layers[m].weight += a.delta(m) + b.delta(m)
        dense = stock.unet(x, t, encoder_hidden_states=emb).sample
    assert not torch.allclose(base, merged, atol=1e-4)
    assert torch.allclose(merged, dense, atol=1e-4)


def test_direct_merge_of_conv_loras_is_exact(tmp_path, tiny_sd_path, tiny_suite):
    """ResNet conv1/conv2 LoRAs (possible default targets of the micro world) merge exactly too."""
    from diffusers import StableDiffusionPipeline

    pipe = load_pipeline(tiny_sd_path)
    targets = ("to_q", "to_v", "conv1", "conv2")
    a, b = (load_lora_weights(_train(pipe, s, tmp_path / s.name, i, targets=targets))
            for i, s in enumerate(tiny_suite.subjects))
    assert any(a.down[m].ndim == 4 for m in a.modules)
    state, rank, _ = MERGES.get("direct")(a, b, DirectConfig(weight_subject=0.5, weight_style=2.0))
    save_merged(state, rank, a.modules, tmp_path / "merged")
    merged = load_lora_weights(tmp_path / "merged")
    for m in a.modules:
        assert torch.allclose(merged.delta(m), 0.5 * a.delta(m) + 2.0 * b.delta(m), atol=1e-6)
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    x, t, emb = torch.randn(1, 4, 16, 16), torch.tensor(400), torch.randn(1, 16, 32)
    with torch.no_grad():
        stock.load_lora_weights(tmp_path / "merged")
        out = stock.unet(x, t, encoder_hidden_states=emb).sample
        stock.unload_lora_weights()
        layers = dict(stock.unet.named_modules())
        for m in a.modules:
            layers[m].weight += 0.5 * a.delta(m) + 2.0 * b.delta(m)
        dense = stock.unet(x, t, encoder_hidden_states=emb).sample
    assert torch.allclose(out, dense, atol=1e-4)


def test_ziplora_trains_only_the_merger_vectors(loras, tiny_sd_path, tiny_suite):
    pipe = load_pipeline(tiny_sd_path)
    a, b = (load_lora_weights(p) for p in loras)
    subj, style = tiny_suite.subjects
    before = {n: p.detach().clone() for n, p in pipe.unet.named_parameters()}
    with _Merger(pipe.unet, a, b) as merger:  # at m = 1 the overlap penalty is 1 per layer
        assert merger.penalty().item() == pytest.approx(len(a.modules))
    cond = Conditioner(pipe, 32)
    state, rank, info = MERGES.get("ziplora")(
        a, b, ZipLoRAConfig(steps=3, lr=1e-2, lam=0.01), pipe=pipe, cond=cond, subject=subj,
        subject_latents=encode_images(pipe.vae, subj.images, 32), style=style,
        style_latents=encode_images(pipe.vae, style.images, 32))
    m1, m2 = info["_merger"]
    assert any(not torch.allclose(v, torch.ones_like(v)) for v in m1.values())  # the vectors moved
    assert all(p.grad is None and torch.equal(p, before[n]) for n, p in pipe.unet.named_parameters())
    assert len(info["losses"]) == 3 and all(l == l for l in info["losses"])  # noqa: E741
    for m in a.modules:
        assert state[f"{m}.lora.down.weight"].shape[0] == rank == 6


def test_mismatched_targets_and_corrupt_ranks(loras, tmp_path, tiny_sd_path, tiny_suite):
    from safetensors.torch import load_file, save_file

    pipe = load_pipeline(tiny_sd_path)
    c = _train(pipe, tiny_suite.subjects[0], tmp_path / "c", 2, targets=("to_q", "to_k"))
    a = load_lora_weights(loras[0])
    with pytest.raises(DcoError, match="target different layers"):
        MERGES.get("direct")(a, load_lora_weights(c))
    f = loras[1] / "pytorch_lora_weights.safetensors"
    tensors = load_file(f)
    key = next(k for k in tensors if k.endswith("lora.up.weight"))
    tensors[key] = tensors[key][:, :1].contiguous()
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, bad)
    with pytest.raises(DcoError, match="mismatched ranks"):
        load_lora_weights(bad)


def test_ziplora_refuses_conv_loras_with_the_real_reason(tmp_path, tiny_sd_path, tiny_suite):
    from baselines.ziplora import ziplora

    pipe = load_pipeline(tiny_sd_path)
    conv = load_lora_weights(_train(pipe, tiny_suite.subjects[0], tmp_path / "conv", 0, targets=("conv1",)))
    with pytest.raises(DcoError, match="is a Conv2d; this ZipLoRA merges LoRAs on Linear layers only"):
        ziplora(conv, conv, ZipLoRAConfig(steps=1), pipe=pipe, cond=Conditioner(pipe, 32),
                subject=tiny_suite.subjects[0], style=tiny_suite.subjects[1])


def test_lora_of_another_base_model_and_missing_files(loras, tmp_path, tiny_suite, dcobench_cache):
    from dcobench.models.tiny import tiny_model_path

    xl = load_pipeline(tiny_model_path("sdxl"))
    other = _train(xl, tiny_suite.subjects[0], tmp_path / "xl", 0)
    with pytest.raises(DcoError, match="(different base models|target different layers)"):
        MERGES.get("direct")(load_lora_weights(loras[0]), load_lora_weights(other))
    a = load_lora_weights(loras[0])
    with pytest.raises(DcoError, match="another base model"):
        check_pair(a, a, unet=xl.unet)
    with pytest.raises(DcoError, match="LoRA file not found"):
        load_lora_weights(tmp_path / "nothing")


@pytest.mark.slow
def test_merge_cli(loras, tmp_path, cli, tiny_sd_path, tiny_suite):
    out = tmp_path / "merged"
    r = cli("merge", loras[0], loras[1], "--method", "direct", "--out", out, "merges.direct.weight_style=0.5")
    assert r.returncode == 0, r.stderr
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((out / "merge.json").read_text())["weights"] == [1.0, 0.5]
    r = cli("merge", loras[0], loras[1], "--method", "zip", "--out", out)
    assert r.returncode == 2 and "did you mean 'ziplora'" in r.stderr
    r = cli("merge", loras[0], loras[1], "--method", "ziplora", "--out", tmp_path / "z", "--model", tiny_sd_path,
            "--subject", tiny_suite.subjects[0].root, "--style", tiny_suite.subjects[1].root, "merges.ziplora.steps=2")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "z" / "pytorch_lora_weights.safetensors").is_file()
