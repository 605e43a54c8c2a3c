"""SDXL training step on a GPU: DreamBooth vs DCO step time and peak memory, through dcobench's trainer.

Two measurements, side by side in one process:
1. a tiny SDXL pipeline (built from configs) trained for a few steps in bf16 through `dcobench run`'s
   own code path (`train_lora` on the real pipeline), to show mixed precision works on CUDA;
2. a real-size SDXL UNet (the published SDXL-base config, random weights, bf16, LoRA rank 32 on
   to_q/to_k/to_v/to_out.0 kept in fp32, 1024 px = 128x128 latents, batch 1) trained by `train_lora`
   with DreamBooth and with DCO; the text conditioning is random tensors of SDXL's shapes (the two text
   encoders are frozen and cached in dcobench, so they are not part of a step).

    python benchmarks/gpu_sdxl_step.py [--steps 20] [--warmup 5] [--checkpointing 0|1]
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from step_timing import DEVICE, RandomCond, timed_training

from baselines.dreambooth import DreamBooth
from dcobench.config import TrainConfig
from dcobench.methods.dco import DCO
from dcobench.trainer import train_lora

SDXL_UNET = dict(
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    block_out_channels=(320, 640, 1280), transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20),
    cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816,
)


def real_size(objective, steps: int, warmup: int, checkpointing: bool) -> dict:
    from diffusers import DDPMScheduler, UNet2DConditionModel

    dev = torch.device(DEVICE)
    torch.manual_seed(0)
    with dev:
        unet = UNet2DConditionModel(**SDXL_UNET)
    unet.to(torch.bfloat16)
    sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    # SDXL-shaped conditioning: what the cached text encoders would return
    cond = RandomCond("sdxl", {"encoder_hidden_states": (77, 2048), "text_embeds": (1280,)}, dev, torch.bfloat16,
                      fixed={"time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]])})
    cfg = TrainConfig(steps=warmup + steps, rank=32, alpha=32.0, lr=5e-5, batch_size=1, resolution=1024,
                      mixed_precision="bf16", gradient_checkpointing=checkpointing)
    out = timed_training("unet", unet, sched, cond, (4, 128, 128), objective, cfg, steps, warmup)
    out["unet_params"] = out.pop("params") + out.pop("lora_params")  # as first recorded: LoRA included
    del unet
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return out


def tiny_sdxl_bf16(steps: int = 5) -> dict:
    from dcobench.models.pipeline import Conditioner, load_pipeline
    from dcobench.models.tiny import tiny_model_path
    from dcobench.suites.base import load_subject
    from dcobench.suites.tiny import tiny_subjects_root
    from dcobench.trainer import encode_images

    pipe = load_pipeline(tiny_model_path("sdxl"), DEVICE, torch.bfloat16)
    pipe.vae.to(torch.float32)
    subject = load_subject(tiny_subjects_root() / "robot")
    out = {}
    for objective in (DreamBooth(), DCO()):
        report = train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject,
                            objective, TrainConfig(steps=steps, resolution=32, mixed_precision="bf16"), 0)
        lora_dtypes = {str(p.dtype) for n, p in pipe.unet.named_parameters() if "lora_" in n}
        out[objective.name] = {"losses": report.losses, "lora_dtype": sorted(lora_dtypes),
                               "unet_dtype": str(pipe.unet.dtype)}
        pipe.unet.delete_adapters("dcobench_train")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--checkpointing", type=int, default=0)
    args = ap.parse_args()
    if os.environ.get("DCOBENCH_BENCH_TINY_UNET"):  # dry run: a small UNet with SDXL's structure
        SDXL_UNET.update(block_out_channels=(32, 64, 64), attention_head_dim=(2, 2, 2), transformer_layers_per_block=(1, 1, 1),
                         cross_attention_dim=2048, sample_size=16, norm_num_groups=8)
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__}))
    print(json.dumps({"tiny_sdxl_bf16": tiny_sdxl_bf16()}))
    rows = [real_size(o, args.steps, args.warmup, bool(args.checkpointing)) for o in (DreamBooth(), DCO())]
    for r in rows:
        print(json.dumps(r))
    mem = (f", peak memory: {rows[1]['peak_mem_gib'] / rows[0]['peak_mem_gib']:.2f}x" if rows[0]["peak_mem_gib"] else "")
    print(f"DCO / DreamBooth step time: {rows[1]['ms_per_step'] / rows[0]['ms_per_step']:.2f}x{mem}")


if __name__ == "__main__":
    main()
