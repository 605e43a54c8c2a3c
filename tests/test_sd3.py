"""SD3: flow matching in the trainer, the reference pass and guidance; LoRA and tokens in and out of
the stock StableDiffusion3Pipeline; family detection from model_index.json."""

import json
import math

import numpy as np
import pytest
import torch

from dcobench.config import SampleConfig, TrainConfig
from dcobench.errors import DcoError
from dcobench.families import family_of
from dcobench.families.sd3 import LORA_TARGETS, FlowMatchNoising
from dcobench.lora import WEIGHT_NAME, load_lora, remove_training_adapter, save_lora
from dcobench.methods.dco import DCO, DCOConfig
from baselines.dreambooth import DreamBooth
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.sampling import GuidedSampler, grid_jobs, lora_disabled
from dcobench.trainer import encode_images, train_lora


@pytest.fixture(scope="module")
def sd3_path(dcobench_cache):
    from dcobench.models.tiny import tiny_model_path

    return tiny_model_path("sd3")


@pytest.fixture(scope="module")
def sd3_no_t5_path(dcobench_cache):
    from dcobench.models.tiny import tiny_model_path

    return tiny_model_path("sd3", t5=False)


def stock_sd3(path, t5=True):
    from diffusers import StableDiffusion3Pipeline

    extra = {} if t5 else {"text_encoder_3": None, "tokenizer_3": None}
    pipe = StableDiffusion3Pipeline.from_pretrained(path, **extra)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_u8(x):
    return (x * 255).round().astype(np.uint8)


def train(pipe, subject, objective, steps=3, **cfg):
    cond = Conditioner(pipe, 32)
    cfg = TrainConfig(steps=steps, lr=5e-2, resolution=32, target_modules=LORA_TARGETS, **cfg)
    report = train_lora(pipe, cond, encode_images(pipe.vae, subject.images, 32), subject, objective, cfg, 0)
    return report, cond


def test_conditioning_with_and_without_t5(sd3_path, sd3_no_t5_path):
    for path, t5 in ((sd3_path, True), (sd3_no_t5_path, False)):
        pipe = load_pipeline(path)  # the T5-less folder's null text_encoder_3 needs no extra arguments
        assert family_of(pipe).name == "sd3" and (pipe.text_encoder_3 is not None) == t5
        c = Conditioner(pipe, 32)(["a sks toy", ""])
        assert set(c) == {"encoder_hidden_states", "pooled_projections"}
        assert c["pooled_projections"].shape == (2, 64)  # CLIP-L + CLIP-G pooled
        emb = c["encoder_hidden_states"]
        assert emb.shape == (2, 16 + 256, 64)  # CLIP tokens (padded to T5's width), then T5's 256
        assert bool(emb[0, 16:].abs().sum() > 0) == t5  # no T5: the pipeline's zeros


def test_flow_matching_noise_and_target_follow_the_diffusers_sd3_script(sd3_path):
    from diffusers import FlowMatchEulerDiscreteScheduler
    from diffusers.training_utils import compute_density_for_timestep_sampling

    pipe = load_pipeline(sd3_path)
    noising = family_of(pipe).noising(pipe.scheduler)
    assert isinstance(noising, FlowMatchNoising)
    t = noising.timesteps(4096, torch.Generator().manual_seed(3), "cpu")
    # the same draws as train_dreambooth_lora_sd3.py's logit-normal density (mean 0, std 1)
    u = compute_density_for_timestep_sampling("logit_normal", 4096, 0.0, 1.0, generator=torch.Generator().manual_seed(3))
    sched = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    assert torch.equal(t, sched.timesteps[(u * 1000).long()])
    x0, noise = torch.randn(4, 4, 16, 16), torch.randn(4, 4, 16, 16)
    ts = t[:4]
    sigma = torch.stack([sched.sigmas[(sched.timesteps == v).nonzero().item()] for v in ts])[:, None, None, None]
    assert torch.allclose(noising.add_noise(x0, noise, ts), (1 - sigma) * x0 + sigma * noise)
    assert torch.allclose(noising.add_noise(x0, noise, ts), sched.scale_noise(x0, ts, noise), atol=1e-6)
    assert torch.equal(noising.target(x0, noise, ts), noise - x0)
    assert noising.weights(ts, TrainConfig()) is None
    with pytest.raises(DcoError, match="snr_gamma"):
        noising.weights(ts, TrainConfig(snr_gamma=5.0))


