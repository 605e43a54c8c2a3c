"""Real size, end to end: `dcobench run` -> sample -> score -> `dcobench report` at SDXL and
SD3.5-Medium size, and sampling against the stock diffusers pipelines, in one script (issue 22).

With no hub, everything is built here with random weights (the images mean nothing; the timings,
memory and the data flow are real, and that is what is measured):
- model folders from the published configs, saved with `save_pretrained`: SDXL base (UNet, VAE,
  CLIP-L, OpenCLIP-bigG) and SD3.5-Medium (MMDiT, 16-channel VAE, CLIP-L, CLIP-G; T5 left out, as
  docs/families.md describes);
- scorers as local weight files: open_clip ViT-L-14 (CLIP-I, CLIP-T), timm ViT-S/16 DINO and
  ViT-S/14 DINOv2 (`score.clip=openclip:ViT-L-14@FILE`, ...);
- a DreamBench-layout data folder (one subject, 4 images at 1024 px, 4 live-subject prompts).

Parts (`--parts`, default e2e,sampling,scoring), per family (`--families`, default sdxl,sd3):
  e2e       the real commands, as subprocesses: `dcobench run --suite dreambench --methods
            dco,dreambooth` (paper settings: rank 32, bf16, gradient checkpointing; a reduced sweep:
            DCO at w_con 3 under consistency guidance, DreamBooth at CFG 5; `--train-steps`), then
            `dcobench report`. Per stage from train.json / result.json: training ms/step and peak
            memory, sampling images/s and peak, scoring images/s and peak, wall time per cell.
  sampling  in one process on the e2e run's DCO LoRA: the stock pipeline called as a user calls it
            (one prompt at a time, CFG) against dcobench's sampler at batch 1 and at the run's batch,
            under CFG and consistency guidance (two denoiser calls; and one call with per-sample
            adapters), eager and `sample.compile`; images/s, the compiled path's largest pixel
            difference from the eager one, and achieved TFLOP/s of the denoiser against the
            measured bf16 matmul peak (FLOPs counted once per call shape with torch's flop counter).
  scoring   the scorer's images/s on the run's images against the sum of its encoders' own batched
            forwards on already-preprocessed tensors (the limit).
  compile   last (`--compile`, `--compile-families`): dcobench's batch rows under `sample.compile`,
            each after its one-off compile, and the compiled images' largest 8-bit difference from
            the eager ones.
The parts run across the families in that order, so a time limit cuts the least wanted ones.
Results go to `--json` (rewritten after every part, so a timeout keeps what finished); a part
that fails records its error and the next one runs.

    python benchmarks/e2e_real_size.py --json /tmp/e2e.json [--families sdxl,sd3] [--parts e2e,sampling,scoring]

At toy size on the CPU (the test, tests/test_benchmarks.py, runs this so the script cannot rot):
    DCOBENCH_BENCH_DEVICE=cpu DCOBENCH_BENCH_TINY=1 python benchmarks/e2e_real_size.py --json /tmp/e2e.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gpu_sdxl_vs_diffusers import DEVICE, GIB, TINY, sync  # the same device switch as the other GPU scripts

RES = 32 if TINY else 1024
PROMPTS = ["a {0} {1} in the jungle", "a {0} {1} in the snow", "a {0} {1} on the beach",
           "a {0} {1} on a cobblestone street"]


def peak_gib() -> float | None:
    return round(torch.cuda.max_memory_allocated() / GIB, 2) if DEVICE == "cuda" else None


# ---------------------------------------------------------------- building the world
def build_sd35_medium():
    """StableDiffusion3Pipeline of SD3.5-Medium's configs, random weights, no T5."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from gpu_sd3_step import SD35_MEDIUM, SD35_SCHEDULER
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from dcobench.models.tokenizer import offline_clip_tokenizer

    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                  pad_token_id=49407)
    torch.manual_seed(0)
    with torch.device(DEVICE):
        transformer = SD3Transformer2DModel(**SD35_MEDIUM)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                            layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, use_quant_conv=False,
                            use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305)
        te1 = CLIPTextModelWithProjection(CLIPTextConfig(**common, hidden_size=768, intermediate_size=3072,
                                                         num_hidden_layers=12, num_attention_heads=12,
                                                         projection_dim=768, hidden_act="quick_gelu"))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, hidden_size=1280, intermediate_size=5120,
                                                         num_hidden_layers=32, num_attention_heads=20,
                                                         projection_dim=1280, hidden_act="gelu"))
    for m in (transformer, te1, te2):
        m.to(torch.bfloat16)
    tok = offline_clip_tokenizer(77)
    return StableDiffusion3Pipeline(transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(**SD35_SCHEDULER),
                                    vae=vae, text_encoder=te1, tokenizer=tok, text_encoder_2=te2, tokenizer_2=tok,
                                    text_encoder_3=None, tokenizer_3=None)


