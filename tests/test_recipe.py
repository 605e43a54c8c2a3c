"""The paper's recipe pieces: prior preservation, new tokens, precision, loss weighting, checkpoints."""

import json
import math

import numpy as np
import pytest
import torch

from baselines.dreambooth import DreamBooth
from baselines.dreambooth_pp import DreamBoothPP, DreamBoothPPConfig
from dcobench.config import SampleConfig, TrainConfig
from dcobench.errors import DcoError
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.plan import make_plan
from dcobench.prior import class_images
from dcobench.families.unet import min_snr_weights
from dcobench.trainer import PriorData, encode_images, train_lora

FAST = ["train.steps=3", "sample.steps=2", "sample.seeds=[0]", "sample.max_prompts=1"]


def t(*v):
    return torch.tensor(v, dtype=torch.float32).view(len(v), 1, 1, 1)


def test_prior_preservation_loss_by_hand():
    loss, logs = DreamBoothPP(DreamBoothPPConfig(prior_loss_weight=0.5))(
        t(1.0), t(0.0), None, None, prior=(t(2.0, 0.0), t(0.0, 0.0), None))
    assert loss.item() == pytest.approx(1.0 + 0.5 * (4.0 + 0.0) / 2)
    assert logs["prior_mse"] == pytest.approx(2.0)
    assert DreamBoothPP.needs_prior and not DreamBooth.needs_prior and DreamBoothPPConfig().prior_loss_weight == 1.0


def test_trainer_batches_instance_and_class_examples(tiny_pipe, tiny_suite, tmp_path, monkeypatch):
    subject = tiny_suite.subjects[0]
    cond = Conditioner(tiny_pipe, 32)
    paths = class_images(tiny_pipe, "tiny", "a photo of toy", 2, 0, SampleConfig(steps=2), 32, root=tmp_path)
    prior = PriorData(encode_images(tiny_pipe.vae, paths, 32), cond(["a photo of toy"]))
    calls = []
    original = cond.family.forward
    monkeypatch.setattr(cond.family, "forward", lambda u, x, ts, c: calls.append(c) or original(u, x, ts, c))
    train_lora(tiny_pipe, cond, encode_images(tiny_pipe.vae, subject.images, 32), subject, DreamBoothPP(),
               TrainConfig(steps=2, batch_size=2, resolution=32), 0, prior=prior)
    assert len(calls) == 2
    emb = calls[0]["encoder_hidden_states"]
    assert emb.shape[0] == 4  # 2 instance + 2 class examples in one UNet call
    assert torch.equal(emb[2], prior.cond["encoder_hidden_states"][0]) and torch.equal(emb[3], emb[2])


def test_new_token_trains_and_keeps_its_norm(tiny_pipe, tiny_suite):
    subject = tiny_suite.subjects[0]
    cond = Conditioner(tiny_pipe, 32)
    latents = encode_images(tiny_pipe.vae, subject.images, 32)
    report = train_lora(tiny_pipe, cond, latents, subject, DreamBooth(),
                        TrainConfig(steps=3, resolution=32, train_token=True, token_lr=1e-2), 0)
    tok = report.tokens.encoders[0]
    row = tok.weight[tok.token_ids[0]].detach()
    class_ids = tiny_pipe.tokenizer(subject.class_noun, add_special_tokens=False).input_ids
    init = tok.original[class_ids].float().mean(0)  # where the token started: the class word
    assert not torch.allclose(row, init, atol=1e-4)  # it trained
    assert row.norm().item() == pytest.approx(float(tok.init_norms[0]), rel=1e-5)  # at its initial norm
    others = torch.ones(tok.weight.shape[0], dtype=torch.bool)
    others[tok.token_ids] = False
    assert torch.equal(tok.weight.detach()[others][: tok.original.shape[0]], tok.original.float()[: others.sum()])
    report.tokens.remove(tiny_pipe)
    assert len(tiny_pipe.tokenizer) == 49408


def test_run_with_tokens_loads_into_a_stock_pipeline(cli, tmp_path, tiny_sd_path, tiny_suite):
    from diffusers import StableDiffusionPipeline

    out = tmp_path / "run"
    r = cli("run", "--suite", "tiny", "--methods", "dreambooth", "--out", out, "--quiet", *FAST,
            "train.train_token=true", "train.token_lr=0.01", "train.lr=0.05",
            "methods.dreambooth.sweep={sample.cfg_scale: [4.0]}", "subjects=[robot]")
    assert r.returncode == 0, r.stderr
    (res_path,) = out.glob("cells/*/result.json")
    res = json.loads(res_path.read_text())
    lora_dir = (res_path.parent / res["lora"]).resolve().parent
    assert (lora_dir / "learned_embeds.safetensors").is_file()
    manifest = json.loads((res_path.parent / "manifest.json").read_text())
    job = manifest["images"][0]
    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    stock.load_lora_weights(lora_dir)
    stock.load_textual_inversion(lora_dir / "learned_embeds.safetensors")
    img = stock(job["prompt"], num_inference_steps=2, guidance_scale=4.0, height=32, width=32,
                generator=torch.Generator().manual_seed(job["noise_seed"]), output_type="np").images[0]
    ours = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(res_path.parent / job["file"]))
    assert np.abs((img * 255).round().astype(int) - ours.astype(int)).max() <= 1