def test_dco_reference_pass_is_the_transformer_without_lora_on_the_same_inputs(sd3_path, tiny_suite, monkeypatch):
    pipe = load_pipeline(sd3_path)
    subject = tiny_suite.subjects[0]
    family = family_of(pipe)
    seen, original = [], family.forward

    def spy(model, x, t, cond):
        from peft.tuners.tuners_utils import BaseTunerLayer

        enabled = any(not m.disable_adapters for m in model.modules() if isinstance(m, BaseTunerLayer))
        seen.append((enabled, x.clone(), t.clone(), {k: v.clone() for k, v in cond.items()}))
        return original(model, x, t, cond)

    monkeypatch.setattr(family, "forward", spy)
    report, cond = train(pipe, subject, DCO(DCOConfig(reference_prompt="same")), steps=1)
    (theta_on, x1, t1, c1), (phi_on, x2, t2, c2) = seen
    assert theta_on and not phi_on
    assert torch.equal(x1, x2) and torch.equal(t1, t2) and all(torch.equal(c1[k], c2[k]) for k in c1)
    # LoRA B starts at 0, so the model equals its reference and the loss is exactly log 2
    assert report.losses[0] == pytest.approx(math.log(2), abs=1e-6)

    seen.clear()
    remove_training_adapter(pipe.transformer)
    train(pipe, subject, DCO(DCOConfig(reference_prompt="base")), steps=1)  # the base caption's conditioning
    (_, _, _, c1), (_, _, _, c2) = seen
    i = next(i for i, cap in enumerate(subject.captions)
             if torch.equal(c1["encoder_hidden_states"], cond([cap])["encoder_hidden_states"]))
    base = cond([subject.base_captions[i]])
    assert all(torch.equal(c2[k], base[k]) for k in base)


@pytest.mark.parametrize("objective", [DCO(), DreamBooth()], ids=["dco", "dreambooth"])
def test_lora_trains_and_loads_into_the_stock_sd3_pipeline(sd3_path, tiny_suite, tmp_path, objective):
    from safetensors.torch import load_file

    pipe = load_pipeline(sd3_path)
    subject = tiny_suite.subjects[0]
    report, cond = train(pipe, subject, objective, steps=4)
    assert all(np.isfinite(report.losses))
    save_lora(pipe, tmp_path)
    keys = load_file(str(tmp_path / WEIGHT_NAME))
    for target in ("attn.to_q", "attn.add_q_proj", "attn.to_add_out", "attn.to_out.0"):
        assert any(f".{target}.lora_A" in k for k in keys), target
    assert all(k.startswith("transformer.") for k in keys) and not any("attn2" in k for k in keys)
    remove_training_adapter(pipe.transformer)
    load_lora(pipe, tmp_path)
    cfg = SampleConfig(steps=3, seeds=[1], cfg_scale=4.0)
    prompt = subject.prompts[0]
    jobs = grid_jobs([prompt], [subject.base(prompt)], cfg)
    ours = GuidedSampler(pipe, cond, 32).sample(jobs, cfg, "cfg")[0]

    stock = stock_sd3(sd3_path)
    def gen():
        return to_u8(stock(prompt, num_inference_steps=3, guidance_scale=4.0, height=32, width=32,
                           generator=torch.Generator().manual_seed(jobs[0].noise_seed), output_type="np").images[0])

    base = gen()
    stock.load_lora_weights(tmp_path)
    with_lora = gen()
    assert np.abs(with_lora.astype(int) - base.astype(int)).max() > 0, "the LoRA must change the image"
    assert np.abs(with_lora.astype(int) - ours.astype(int)).max() <= 1