def build_model(family: str, root: Path) -> Path:
    folder = root / f"model-{family}"
    if (folder / "model_index.json").is_file():
        return folder
    if TINY:
        from dcobench.models.tiny import build_tiny_sd3, build_tiny_sdxl

        pipe = build_tiny_sdxl() if family == "sdxl" else build_tiny_sd3(t5=False)
    elif family == "sdxl":
        from gpu_sdxl_vs_diffusers import build_sdxl

        pipe = build_sdxl()
    else:
        pipe = build_sd35_medium()
    pipe.save_pretrained(folder)
    del pipe
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return folder


def build_scorers(root: Path) -> dict:
    """Score config overrides: real-size encoders saved as local weight files (tiny ones at toy size)."""
    import timm

    out = {}
    vits = {"dino": ("vit_tiny_patch16_224" if TINY else "vit_small_patch16_224.dino"),
            "dinov2": ("vit_tiny_patch16_224" if TINY else "vit_small_patch14_dinov2.lvd142m")}
    for key, arch in vits.items():
        path = root / f"{key}.pth"
        if not path.is_file():
            torch.manual_seed(0)
            torch.save(timm.create_model(arch, pretrained=False, num_classes=0).state_dict(), path)
        out[key] = f"timm:{arch}@{path}"
    if TINY:
        out["clip"] = "tiny-clip"
    else:
        import open_clip

        path = root / "clip-vit-l-14.bin"
        if not path.is_file():
            torch.manual_seed(0)
            torch.save(open_clip.create_model("ViT-L-14", pretrained=None).state_dict(), path)
        out["clip"] = f"openclip:ViT-L-14@{path}"
    return out


def build_data(root: Path) -> Path:
    from PIL import Image

    data = root / "dreambooth"
    subject = data / "dataset" / "e2e_dog"
    if subject.is_dir():
        return data
    subject.mkdir(parents=True)
    prompts = "\n".join(f"'{p}'.format(unique_token, class_token)," for p in PROMPTS)
    (data / "dataset" / "prompts_and_classes.txt").write_text(
        f"Classes\nsubject_name,class\ne2e_dog,dog\n\nPrompts\n\nObject Prompts\nprompt_list = [\n{prompts}\n]\n\n"
        f"Live Subject Prompts\nprompt_list = [\n{prompts}\n]\n")
    yy, xx = np.mgrid[0:RES, 0:RES] / RES
    for i in range(4):  # smooth, distinct images (JPEG as in DreamBench)
        img = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy) + 2 * i)], -1)
        Image.fromarray(((img + 1) * 127.5).astype(np.uint8)).save(subject / f"{i:02d}.jpg", quality=95)
    return data


# ---------------------------------------------------------------- part 1: the real commands
def run_config(root: Path, scorers: dict, steps: int) -> Path:
    import yaml

    cfg = {
        "device": DEVICE,
        "methods": {"dco": {"beta": 1000.0, "sweep": {"sample.w_con": [3.0]}},
                    "dreambooth": {"sweep": {"sample.cfg_scale": [5.0]}}},
        "train": {"rank": 32, "alpha": 32.0, "lr": 5.0e-5, "steps": steps, "batch_size": 1,
                  "mixed_precision": "no" if DEVICE == "cpu" else "bf16", "gradient_checkpointing": not TINY},
        "sample": {"steps": 4 if TINY else 10, "seeds": [0], "images_per_prompt": 2, "batch_size": 8, "w_text": 7.5},
        "score": {"metrics": ["dino", "dinov2", "clip_i", "clip_t"], **scorers},
    }
    path = root / "e2e.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def dcobench(*args) -> float:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dcobench", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"dcobench {' '.join(map(str, args))} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return round(time.perf_counter() - start, 1)


