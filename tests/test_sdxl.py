"""SDXL: dual text encoders, pooled embeddings and time ids in training, the reference pass and guidance."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.dreambooth import DreamBooth
from dcobench.config import SampleConfig, TrainConfig
from dcobench.lora import load_lora, remove_training_adapter, save_lora
from dcobench.methods.dco import DCO
from dcobench.families import family_of
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.sampling import GuidedSampler, grid_jobs
from dcobench.trainer import encode_images, train_lora

REAL = Path(__file__).resolve().parents[2] / "shared" / "dreambench" / "prompts_and_classes.txt"


@pytest.fixture(scope="module")
def sdxl_path(dcobench_cache):
    from dcobench.models.tiny import tiny_model_path

    return tiny_model_path("sdxl")


def stock_sdxl(path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def to_u8(x):
    return (x * 255).round().astype(np.uint8)


def test_sdxl_conditioning_has_pooled_embeds_and_time_ids(sdxl_path):
    pipe = load_pipeline(sdxl_path)
    assert family_of(pipe).name == "sdxl"
    c = Conditioner(pipe, 32)(["a sks toy", ""])
    assert c["encoder_hidden_states"].shape[-1] == 64 and c["text_embeds"].shape == (2, 32)
    assert c["time_ids"].tolist()[0] == [32, 32, 0, 0, 32, 32]
    assert torch.count_nonzero(c["encoder_hidden_states"][1]) == 0  # stock SDXL: zeros for the empty prompt


@pytest.mark.parametrize("objective", [DCO(), DreamBooth()], ids=["dco", "dreambooth"])
def test_sdxl_lora_trains_and_loads_into_a_stock_pipeline(sdxl_path, tiny_suite, tmp_path, objective):
    pipe = load_pipeline(sdxl_path)
    subject = tiny_suite.subjects[0]
    cond = Conditioner(pipe, 32)
    report = train_lora(pipe, cond, encode_images(pipe.vae, subject.images, 32), subject, objective,
                        TrainConfig(steps=4, lr=5e-2, resolution=32), 0)
    assert all(np.isfinite(report.losses))
    save_lora(pipe, tmp_path)
    remove_training_adapter(pipe.unet)
    load_lora(pipe, tmp_path)
    cfg = SampleConfig(steps=3, seeds=[1], cfg_scale=4.0)
    prompt = subject.prompts[0]
    jobs = grid_jobs([prompt], [subject.base(prompt)], cfg)
    ours = GuidedSampler(pipe, cond, 32).sample(jobs, cfg, "cfg")[0]

    stock = stock_sdxl(sdxl_path)
    gen = lambda: to_u8(stock(prompt, num_inference_steps=3, guidance_scale=4.0, height=32, width=32,  # noqa: E731
                              generator=torch.Generator().manual_seed(jobs[0].noise_seed), output_type="np").images[0])
    base = gen()
    stock.load_lora_weights(tmp_path)
    with_lora = gen()
    assert np.abs(with_lora.astype(int) - base.astype(int)).max() > 0
    assert np.abs(with_lora.astype(int) - ours.astype(int)).max() <= 1


def test_sdxl_consistency_guidance_at_wcon_zero_is_stock_cfg(sdxl_path, tiny_suite, tmp_path):
    pipe = load_pipeline(sdxl_path)
    subject = tiny_suite.subjects[0]
    cond = Conditioner(pipe, 32)
    train_lora(pipe, cond, encode_images(pipe.vae, subject.images, 32), subject, DreamBooth(),
               TrainConfig(steps=3, lr=5e-2, resolution=32), 0)
    save_lora(pipe, tmp_path)
    remove_training_adapter(pipe.unet)
    load_lora(pipe, tmp_path)
    cfg = SampleConfig(steps=3, seeds=[0, 1], w_text=5.0, w_con=0.0)
    prompts = subject.prompts[:2]
    jobs = grid_jobs(prompts, [subject.base(p) for p in prompts], cfg)
    ours = GuidedSampler(pipe, cond, 32).sample(jobs, cfg, "consistency")
    stock = stock_sdxl(sdxl_path)
    out = stock([j.base_prompt for j in jobs], num_inference_steps=3, guidance_scale=5.0, height=32, width=32,
                generator=[torch.Generator().manual_seed(j.noise_seed) for j in jobs], output_type="np").images
    for a, b in zip(ours, out):
        assert np.abs(a.astype(int) - to_u8(b).astype(int)).max() <= 1


@pytest.mark.slow
def test_dreambench_run_on_tiny_sdxl_end_to_end(sdxl_path, tiny_suite, tmp_path, cli):
    if not REAL.is_file():
        pytest.skip("the shared DreamBench prompts file is not beside this checkout")
    from PIL import Image

    root = tmp_path / "dreambooth" / "dataset"
    (root / "dog").mkdir(parents=True)
    shutil.copy(REAL, root / "prompts_and_classes.txt")
    for i, src in enumerate(tiny_suite.subjects[0].images):
        Image.open(src).convert("RGB").save(root / "dog" / f"{i:02d}.jpg")
    out = tmp_path / "run"
    r = cli("run", "--suite", "dreambench", "--data", root.parent, "--model", sdxl_path,
            "--methods", "dco,dreambooth,dreambooth_pp", "--out", out, "--quiet", "train.steps=2", "sample.steps=2",
            "sample.prompt_indices=[0]", "sample.images_per_prompt=1", "methods.dreambooth_pp.num_class_images=2",
            "train.train_token=true", "score.clip=tiny-clip", "score.dino=tiny-dino")
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    assert sorted(res["method"] for res in results) == ["dco", "dreambooth", "dreambooth_pp"]
    assert all("clip_t" in res["metrics"] for res in results)
    r = cli("report", out)
    assert r.returncode == 0 and (out / "report" / "summary.csv").is_file(), r.stderr


NON_LORA = ["dora", "loha", "lokr", "oft", "boft"]


def load_stock_adapter(stock, folder):
    """Where docs/adapters.md says each kind loads: DoRA with load_lora_weights, the others with peft."""
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        PeftModel.from_pretrained(stock.unet if hasattr(stock, "unet") else stock.transformer, str(folder))
    else:
        stock.load_lora_weights(folder)


def test_every_adapter_runs_on_sdxl_and_its_file_reproduces_the_run_in_a_stock_pipeline(sdxl_path, tmp_path, cli):
    """`dcobench run --methods dco,dreambooth` with train.adapter swept over every other kind: each trains
    (DCO's reference pass included), samples from its file and scores; the stock pipeline with that file
    loaded draws the run's own CFG images."""
    from PIL import Image

    out = tmp_path / "run"
    sweep = "{train.adapter: [" + ", ".join(NON_LORA) + "]}"
    r = cli("run", "--suite", "tiny", "--model", sdxl_path, "--methods", "dco,dreambooth", "--out", out, "--quiet",
            "subjects=[robot]", "train.steps=2", "train.lr=5e-2", "sample.steps=2", "sample.seeds=[0]",
            "sample.max_prompts=1", "score.clip=tiny-clip", "score.dino=tiny-dino",
            f"methods.dco.sweep={sweep}", f"methods.dreambooth.sweep={sweep}")
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    assert sorted((res["method"], res["knobs"]["train.adapter"]) for res in results) == \
        sorted((m, k) for m in ("dco", "dreambooth") for k in NON_LORA)
    stock = stock_sdxl(sdxl_path)
    for res in results:
        info = json.loads((out / "loras" / res["train_id"] / "train.json").read_text())
        assert info["cost"]["adapter"] == res["knobs"]["train.adapter"] and info["cost"]["trainable_params"] > 0
        if res["method"] != "dreambooth":
            continue
        cell = out / "cells" / res["cell_id"]
        job = json.loads((cell / "manifest.json").read_text())["images"][0]
        load_stock_adapter(stock, (cell / res["lora"]).resolve().parent)
        image = stock(job["prompt"], num_inference_steps=2, guidance_scale=7.5, height=32, width=32, output_type="np",
                      generator=torch.Generator().manual_seed(job["noise_seed"])).images[0]
        stock.unload_lora_weights()
        ours = np.asarray(Image.open(cell / job["file"])).astype(int)
        assert np.abs(to_u8(image).astype(int) - ours).max() <= 1, res["knobs"]