@pytest.mark.parametrize("t5", [True, False], ids=["t5", "no-t5"])
def test_consistency_guidance_at_wcon_zero_is_stock_cfg_on_the_base_prompt(sd3_path, sd3_no_t5_path, tiny_suite,
                                                                           tmp_path, t5):
    path = sd3_path if t5 else sd3_no_t5_path
    pipe = load_pipeline(path)
    subject = tiny_suite.subjects[0]
    _, cond = train(pipe, subject, DreamBooth(), steps=3)
    save_lora(pipe, tmp_path)
    remove_training_adapter(pipe.transformer)
    load_lora(pipe, tmp_path)
    cfg = SampleConfig(steps=3, seeds=[0, 1], w_text=5.0, w_con=0.0)
    prompts = subject.prompts[:2]
    jobs = grid_jobs(prompts, [subject.base(p) for p in prompts], cfg)
    sampler = GuidedSampler(pipe, cond, 32)
    ours = sampler.sample(jobs, cfg, "consistency")
    with_lora = sampler.sample(jobs, cfg, "cfg")
    out = stock_sd3(path, t5)([j.base_prompt for j in jobs], num_inference_steps=3, guidance_scale=5.0, height=32,
                              width=32, generator=[torch.Generator().manual_seed(j.noise_seed) for j in jobs],
                              output_type="np").images
    assert any(np.abs(a.astype(int) - b.astype(int)).max() > 1 for a, b in zip(ours, with_lora))
    for a, b in zip(ours, out):
        assert np.abs(a.astype(int) - to_u8(b).astype(int)).max() <= 1


def test_consistency_guidance_term_by_term_in_velocity_space(sd3_path, tiny_suite):
    pipe = load_pipeline(sd3_path)
    subject = tiny_suite.subjects[0]
    _, cond = train(pipe, subject, DreamBooth(), steps=3)
    family, model = cond.family, pipe.transformer
    prompts = subject.prompts[:2]
    bases = [subject.base(p) for p in prompts]
    x, t = torch.randn(2, 4, 16, 16), torch.tensor(600.0)
    with torch.no_grad():
        got = GuidedSampler(pipe, cond, 32).guided_eps(x, t, prompts, bases, SampleConfig(w_text=3.5, w_con=1.7),
                                                       "consistency")
        theta = family.forward(model, x, t, cond(prompts))
        with lora_disabled(model):
            phi0, phi_base = family.forward(model, x, t, cond([""] * 2)), family.forward(model, x, t, cond(bases))
    assert not torch.allclose(theta, phi_base, atol=1e-4)
    assert torch.allclose(got, phi0 + 3.5 * (phi_base - phi0) + 1.7 * (theta - phi_base), atol=1e-5)


def test_bf16_checkpointed_token_training(sd3_path, tiny_suite):
    pipe = load_pipeline(sd3_path, dtype=torch.bfloat16)
    report, _ = train(pipe, tiny_suite.subjects[0], DCO(), steps=2, mixed_precision="bf16",
                      gradient_checkpointing=True, train_token=True, token_lr=1e-2)
    assert all(np.isfinite(report.losses))
    assert all(p.dtype == torch.float32 for n, p in pipe.transformer.named_parameters() if "lora_" in n)
    assert [e.name for e in report.tokens.encoders] == ["text_encoder", "text_encoder_2"]
    report.tokens.remove(pipe)