def e2e(family: str, model: Path, data: Path, config: Path, out: Path) -> dict:
    run_s = dcobench("run", "--suite", "dreambench", "--data", data, "--model", model, "--methods", "dco,dreambooth",
                     "--config", config, "--out", out, "--quiet")
    report_s = dcobench("report", out)
    rows = []
    for res_path in sorted(out.glob("cells/*/result.json")):
        res = json.loads(res_path.read_text())
        train = json.loads((out / "loras" / res["train_id"] / "train.json").read_text())
        timing, n = res["timing"], len(res["images"])
        rows.append({
            "method": res["method"], "guidance": res["guidance"]["mode"], "images": n,
            # the median step (cost.step_s leaves out the first, warm-up step); the mean over all steps beside it
            "train_ms_step": round(1000 * ((train.get("cost") or {}).get("step_s") or train["seconds"] / train["steps"]), 1),
            "train_ms_step_mean": round(1000 * train["seconds"] / train["steps"], 1), "train_steps": train["steps"],
            "train_peak_gib": _gib(train.get("cost", {}).get("peak_mb")),
            "sample_img_s": round(n / timing["sample_s"], 3), "sample_peak_gib": _gib(timing.get("sample_peak_mb")),
            "score_img_s": round(n / timing["score_s"], 3) if timing.get("score_s") else None,
            "score_peak_gib": _gib(timing.get("score_peak_mb")),
            "cell_wall_s": round(timing["train_s"] + timing["sample_s"] + timing.get("score_s", 0.0), 1),
            "metrics": sorted(res["metrics"]),
        })
    assert (out / "report" / "summary.csv").is_file(), "dcobench report wrote no summary.csv"
    return {"family": family, "run_s": run_s, "report_s": report_s, "cells": rows}


def _gib(mb):
    return round(mb / 1024, 2) if mb else None


# ---------------------------------------------------------------- part 2: sampling
def timed(fn, reps: int) -> float:
    fn()  # warm-up (and compilation)
    sync()
    start = time.perf_counter()
    for _ in range(reps):
        out = fn()
    sync()
    timed.last = out
    return (time.perf_counter() - start) / reps