def test_bf16_training_keeps_lora_in_fp32(tiny_sd_path, tiny_suite):
    pipe = load_pipeline(tiny_sd_path, dtype=torch.bfloat16)
    pipe.vae.to(torch.float32)
    subject = tiny_suite.subjects[0]
    report = train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject,
                        DreamBooth(), TrainConfig(steps=2, lr=1e-2, resolution=32), 0)
    lora = [p for n, p in pipe.unet.named_parameters() if "lora_" in n]
    base = [p for n, p in pipe.unet.named_parameters() if "lora_" not in n]
    assert all(p.dtype == torch.float32 for p in lora) and all(p.dtype == torch.bfloat16 for p in base)
    assert all(math.isfinite(x) for x in report.losses)
    assert any(p.abs().sum() > 0 for n, p in pipe.unet.named_parameters() if "lora_B" in n)


def test_min_snr_weights_by_hand(tiny_pipe):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(tiny_pipe.scheduler.config)
    ts = torch.tensor([5, 500, 990])
    abar = sched.alphas_cumprod[ts]
    snr = abar / (1 - abar)
    expected = torch.minimum(snr, torch.tensor(5.0)) / snr
    assert torch.allclose(min_snr_weights(sched, ts, 5.0), expected)
    assert expected[0] < 1 and expected[2] == 1


def test_accumulation_offset_noise_snr_and_checkpointing_run(tiny_pipe, tiny_suite, monkeypatch):
    subject = tiny_suite.subjects[0]
    calls, saved = [], []
    cond = Conditioner(tiny_pipe, 32)
    original = cond.family.forward
    monkeypatch.setattr(cond.family, "forward", lambda u, x, ts, c: calls.append(1) or original(u, x, ts, c))
    cfg = TrainConfig(steps=4, grad_accum=3, offset_noise=0.1, snr_gamma=5.0, gradient_checkpointing=True,
                      checkpoint_every=2, resolution=32)
    report = train_lora(tiny_pipe, cond, encode_images(tiny_pipe.vae, subject.images, 32),
                        subject, DreamBooth(), cfg, 0, on_checkpoint=lambda step, tok: saved.append(step))
    assert len(calls) == 4 * 3 and len(report.losses) == 4 and saved == [2]
    assert all(math.isfinite(x) for x in report.losses)


def test_8bit_adam_without_bitsandbytes(tiny_pipe, tiny_suite):
    pytest.importorskip("torch")
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed here")
    except ImportError:
        pass
    subject = tiny_suite.subjects[0]
    with pytest.raises(DcoError, match="adamw8bit needs bitsandbytes"):
        train_lora(tiny_pipe, Conditioner(tiny_pipe, 32), encode_images(tiny_pipe.vae, subject.images, 32), subject,
                   DreamBooth(), TrainConfig(steps=1, optimizer="adamw8bit", resolution=32), 0)


def test_lora_step_needs_a_checkpoint(tiny_suite):
    with pytest.raises(DcoError, match=r"sample\.lora_step=5 has no saved LoRA"):
        make_plan(methods=["dco"], suite="tiny", overrides=["methods.dco.sweep={sample.lora_step: [5]}"])
    plan = make_plan(methods=["dco"], suite="tiny", overrides=[
        "train.steps=20", "train.checkpoint_every=10", "methods.dco.sweep={sample.lora_step: [10, 20]}"])
    assert len({c.train_id for c in plan.cells}) == len(tiny_suite.subjects)  # checkpoints share one training


def test_checkpoint_cells_sample_their_checkpoint(cli, tmp_path, tiny_suite):
    out = tmp_path / "run"
    r = cli("run", "--suite", "tiny", "--methods", "dco", "--out", out, "--quiet", *FAST, "train.steps=4",
            "train.checkpoint_every=2", "methods.dco.sweep={sample.lora_step: [2, 4]}", "subjects=[mug]")
    assert r.returncode == 0, r.stderr
    loras = {json.loads(p.read_text())["knobs"]["sample.lora_step"]: json.loads(p.read_text())["lora"]
             for p in out.glob("cells/*/result.json")}
    assert "checkpoint-2" in loras[2] and "checkpoint" not in loras[4]
    assert len(list(out.glob("loras/*/train.json"))) == 1
