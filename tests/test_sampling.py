"""Guidance: consistency guidance term by term, w_con = 0 against the stock pipeline, batching."""

import numpy as np
import pytest
import torch

from baselines.dreambooth import DreamBooth
from dcobench.config import SampleConfig, TrainConfig
from dcobench.lora import load_lora, remove_training_adapter, save_lora, unload_lora
from dcobench.models.pipeline import Conditioner, unet_forward
from dcobench.sampling import GuidedSampler, grid_jobs, lora_disabled
from dcobench.trainer import encode_images, train_lora


@pytest.fixture
def lora_pipe(tiny_pipe, tiny_suite, tmp_path):
    """The tiny pipeline with a trained LoRA loaded from disk, as the runner samples it."""
    subject = tiny_suite.subjects[0]
    cond = Conditioner(tiny_pipe, 32)
    latents = encode_images(tiny_pipe.vae, subject.images, 32)
    train_lora(tiny_pipe, cond, latents, subject, DreamBooth(), TrainConfig(steps=4, lr=5e-2, resolution=32), 0)
    save_lora(tiny_pipe, tmp_path)
    remove_training_adapter(tiny_pipe.unet)
    load_lora(tiny_pipe, tmp_path)
    return tiny_pipe, subject


@pytest.mark.parametrize("batch,resolution", [(1, 32), (3, 32), (2, 64)])
def test_consistency_guidance_matches_formula_term_by_term(lora_pipe, batch, resolution):
    pipe, subject = lora_pipe
    cond = Conditioner(pipe, resolution)
    sampler = GuidedSampler(pipe, cond, resolution)
    prompts = [subject.prompts[i % len(subject.prompts)] for i in range(batch)]
    bases = [subject.base(p) for p in prompts]
    x = torch.randn(batch, 4, resolution // 2, resolution // 2)
    t = torch.tensor(500)
    cfg = SampleConfig(w_text=3.5, w_con=1.7)
    with torch.no_grad():
        got = sampler.guided_eps(x, t, prompts, bases, cfg, "consistency")
        theta = unet_forward(pipe.unet, x, t, cond(prompts))
        with lora_disabled(pipe.unet):
            phi0 = unet_forward(pipe.unet, x, t, cond([""] * batch))
            phi_base = unet_forward(pipe.unet, x, t, cond(bases))
    assert not torch.allclose(theta, phi_base, atol=1e-4)  # the LoRA matters, so the test can fail
    expected = phi0 + 3.5 * (phi_base - phi0) + 1.7 * (theta - phi_base)
    assert torch.allclose(got, expected, atol=1e-5)


def test_consistency_with_wcon_zero_is_stock_cfg_of_the_base_model(lora_pipe, tiny_sd_path):
    from diffusers import StableDiffusionPipeline

    pipe, subject = lora_pipe
    cfg = SampleConfig(steps=5, seeds=[0, 1], w_text=5.0, w_con=0.0, batch_size=4)
    prompts = subject.prompts[:2]
    jobs = grid_jobs(prompts, [subject.base(p) for p in prompts], cfg)
    ours = GuidedSampler(pipe, Conditioner(pipe, 32), 32).sample(jobs, cfg, "consistency")
    with_lora = GuidedSampler(pipe, Conditioner(pipe, 32), 32).sample(jobs, cfg, "cfg")
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    out = stock([j.base_prompt for j in jobs], num_inference_steps=5, guidance_scale=5.0, height=32, width=32,
                generator=[torch.Generator().manual_seed(j.noise_seed) for j in jobs], output_type="np").images
    stock_imgs = (out * 255).round().astype(np.uint8)
    for a, b, c in zip(ours, stock_imgs, with_lora):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert any(np.abs(a.astype(int) - c.astype(int)).max() > 1 for a, c in zip(ours, with_lora))


def test_images_do_not_depend_on_batching(lora_pipe):
    pipe, subject = lora_pipe
    sampler = GuidedSampler(pipe, Conditioner(pipe, 32), 32)
    jobs = grid_jobs(subject.prompts, [subject.base(p) for p in subject.prompts], SampleConfig(seeds=[0, 1]))
    one = sampler.sample(jobs, SampleConfig(steps=3, batch_size=1), "consistency")
    many = sampler.sample(jobs, SampleConfig(steps=3, batch_size=4), "consistency")
    for a, b in zip(one, many):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    assert not np.array_equal(one[0], one[1])  # different seeds, different images


def test_grid_jobs_cover_prompts_seeds_and_images():
    cfg = SampleConfig(seeds=[0, 7], images_per_prompt=2)
    jobs = grid_jobs(["a", "b", "c"], ["a", "b", "c"], cfg)
    assert len(jobs) == 12
    assert len({j.file for j in jobs}) == 12 and len({(j.prompt, j.noise_seed) for j in jobs}) == 12


def test_unloading_restores_the_base_model(lora_pipe):
    pipe, subject = lora_pipe
    x, t = torch.randn(1, 4, 16, 16), torch.tensor(300)
    c = Conditioner(pipe, 32)([subject.prompts[0]])
    with torch.no_grad():
        with lora_disabled(pipe.unet):
            base = unet_forward(pipe.unet, x, t, c)
        unload_lora(pipe)
        after = unet_forward(pipe.unet, x, t, c)
    assert torch.equal(base, after)


@pytest.mark.slow
@pytest.mark.parametrize("guidance", ["cfg", "consistency"])
def test_sample_compile_draws_the_eager_images(lora_pipe, guidance):
    """`sample.compile`: the compiled denoiser (a second graph with the adapters off, under
    consistency guidance) draws the eager path's images to one 8-bit level, and the LoRA still acts."""
    pipe, subject = lora_pipe
    sampler = GuidedSampler(pipe, Conditioner(pipe, 32), 32)
    jobs = grid_jobs(subject.prompts[:2], [subject.base(p) for p in subject.prompts[:2]], SampleConfig(seeds=[0]))
    cfg = SampleConfig(steps=3, batch_size=2, cfg_scale=5.0, w_con=3.0)
    eager = sampler.sample(jobs, cfg, guidance)
    compiled = sampler.sample(jobs, SampleConfig(**{**cfg.__dict__, "compile": True}), guidance)
    assert sampler._compiled is not None and sampler._compiled._orig_mod is pipe.unet
    for a, b in zip(eager, compiled):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    if guidance == "cfg":  # the compiled graph must not have frozen the adapters' state
        with lora_disabled(pipe.unet):
            base = sampler.sample(jobs, SampleConfig(**{**cfg.__dict__, "compile": True}), "cfg")
        assert any(np.abs(a.astype(int) - c.astype(int)).max() > 1 for a, c in zip(eager, base))