def sampling(model: Path, lora: Path, batch: int, steps: int, reps: int, compile_guidance: list[str]) -> dict:
    """The eager rows (stock pipeline, dcobench's CFG and consistency guidance at batch 1 and
    `batch`), or with `compile_guidance` dcobench's batch rows eager and under `sample.compile`."""
    import dataclasses

    from guidance import BatchedSampler

    from dcobench import adapters
    from dcobench.config import SampleConfig
    from dcobench.models.pipeline import Conditioner, load_pipeline
    from dcobench.sampling import GuidedSampler, ImageJob

    dtype = torch.float32 if DEVICE == "cpu" else torch.bfloat16
    # the VAE stays in the pipeline's dtype here (the runner upcasts it to fp32): the stock pipelines
    # decode bf16 latents with it as loaded, and both sides must decode alike
    pipe = load_pipeline(model, DEVICE, dtype)
    if lora is None:  # no run in this session: a trained-size LoRA with random B, saved and loaded back
        lora = random_lora(pipe, Path(tempfile.mkdtemp(prefix="dcobench-e2e-lora-")))
    adapters.load(pipe, lora)
    cond = Conditioner(pipe, RES)
    n_one = 2  # images of the batch-1 rows
    prompts = [p.format("sks", "dog") for p in PROMPTS]
    jobs = [ImageJob(prompts[i % 4], prompts[i % 4].replace("sks ", ""), i % 4, 0, i // 4) for i in range(batch)]
    cfg = SampleConfig(steps=steps, seeds=[0], batch_size=batch, cfg_scale=5.0, w_text=7.5, w_con=3.0)
    rows, images = [], {}

    def row(name, seconds, n, flops=None):
        """`flops`: of one guided step of the whole batch (n = batch here); the VAE decode is in
        `seconds` but not in the FLOPs, so the TFLOP/s are a lower bound for the denoiser."""
        r = {"side": name, "images": n, "img_s": round(n / seconds, 3), "s_per_image": round(seconds / n, 3)}
        if flops:
            r["tflops"] = round(flops * steps / seconds / 1e12, 2)
        rows.append(r)
        print(json.dumps(r), flush=True)

    # the stock pipeline, as a user calls it: one prompt (and image) at a time, its own CFG
    def stock():
        out = []
        for j in jobs[:n_one]:
            out.append(pipe(prompt=j.prompt, num_inference_steps=steps, guidance_scale=cfg.cfg_scale, height=RES,
                            width=RES, generator=torch.Generator().manual_seed(j.noise_seed), output_type="np").images[0])
        return out

    sampler, batched = GuidedSampler(pipe, cond, RES), BatchedSampler(pipe, cond, RES)

    def ours(s, guidance, c, n):
        return lambda: s.sample(jobs[:n], c, guidance)

    one = dataclasses.replace(cfg, batch_size=1)
    flops = {g: _denoiser_flops(sampler, cfg, g, jobs) for g in ("cfg", "consistency")}
    if not compile_guidance:  # the eager comparison
        row("stock pipeline, CFG, batch 1", timed(stock, reps), n_one)
        row("dcobench, CFG, batch 1", timed(ours(sampler, "cfg", one, n_one), reps), n_one)
    row(f"dcobench, CFG, batch {batch}", timed(ours(sampler, "cfg", cfg, batch), reps), batch, flops["cfg"])
    images["eager"] = timed.last
    if not compile_guidance:
        row("dcobench, consistency, batch 1", timed(ours(sampler, "consistency", one, n_one), reps), n_one)
        row(f"dcobench, consistency (2 calls), batch {batch}", timed(ours(sampler, "consistency", cfg, batch), reps),
            batch, flops["consistency"])
        row(f"dcobench, consistency (1 call, per-sample adapters), batch {batch}",
            timed(ours(batched, "consistency", cfg, batch), reps), batch, flops["consistency"])
    compiled, diff = dataclasses.replace(cfg, compile=True), None
    for guidance in compile_guidance:  # the warm-up call of each compiles its graphs
        start = time.perf_counter()
        row(f"dcobench, {guidance}, sample.compile, batch {batch}", timed(ours(sampler, guidance, compiled, batch), reps),
            batch, flops[guidance])
        rows[-1]["compile_and_timed_s"] = round(time.perf_counter() - start, 1)
        if guidance == "cfg":
            diff = max(int(np.abs(a.astype(int) - b.astype(int)).max()) for a, b in zip(images["eager"], timed.last))
    return {"steps": steps, "resolution": RES, "batch": batch, "rows": rows,
            "compile_max_pixel_diff": diff, "peak_gib": peak_gib()}


def random_lora(pipe, folder: Path) -> Path:
    from dcobench.families import family_of
    from dcobench.lora import add_lora, remove_training_adapter, save_lora

    family = family_of(pipe)
    model = family.denoiser(pipe)
    params = add_lora(model, 32, 32.0, list(family.lora_targets or ["to_q", "to_k", "to_v", "to_out.0"]), 0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.01)
    save_lora(pipe, folder)
    remove_training_adapter(model)
    return folder


def _denoiser_flops(sampler, cfg, guidance: str, jobs) -> int:
    """FLOPs of one guided denoising step of a batch (every denoiser call of that step)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = sampler.cond.denoiser
    size = sampler.resolution // sampler.vae_scale
    x = torch.randn(cfg.batch_size, model.config.in_channels, size, size, device=model.device, dtype=model.dtype)
    t = torch.tensor(500, device=model.device)
    prompts = [j.prompt for j in jobs[: cfg.batch_size]]
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        sampler.guided_eps(x, t, prompts, [j.base_prompt for j in jobs[: cfg.batch_size]], cfg, guidance)
    return counter.get_total_flops()


# ---------------------------------------------------------------- part 3: scoring
def scoring(run: Path, scorers: dict, reps: int) -> dict:
    from PIL import Image

    from dcobench.config import ScoreConfig
    from dcobench.scoring import Scorer

    cell = sorted(run.glob("cells/*/result.json"))[0].parent
    result = json.loads((cell / "result.json").read_text())
    manifest = json.loads((cell / "manifest.json").read_text())
    scorer = Scorer(ScoreConfig(metrics=["dino", "dinov2", "clip_i", "clip_t"], **scorers), DEVICE)
    n = len(manifest["images"])
    full = timed(lambda: scorer.score_cell(cell, dict(result), manifest), reps)
    limit = 0.0
    for role in ("dino", "dinov2", "clip"):
        bb = scorer.backbone(role)
        # the images already preprocessed: what is left is the encoder's own batched forward
        x = torch.stack([bb.transform(Image.open(cell / m["file"]).convert("RGB")) for m in manifest["images"]])

        def forward(bb=bb, x=x):
            with torch.no_grad():
                return bb._image(x.to(bb.device))

        limit += timed(forward, reps)
        if role == "clip" and hasattr(bb, "embed_texts"):
            limit += timed(lambda bb=bb: bb.embed_texts([m["prompt"] for m in manifest["images"]]), reps)
    return {"images": n, "scorer_img_s": round(n / full, 2), "encoders_img_s": round(n / limit, 2),
            "ratio": round(limit / full, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", required=True, help="results file, rewritten after every part")
    ap.add_argument("--families", default="sdxl,sd3")
    ap.add_argument("--parts", default="e2e,sampling,scoring")
    ap.add_argument("--root", default=None, help="work folder (models, data, runs); default a new temporary one")
    ap.add_argument("--train-steps", type=int, default=2 if TINY else 10)
    ap.add_argument("--sample-steps", type=int, default=3 if TINY else 10, help="denoising steps of the sampling part")
    ap.add_argument("--batch", type=int, default=8, help="dcobench's batch in the sampling part (the run's sample.batch_size)")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--compile", default="cfg,consistency", help="guidances timed under sample.compile, last, "
                                                                 "each after its compile; '' for none")
    ap.add_argument("--compile-families", default="sdxl,sd3", help="the families the compiled rows are timed on")
    args = ap.parse_args()
    root = Path(args.root or tempfile.mkdtemp(prefix="dcobench-e2e-"))
    root.mkdir(parents=True, exist_ok=True)
    results = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "tiny": TINY,
               "torch": torch.__version__, "command": " ".join(sys.argv), "parts": {}}
    if DEVICE == "cuda":
        from gpu_sdxl_vs_diffusers import matmul_peak_tflops

        results["bf16_matmul_peak_tflops"] = matmul_peak_tflops()

    def save():
        Path(args.json).write_text(json.dumps(results, indent=1))

    parts = args.parts.split(",")
    data = build_data(root)
    scorers = build_scorers(root)
    config = run_config(root, scorers, args.train_steps)
    failed = False

    def part(key, fn, *a):
        """One part; a failure is recorded with its message and the next part still runs (a GPU
        session is one try: what works comes back)."""
        nonlocal failed
        start = time.perf_counter()
        try:
            results["parts"][key] = fn(*a)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - recorded, and the exit status says so
            failed = True
            results["parts"][key] = {"error": f"{type(e).__name__}: {str(e)[-2000:]}"}
            print(f"{key} failed: {results['parts'][key]['error']}", file=sys.stderr, flush=True)
        results["parts"][key + "/wall_s"] = round(time.perf_counter() - start, 1)
        save()

    def dco_lora(run):
        """The run's DCO LoRA, or None (a random one) when this session ran no e2e part."""
        return next((p.parent for p in run.glob("loras/*/train.json")
                     if json.loads(p.read_text())["config"]["method"] == "dco"), None)

    families = args.families.split(",")
    models: dict[str, Path] = {}

    def model(family):
        if family not in models:
            start = time.perf_counter()
            models[family] = build_model(family, root)
            results["parts"][f"{family}/build_s"] = round(time.perf_counter() - start, 1)
        return models[family]

    # part by part across the families, most wanted first: a timeout cuts the tail only
    for family in families if "e2e" in parts else []:
        part(f"{family}/e2e", e2e, family, model(family), data, config, root / f"run-{family}")
    for family in families if "sampling" in parts else []:
        part(f"{family}/sampling", lambda: sampling(model(family), dco_lora(root / f"run-{family}"), args.batch,
                                                    args.sample_steps, args.reps, []))
    if "scoring" in parts:
        part("scoring", scoring, root / f"run-{families[0]}", scorers, args.reps)
    for family in args.compile_families.split(",") if args.compile else []:
        part(f"{family}/compile", lambda: sampling(model(family), dco_lora(root / f"run-{family}"), args.batch,
                                                   args.sample_steps, args.reps, args.compile.split(",")))
    print(json.dumps(results, indent=1))
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main()
