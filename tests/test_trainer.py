"""The trainer on a tiny pipeline: what gets gradients, what is cached, the LoRA file."""

import math

import numpy as np
import pytest
import torch

from baselines.dreambooth import DreamBooth
from dcobench.config import SampleConfig, TrainConfig
from dcobench.lora import WEIGHT_NAME, remove_training_adapter, save_lora
from dcobench.methods.dco import DCO, DCOConfig
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.sampling import GuidedSampler, grid_jobs
from dcobench.families import family_of
from dcobench.families.unet import diffusion_target
from dcobench.trainer import encode_images, train_lora


def _train(pipe, subject, objective, steps=3, lr=1e-3, seed=0, targets=None):
    cond = Conditioner(pipe, 32)
    latents = encode_images(pipe.vae, subject.images, 32)
    cfg = TrainConfig(steps=steps, lr=lr, rank=4, alpha=4.0, resolution=32)
    if targets:
        cfg.target_modules = list(targets)
    return train_lora(pipe, cond, latents, subject, objective, cfg, seed), cond


@pytest.mark.parametrize("objective", [DCO(), DreamBooth()], ids=["dco", "dreambooth"])
def test_gradients_reach_only_lora_parameters(tiny_pipe, tiny_suite, objective, monkeypatch):
    import dcobench.trainer as trainer

    seen = []
    modules = {"unet": tiny_pipe.unet, "vae": tiny_pipe.vae, "text_encoder": tiny_pipe.text_encoder}

    class Spy:
        """Records, at every optimizer step, which parameters of the whole pipeline hold a gradient."""

        def __init__(self, opt):
            self.opt = opt

        def step(self):
            seen.append({f"{m}.{n}" for m, mod in modules.items() for n, p in mod.named_parameters() if p.grad is not None})
            self.opt.step()

        def zero_grad(self, set_to_none=True):
            self.opt.zero_grad(set_to_none=set_to_none)

    original = trainer.make_optimizer
    monkeypatch.setattr(trainer, "make_optimizer", lambda params, cfg: Spy(original(params, cfg)))
    before = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    _train(tiny_pipe, tiny_suite.subjects[0], objective, steps=2)
    lora = {f"unet.{n}" for n, _ in tiny_pipe.unet.named_parameters() if "lora_" in n}
    assert len(seen) == 2 and lora and all(s == lora for s in seen)
    for n, p in tiny_pipe.unet.named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, before[n.replace(".base_layer", "")]), n


def test_dco_with_same_prompt_starts_at_log2(tiny_pipe, tiny_suite):
    report, _ = _train(tiny_pipe, tiny_suite.subjects[0], DCO(DCOConfig(reference_prompt="same")), steps=5, lr=1e-2)
    assert report.losses[0] == pytest.approx(math.log(2), abs=1e-6)  # LoRA B = 0: model == reference
    assert len(report.losses) == 5 and all(math.isfinite(x) for x in report.losses)


def test_dco_reference_pass_sees_the_base_caption(tiny_pipe, tiny_suite, monkeypatch):
    subject = tiny_suite.subjects[0]
    seen = []
    family = family_of(tiny_pipe)
    original = family.forward

    def spy(unet, x, t, cond):
        seen.append((unet._hf_peft_config_loaded and not _adapters_enabled(unet), cond["encoder_hidden_states"]))
        return original(unet, x, t, cond)

    monkeypatch.setattr(family, "forward", spy)
    _train(tiny_pipe, subject, DCO(DCOConfig(reference_prompt="base")), steps=1)
    cond = Conditioner(tiny_pipe, 32)
    (theta_disabled, theta_c), (phi_disabled, phi_c) = seen
    assert not theta_disabled and phi_disabled
    idx = [i for i in range(len(subject.captions)) if torch.equal(theta_c, cond([subject.captions[i]])["encoder_hidden_states"])]
    assert idx and torch.equal(phi_c, cond([subject.base_captions[idx[0]]])["encoder_hidden_states"])
    assert subject.identifier not in subject.base_captions[idx[0]]