def test_model_flag_picks_the_family(sd3_path, tiny_sd_path):
    from dcobench.plan import make_plan
    from dcobench.suites import get_suite

    from dcobench.models.pipeline import native_resolution

    assert native_resolution(str(sd3_path), default=7) == 32  # transformer sample size x VAE downsampling
    suite = get_suite("tiny", model=str(sd3_path))
    assert suite.resolution == 32 and suite.defaults["train"]["target_modules"] == LORA_TARGETS
    assert suite.defaults["train"]["steps"] == get_suite("tiny").defaults["train"]["steps"]  # suite's own kept
    plan = make_plan(suite="tiny", model=str(sd3_path), methods=["dco"])
    assert all(c.train.target_modules == LORA_TARGETS for c in plan.cells)
    plan = make_plan(suite="tiny", model=str(sd3_path), methods=["dco"], overrides=["train.target_modules=[attn.to_q]"])
    assert all(c.train.target_modules == ["attn.to_q"] for c in plan.cells)
    assert "target_modules" not in get_suite("tiny", model=str(tiny_sd_path)).defaults["train"]
    with pytest.raises(DcoError, match="merge"):
        make_plan(suite="tiny", model=str(sd3_path), methods=["dco"], merge=["direct"])


@pytest.mark.parametrize("index,why", [
    ({"_class_name": "FluxPipeline", "transformer": ["diffusers", "FluxTransformer2DModel"],
      "text_encoder": ["transformers", "CLIPTextModel"], "text_encoder_2": ["transformers", "T5EncoderModel"]},
     "guidance-distilled"),
    ({"_class_name": "PixArtAlphaPipeline", "transformer": ["diffusers", "PixArtTransformer2DModel"],
      "text_encoder": ["transformers", "T5EncoderModel"]}, "not a supported model family"),
])
def test_unsupported_family_fails_with_the_reason(tmp_path, index, why):
    from dcobench.suites import get_suite

    (tmp_path / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(DcoError, match=why):
        get_suite("tiny", model=str(tmp_path))
    with pytest.raises(DcoError, match=why):
        load_pipeline(tmp_path)


def test_unsupported_family_on_the_command_line(tmp_path, cli):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    r = cli("run", "--suite", "tiny", "--model", tmp_path, "--out", tmp_path / "run", "--quiet")
    assert r.returncode == 2 and "guidance-distilled" in r.stderr and "no unconditional prediction" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_run_report_and_stock_load_end_to_end(sd3_path, tmp_path, cli):
    """`dcobench run --model <SD3 folder>`: train (with a new token; prior preservation's class images
    from the SD3 base model), sample, score, report; then the run's LoRA and token files load into
    a stock StableDiffusion3Pipeline."""
    from dcobench.tokens import load_tokens

    out = tmp_path / "run"
    r = cli("run", "--suite", "tiny", "--model", sd3_path, "--methods", "dco,dreambooth,dreambooth_pp", "--out", out,
            "--quiet", "subjects=[robot]", "train.steps=2", "train.train_token=true", "sample.steps=2",
            "sample.seeds=[0]", "sample.max_prompts=2", "methods.dreambooth_pp.num_class_images=2")
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    # dreambooth_pp declares no sweep on the tiny suite: it takes the suite's CFG sweep, like dreambooth
    assert sorted(res["method"] for res in results) == ["dco", "dco", "dreambooth", "dreambooth", "dreambooth_pp",
                                                        "dreambooth_pp"]
    assert all({"dino", "clip_i", "clip_t"} <= set(res["metrics"]) for res in results)
    assert all(res["config"]["train"]["target_modules"] == LORA_TARGETS for res in results)
    r = cli("report", out)
    assert r.returncode == 0 and (out / "report" / "summary.csv").is_file(), r.stderr

    lora_dir = (out / "cells" / results[0]["cell_id"] / results[0]["lora"]).resolve().parent
    stock = stock_sd3(sd3_path)
    assert load_tokens(stock, lora_dir) == ["sks"]
    stock.load_lora_weights(lora_dir)
    image = stock("a photo of sks toy", num_inference_steps=2, height=32, width=32, output_type="np").images[0]
    assert image.shape == (32, 32, 3) and np.isfinite(image).all()


def test_offline_t5_tokenizer_round_trips(tmp_path):
    """The tiny SD3's T5 tokenizer: a Unigram vocabulary built from CLIP's BPE merges, no download."""
    from transformers import AutoTokenizer

    from dcobench.models.tokenizer import offline_t5_tokenizer

    tok = offline_t5_tokenizer(32)
    ids = tok("a photo of sks dog, in the snow!").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0 and tok.unk_token_id not in ids
    assert tok.convert_ids_to_tokens(ids)[:3] == ["▁a", "▁photo", "▁of"]
    assert tok.unk_token_id not in tok("Zebra #42 @ 3:15").input_ids  # every printable character has a piece
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("a photo of sks dog").input_ids == tok("a photo of sks dog").input_ids
    assert again.model_max_length == 32


def test_every_adapter_runs_on_sd3_and_its_file_reproduces_the_run_in_a_stock_pipeline(sd3_path, tmp_path, cli):
    """As on SDXL (tests/test_sdxl.py): train.adapter swept over every other kind on the SD3 transformer,
    DCO and DreamBooth; each file, loaded where docs/adapters.md says, draws the run's CFG image."""
    from PIL import Image

    kinds = ["dora", "loha", "lokr", "oft", "boft"]
    out = tmp_path / "run"
    sweep = "{train.adapter: [" + ", ".join(kinds) + "]}"
    r = cli("run", "--suite", "tiny", "--model", sd3_path, "--methods", "dco,dreambooth", "--out", out, "--quiet",
            "subjects=[robot]", "train.steps=2", "train.lr=5e-2", "sample.steps=2", "sample.seeds=[0]",
            "sample.max_prompts=1", f"methods.dco.sweep={sweep}", f"methods.dreambooth.sweep={sweep}")
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    assert sorted((res["method"], res["knobs"]["train.adapter"]) for res in results) == \
        sorted((m, k) for m in ("dco", "dreambooth") for k in kinds)
    stock = stock_sd3(sd3_path)
    for res in [res for res in results if res["method"] == "dreambooth"]:
        cell = out / "cells" / res["cell_id"]
        folder = (cell / res["lora"]).resolve().parent
        job = json.loads((cell / "manifest.json").read_text())["images"][0]
        if (folder / "adapter_config.json").is_file():
            from peft import PeftModel

            PeftModel.from_pretrained(stock.transformer, str(folder))
        else:
            stock.load_lora_weights(folder)
        image = stock(job["prompt"], num_inference_steps=2, guidance_scale=7.5, height=32, width=32, output_type="np",
                      generator=torch.Generator().manual_seed(job["noise_seed"])).images[0]
        stock.unload_lora_weights()
        ours = np.asarray(Image.open(cell / job["file"])).astype(int)
        assert np.abs(to_u8(image).astype(int) - ours).max() <= 1, res["knobs"]


@pytest.mark.parametrize("kind", ["dora", "loha", "lokr", "oft", "boft"])
def test_reference_pass_of_every_adapter_is_the_base_transformer(sd3_path, kind):
    from dcobench.adapters import add_adapter

    pipe = load_pipeline(sd3_path)
    model, family = pipe.transformer, family_of(pipe)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, model.config.in_channels, 16, 16, generator=gen)
    cond = Conditioner(pipe, 32)(["a sks toy"])
    t = torch.tensor([500.0])
    with torch.no_grad():
        base = family.forward(model, x, t, cond)
        params = add_adapter(model, TrainConfig(adapter=kind, target_modules=LORA_TARGETS), 0)
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
        assert (family.forward(model, x, t, cond) - base).abs().max() > 1e-4
        with lora_disabled(model):
            assert torch.equal(family.forward(model, x, t, cond), base)
