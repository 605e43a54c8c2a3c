"""SD3.5-Medium training step on a GPU: DreamBooth vs DCO step time and peak memory, through dcobench's trainer.

Two measurements, side by side in one process:
1. a tiny SD3 pipeline (built from configs, with T5) trained for a few steps in bf16 through
   `train_lora` on the real pipeline, to show mixed precision works on CUDA for the transformer;
2. the real-size SD3.5-Medium transformer (its published config, random weights, bf16, LoRA rank 32
   in fp32 on the attention and context projections that diffusers' SD3 script targets, 1024 px =
   128x128x16 latents, batch 1, flow matching with the logit-normal timestep density) trained by
   `train_lora` with DreamBooth and with DCO. The text conditioning is random tensors of SD3's shapes
   (CLIP-L + CLIP-G + T5 at max_sequence_length 256: 77 + 256 tokens of width 4096; pooled 2048):
   the three text encoders are frozen and cached in dcobench, so they are not part of a step.

    python benchmarks/gpu_sd3_step.py [--steps 20] [--warmup 5] [--checkpointing 0|1]

Dry run on a CPU (a small transformer with the same structure):
    DCOBENCH_BENCH_DEVICE=cpu DCOBENCH_BENCH_TINY=1 python benchmarks/gpu_sd3_step.py --steps 2 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import os

import torch
from step_timing import DEVICE, RandomCond, timed_training

from baselines.dreambooth import DreamBooth
from dcobench.config import TrainConfig
from dcobench.families.sd3 import LORA_TARGETS
from dcobench.methods.dco import DCO
from dcobench.trainer import train_lora

SD35_MEDIUM = dict(  # stabilityai/stable-diffusion-3.5-medium transformer/config.json
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64,
    num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
    pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)),
)
SD35_SCHEDULER = dict(num_train_timesteps=1000, shift=3.0)
TEXT_TOKENS = 77 + 256  # CLIP tokens, then T5 tokens at the pipeline's max_sequence_length


def real_size(objective, steps: int, warmup: int, checkpointing: bool) -> dict:
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    dev = torch.device(DEVICE)
    torch.manual_seed(0)
    with dev:
        transformer = SD3Transformer2DModel(**SD35_MEDIUM)
    transformer.to(torch.bfloat16)
    cfg_t = transformer.config
    cond = RandomCond("sd3", {"encoder_hidden_states": (TEXT_TOKENS, cfg_t.joint_attention_dim),
                              "pooled_projections": (cfg_t.pooled_projection_dim,)}, dev, torch.bfloat16)
    side = cfg_t.sample_size
    cfg = TrainConfig(steps=warmup + steps, rank=32, alpha=32.0, lr=5e-5, batch_size=1, resolution=1024,
                      mixed_precision="bf16", gradient_checkpointing=checkpointing, target_modules=LORA_TARGETS)
    out = timed_training("transformer", transformer, FlowMatchEulerDiscreteScheduler(**SD35_SCHEDULER), cond,
                         (cfg_t.in_channels, side, side), objective, cfg, steps, warmup)
    del transformer
    if DEVICE == "cuda":
        torch.cuda.empty_cache()
    return out


def tiny_sd3_bf16(steps: int = 5) -> dict:
    from dcobench.models.pipeline import Conditioner, load_pipeline
    from dcobench.models.tiny import tiny_model_path
    from dcobench.suites.base import load_subject
    from dcobench.suites.tiny import tiny_subjects_root
    from dcobench.trainer import encode_images

    pipe = load_pipeline(tiny_model_path("sd3"), DEVICE, torch.bfloat16)
    pipe.vae.to(torch.float32)
    subject = load_subject(tiny_subjects_root() / "robot")
    out = {}
    for objective in (DreamBooth(), DCO()):
        cfg = TrainConfig(steps=steps, resolution=32, mixed_precision="bf16", target_modules=LORA_TARGETS)
        report = train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject,
                            objective, cfg, 0)
        lora_dtypes = {str(p.dtype) for n, p in pipe.transformer.named_parameters() if "lora_" in n}
        out[objective.name] = {"losses": report.losses, "lora_dtype": sorted(lora_dtypes),
                               "transformer_dtype": str(pipe.transformer.dtype)}
        pipe.transformer.delete_adapters("dcobench_train")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--checkpointing", type=int, default=0)
    args = ap.parse_args()
    if os.environ.get("DCOBENCH_BENCH_TINY"):  # dry run: SD3.5-Medium's structure at toy width and size
        SD35_MEDIUM.update(sample_size=16, num_layers=3, attention_head_dim=8, num_attention_heads=2,
                           joint_attention_dim=64, caption_projection_dim=16, pooled_projection_dim=32,
                           pos_embed_max_size=16, dual_attention_layers=(0, 1))
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    print(json.dumps({"device": name, "torch": torch.__version__}))
    print(json.dumps({"tiny_sd3_bf16": tiny_sd3_bf16()}))
    rows = [real_size(o, args.steps, args.warmup, bool(args.checkpointing)) for o in (DreamBooth(), DCO())]
    for r in rows:
        print(json.dumps(r))
    mem = (f", peak memory: {rows[1]['peak_mem_gib'] / rows[0]['peak_mem_gib']:.2f}x" if rows[0]["peak_mem_gib"] else "")
    print(f"DCO / DreamBooth step time: {rows[1]['ms_per_step'] / rows[0]['ms_per_step']:.2f}x{mem}")


if __name__ == "__main__":
    main()
