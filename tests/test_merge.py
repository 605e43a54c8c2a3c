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


def test_ziplora_merges_conv_loras_exactly(tmp_path, tiny_sd_path, tiny_suite):
    """Conv2d LoRAs get one merger weight per input channel; the hooks ZipLoRA trains through compute
    exactly what the exported rank r1 + r2 LoRA does in a stock pipeline (same stride and padding)."""
    from diffusers import StableDiffusionPipeline

    from baselines.ziplora import merger_cos, ziplora

    pipe = load_pipeline(tiny_sd_path)
    targets = ("to_q", "conv1", "conv2")
    a, b = (load_lora_weights(_train(pipe, s, tmp_path / s.name, i, targets=targets))
            for i, s in enumerate(tiny_suite.subjects))
    assert any(a.down[m].ndim == 4 for m in a.modules)
    g = torch.Generator().manual_seed(0)
    x, t, emb = torch.randn(1, 4, 16, 16, generator=g), torch.tensor(400), torch.randn(1, 16, 32, generator=g)
    with _Merger(pipe.unet, a, b) as merger, torch.no_grad():
        for m in a.modules:
            merger.m1[m].copy_(torch.rand(merger.m1[m].shape, generator=g))
            merger.m2[m].copy_(torch.rand(merger.m2[m].shape, generator=g))
        hooked = pipe.unet(x, t, encoder_hidden_states=emb).sample
        m1 = {m: v.detach().clone() for m, v in merger.m1.items()}
        m2 = {m: v.detach().clone() for m, v in merger.m2.items()}
    state, rank = concat_lora(a, b, m1, m2)
    save_merged(state, rank, a.modules, tmp_path / "merged")
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    with torch.no_grad():
        stock.load_lora_weights(tmp_path / "merged")
        exported = stock.unet(x, t, encoder_hidden_states=emb).sample
    assert torch.allclose(hooked, exported, atol=1e-4)
    assert merger_cos(m1, m2) < 1.0 and merger_cos(m1, m1) == pytest.approx(1.0)
    cond = Conditioner(pipe, 32)
    _, _, info = ziplora(a, b, ZipLoRAConfig(steps=2), pipe=pipe, cond=cond, subject=tiny_suite.subjects[0],
                         subject_latents=encode_images(pipe.vae, tiny_suite.subjects[0].images, 32),
                         style=tiny_suite.subjects[1],
                         style_latents=encode_images(pipe.vae, tiny_suite.subjects[1].images, 32))
    assert info["merger_cos"]["before"] == pytest.approx(1.0) and len(info["fidelity_terms"]) == 2
    assert info["config"]["normalize"] is True


def _pair_inputs(pipe, suite):
    subj, style = suite.subjects[0], suite.styles[0]
    return dict(pipe=pipe, cond=Conditioner(pipe, 32), subject=subj, style=style,
                subject_latents=encode_images(pipe.vae, subj.images, 32),
                style_latents=encode_images(pipe.vae, style.images, 32))


@pytest.mark.slow
def test_ziplora_defaults_separate_the_merger_vectors_and_the_public_settings_do_not(tmp_path, tiny_sd_path,
                                                                                     tiny_suite):
    """At dcobench's defaults the mean |cos(m1, m2)| falls by at least 50%; at the public
    implementation's settings (data/configs/ziplora_public.yaml) it stays at 1 to within 1%."""
    import yaml

    from dcobench.config import from_dict
    from dcobench.resources import data_dir

    pipe = load_pipeline(tiny_sd_path)
    trained = []
    for i, s in enumerate((tiny_suite.subjects[0], tiny_suite.styles[0])):
        train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, s.images, 32), s, DreamBooth(),
                   TrainConfig(steps=20, lr=1e-3, resolution=32), i)
        save_lora(pipe, tmp_path / s.name)
        remove_training_adapter(pipe.unet)
        trained.append(load_lora_weights(tmp_path / s.name))
    inputs = _pair_inputs(pipe, tiny_suite)
    _, _, tuned = MERGES.get("ziplora")(*trained, ZipLoRAConfig(), **inputs)
    public_raw = yaml.safe_load((data_dir() / "configs" / "ziplora_public.yaml").read_text())["merges"]["ziplora"]
    _, _, public = MERGES.get("ziplora")(*trained, from_dict(ZipLoRAConfig, public_raw), **inputs)
    assert tuned["merger_cos"]["fall"] >= 0.5, tuned["merger_cos"]
    assert public["merger_cos"]["fall"] < 0.01, public["merger_cos"]


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