def _adapters_enabled(unet):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(not m.disable_adapters for m in unet.modules() if isinstance(m, BaseTunerLayer))


def test_latents_and_text_are_cached_not_recomputed(tiny_pipe, tiny_suite, monkeypatch):
    subject = tiny_suite.subjects[0]
    cond = Conditioner(tiny_pipe, 32)
    latents = encode_images(tiny_pipe.vae, subject.images, 32)
    calls = {"text": 0}
    original = tiny_pipe.text_encoder.forward

    def counting(*a, **k):
        calls["text"] += 1
        return original(*a, **k)

    monkeypatch.setattr(tiny_pipe.text_encoder, "forward", counting)
    monkeypatch.setattr(tiny_pipe.vae, "encode", lambda *a, **k: pytest.fail("VAE encode during training"))
    train_lora(tiny_pipe, cond, latents, subject, DCO(DCOConfig(reference_prompt="base")),
               TrainConfig(steps=6, resolution=32), 0)
    assert calls["text"] == 2  # captions once, base captions once, for all 6 steps


def test_v_prediction_target(tiny_sd_vpred_path, tiny_suite):
    pipe = load_pipeline(tiny_sd_vpred_path)
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    x0, noise = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4)
    ts = torch.tensor([10, 900])
    abar = sched.alphas_cumprod[ts].view(-1, 1, 1, 1)
    expected = abar.sqrt() * noise - (1 - abar).sqrt() * x0
    assert torch.allclose(diffusion_target(sched, x0, noise, ts), expected, atol=1e-6)
    report, _ = _train(pipe, tiny_suite.subjects[0], DreamBooth(), steps=2)
    assert all(math.isfinite(x) for x in report.losses)


@pytest.mark.parametrize("targets", [None, ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]],
                         ids=["attention", "attention+resnet-convs"])
def test_saved_lora_loads_into_a_stock_pipeline(tiny_pipe, tiny_sd_path, tiny_suite, tmp_path, targets):
    """Also with ResNet convs among the targets: a file that mixed key formats lost its attention
    layers in load_lora_weights, silently."""
    from diffusers import StableDiffusionPipeline

    subject = tiny_suite.subjects[0]
    _, cond = _train(tiny_pipe, subject, DreamBooth(), steps=5, lr=5e-2, targets=targets)
    path = save_lora(tiny_pipe, tmp_path)
    assert path.name == WEIGHT_NAME and path.is_file()

    # our sampler with the trained adapter still attached, plain CFG
    sample_cfg = SampleConfig(steps=4, seeds=[3], cfg_scale=4.0)
    jobs = grid_jobs([subject.prompts[0]], [subject.base(subject.prompts[0])], sample_cfg)
    ours = GuidedSampler(tiny_pipe, cond, 32).sample(jobs, sample_cfg, "cfg")[0]
    n_trained = sum("lora_B" in n for n, _ in tiny_pipe.unet.named_parameters())
    remove_training_adapter(tiny_pipe.unet)

    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)

    def generate():
        out = stock(subject.prompts[0], num_inference_steps=4, guidance_scale=4.0, height=32, width=32,
                    generator=torch.Generator().manual_seed(jobs[0].noise_seed), output_type="np").images[0]
        return (out * 255).round().astype(np.uint8)

    base = generate()
    stock.load_lora_weights(tmp_path)
    loaded = [n for n, p in stock.unet.named_parameters() if "lora_B" in n and p.abs().sum() > 0]
    assert len(loaded) == n_trained, (len(loaded), n_trained)
    with_lora = generate()
    assert np.abs(with_lora.astype(int) - base.astype(int)).max() > 0
    assert np.abs(with_lora.astype(int) - ours.astype(int)).max() <= 1
    stock.unload_lora_weights()
    assert np.array_equal(generate(), base)
