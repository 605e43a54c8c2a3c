"""SDXL at 1024 px on a GPU: dcobench's training step against the diffusers example's
(`diffusers_loop.py`), with and without gradient checkpointing and `train.compile`.

A real-size SDXL pipeline is built from the published configs with random weights (a step's cost
does not depend on them): the SDXL-base UNet, the SDXL VAE, CLIP-L and OpenCLIP-bigG text encoders
(with the offline CLIP tokenizer); UNet and text encoders in bf16, the VAE in fp32 (as dcobench's
runner and the SDXL example keep it), LoRA rank 32 (alpha 32) on to_q/to_k/to_v/to_out.0 in fp32,
batch 1, AdamW. Four 1024 px reference images with per-image captions.

Configurations (`--configs`, default all):
  example, example-gc                    the example's per-step work, without / with checkpointing
  dreambooth, dreambooth-gc, dco, dco-gc dcobench's `train_lora`, without / with checkpointing
  dreambooth-compile, dco-compile, dco-gc-compile   the same with `train.compile`
Each runs `--warmup` steps (compilation included) and then `--steps` timed steps; peak GPU memory
is `torch.cuda.max_memory_allocated` over the timed steps. Rounds alternate the configurations;
medians. FLOPs per step are counted once per configuration with `torch.utils.flop_counter` on an
eager step; achieved TFLOP/s = FLOPs / time per step, against the device's measured bf16 matmul
peak (8192^3 matmuls). Goals: dcobench <= 0.75x the example's time; DCO <= 1.55x DreamBooth
(issue 14, item 2); DCO with gradient checkpointing <= 24 GiB; >= 40% of the measured peak.

    python benchmarks/gpu_sdxl_vs_diffusers.py [--configs ...] [--steps 10] [--warmup 5] [--rounds 2]

Dry run at toy size on the CPU (checks the script end to end; its timings mean nothing):
    DCOBENCH_BENCH_DEVICE=cpu DCOBENCH_BENCH_TINY=1 python benchmarks/gpu_sdxl_vs_diffusers.py \\
        --configs example,dreambooth,dco,dco-gc --steps 2 --warmup 1 --rounds 1 --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from common import command, median, record, table, today

DEVICE = os.environ.get("DCOBENCH_BENCH_DEVICE", "cuda")
TINY = bool(os.environ.get("DCOBENCH_BENCH_TINY"))
RES = 64 if TINY else 1024
CONFIGS = ["example", "example-gc", "dreambooth", "dreambooth-gc", "dco", "dco-gc", "dreambooth-compile",
           "dco-compile", "dco-gc-compile"]
RANK = 32
GIB = 2**30


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def build_sdxl():
    """StableDiffusionXLPipeline of SDXL-base's configs, random weights."""
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from gpu_sdxl_step import SDXL_UNET
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dcobench.models.tokenizer import offline_clip_tokenizer

    unet_cfg, vae_cfg = dict(SDXL_UNET), dict(
        in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024,
        scaling_factor=0.13025, force_upcast=True)
    clip_l = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  projection_dim=768, hidden_act="quick_gelu")
    clip_g = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=20,
                  projection_dim=1280, hidden_act="gelu")
    if TINY:  # SDXL's structure at toy width
        unet_cfg.update(block_out_channels=(32, 64, 64), attention_head_dim=(2, 2, 2),
                        transformer_layers_per_block=(1, 1, 1), cross_attention_dim=64,
                        projection_class_embeddings_input_dim=32 + 6 * 256, sample_size=8, norm_num_groups=8)
        vae_cfg.update(block_out_channels=(16, 32), down_block_types=("DownEncoderBlock2D",) * 2,
                       up_block_types=("UpDecoderBlock2D",) * 2, layers_per_block=1, norm_num_groups=8, sample_size=64,
                       mid_block_add_attention=False)
        toy = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, projection_dim=32)
        clip_l.update(toy)
        clip_g.update(toy)
    common = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                  pad_token_id=49407)
    dev = torch.device(DEVICE)
    torch.manual_seed(0)
    with dev:
        unet = UNet2DConditionModel(**unet_cfg)
        vae = AutoencoderKL(**vae_cfg)
        te1 = CLIPTextModel(CLIPTextConfig(**common, **clip_l))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig(**common, **clip_g))
    tok = offline_clip_tokenizer(77)
    sched = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                   timestep_spacing="leading", steps_offset=1)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok, tokenizer_2=tok,
                                     unet=unet, scheduler=sched)
    pipe.set_progress_bar_config(disable=True)
    dtype = torch.float32 if (TINY and DEVICE == "cpu") else torch.bfloat16
    for m in (unet, te1, te2):
        m.to(dtype)
    return pipe


def make_subject(root: Path):
    import numpy as np
    from PIL import Image

    from dcobench.suites.base import load_subject

    folder = root / "subject"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (RES, RES, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"a photo of sks dog, view {i}")
    return load_subject(folder, class_noun="dog", identifier="sks")


class Bench:
    def __init__(self):
        from dcobench.models.pipeline import Conditioner
        from dcobench.trainer import encode_images

        self.pipe = build_sdxl()
        self.subject = make_subject(Path(tempfile.mkdtemp(prefix="dcobench-gpu-bench-")))
        self.cond = Conditioner(self.pipe, RES)
        self.latents = encode_images(self.pipe.vae, self.subject.images, RES)
        self.losses: dict[str, list[float]] = {}
        self.batch = 1  # dcobench's configurations only (`--batch`); the example loop stays at 1

    def train_cfg(self, steps: int, name: str):
        from dcobench.config import TrainConfig

        return TrainConfig(steps=steps, rank=RANK, alpha=float(RANK), lr=1e-4, batch_size=self.batch, resolution=RES,
                           mixed_precision="bf16", gradient_checkpointing="-gc" in name, compile="compile" in name)

    def run(self, name: str, steps: int, warmup: int) -> dict:
        """Train one fresh LoRA of configuration `name`; time its last `steps` steps."""
        marks, total = {}, warmup + steps

        def mark(i: int):
            if i + 1 == warmup:
                sync()
                if DEVICE == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                marks["t0"] = time.perf_counter()
            if i + 1 == total:
                sync()
                marks["t1"] = time.perf_counter()

        if name.startswith("example"):
            from diffusers_loop import ExampleLoop

            loop = ExampleLoop(self.pipe, self.subject, RANK, float(RANK), ["to_q", "to_k", "to_v", "to_out.0"], 1e-4,
                               1, RES, 0, gradient_checkpointing="-gc" in name)
            losses = []
            for i in range(total):
                losses.append(loop.step())
                mark(i)
            loop.close()
        else:
            losses = self._dcobench(name, total, lambda i, logs: mark(i))
        self.losses[name] = losses
        peak = torch.cuda.max_memory_allocated() / GIB if DEVICE == "cuda" else None
        return {"ms": 1000 * (marks["t1"] - marks["t0"]) / steps, "peak_gib": peak}

    def _dcobench(self, name: str, steps: int, on_step) -> list[float]:
        from baselines.dreambooth import DreamBooth
        from dcobench.lora import remove_training_adapter
        from dcobench.methods.dco import DCO
        from dcobench.trainer import train_lora

        objective = DCO() if name.startswith("dco") else DreamBooth()
        report = train_lora(self.pipe, self.cond, self.latents, self.subject, objective, self.train_cfg(steps, name),
                            0, on_step=on_step)
        remove_training_adapter(self.pipe.unet)
        return report.losses

    def flops(self, name: str) -> int:
        """FLOPs of one eager training step of `name` (forward, backward, optimizer)."""
        from torch.utils.flop_counter import FlopCounterMode

        eager = name.replace("-compile", "")
        counter = FlopCounterMode(display=False)
        if eager.startswith("example"):
            from diffusers_loop import ExampleLoop

            loop = ExampleLoop(self.pipe, self.subject, RANK, float(RANK), ["to_q", "to_k", "to_v", "to_out.0"], 1e-4,
                               1, RES, 0, gradient_checkpointing="-gc" in eager)
            with counter:
                loop.step()
            loop.close()
        else:
            with counter:
                self._dcobench(eager, 1, None)
        return counter.get_total_flops()


def matmul_peak_tflops(n: int = 8192, reps: int = 20) -> float | None:
    if DEVICE != "cuda":
        return None
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    best = 0.0
    for _ in range(3):
        a @ b
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start) / 1e12)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1, help="dcobench's training batch (the example stays at 1)")
    ap.add_argument("--profile", default="", help="CONFIG[,CONFIG]: instead of timing, profile --steps steps of each "
                                                   "after --warmup with torch.profiler and print the top CUDA kernels")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    if args.profile:
        return profile(args.profile.split(","), args.steps, args.warmup, args.batch)
    if args.batch > 1 and any(n.startswith("example") for n in args.configs.split(",")):
        raise SystemExit("--batch > 1: the example loop runs at batch 1 only, so its rows would not compare; "
                         "leave the example-* configurations out")
    names = args.configs.split(",")
    unknown = set(names) - set(CONFIGS)
    if unknown:
        raise SystemExit(f"--configs: unknown {sorted(unknown)}; choose from {', '.join(CONFIGS)}")
    device = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run)"
    peak = matmul_peak_tflops()
    print(json.dumps({"device": device, "torch": torch.__version__, "bf16_matmul_peak_tflops": peak}))
    bench = Bench()
    bench.batch = args.batch
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            runs[name].append(bench.run(name, args.steps, args.warmup))
            print(json.dumps({"config": name, "round": r, **runs[name][-1]}), flush=True)
    flops = {n: bench.flops(n) for n in names}
    ms = {n: median([x["ms"] for x in runs[n]]) for n in names}
    mem = {n: max((x["peak_gib"] or 0) for x in runs[n]) if DEVICE == "cuda" else None for n in names}
    rows = []
    for n in names:
        tflops = flops[n] / (ms[n] / 1000) / 1e12
        ref = "example-gc" if "-gc" in n else "example"
        goals = []
        if ref in ms and not n.startswith("example"):
            ratio = ms[n] / ms[ref]
            goals.append(f"{ratio:.2f}x {ref}" + (f" ({'met' if ratio <= 0.75 else 'MISSED'} <= 0.75x)"
                                                   if n.startswith("dreambooth") else ""))
        twin = n.replace("dco", "dreambooth", 1)
        if n.startswith("dco") and twin in ms:
            ratio = ms[n] / ms[twin]
            goals.append(f"{ratio:.2f}x {twin} ({'met' if ratio <= 1.55 else 'MISSED'} <= 1.55x)")
        if n.startswith("dco-gc") and mem[n] is not None:
            goals.append(f"memory {'met' if mem[n] <= 24 else 'MISSED'} <= 24 GiB")
        if peak:
            goals.append(f"{100 * tflops / peak:.0f}% of peak ({'met' if tflops >= 0.4 * peak else 'MISSED'} >= 40%)")
        rows.append([n, f"{ms[n]:.1f}", "" if mem[n] is None else f"{mem[n]:.2f}", f"{flops[n] / 1e12:.4g}",
                     f"{tflops:.4g}", "; ".join(goals)])
    gaps = ""
    if "example" in bench.losses and "dreambooth" in bench.losses:
        gap = max(abs(a - b) for a, b in zip(bench.losses["example"], bench.losses["dreambooth"]))
        gaps = f"; dreambooth vs example max loss diff {gap:.1e}"
    header = ["config", "ms/step", "peak GiB", "TFLOP/step", "TFLOP/s", "against the example; goals"]
    print(table(header, rows))
    print(f"{device}; bf16 matmul peak {peak and round(peak, 1)} TFLOP/s{gaps}")
    if not args.no_record and DEVICE == "cuda":
        record("SDXL 1024 px on a GPU against the diffusers example (issue 14, item 5)", INTRO,
               ["date", "device", "command", *header],
               [[today(), f"{device}, torch {torch.__version__}, peak {peak:.0f} TFLOP/s", f"`{command()}`", *r]
                for r in rows])


def profile(names: list[str], steps: int, warmup: int, batch: int) -> None:
    """Top kernels of `steps` training steps per configuration (after `warmup`), by device time:
    where a step's time goes, e.g. what gradient checkpointing adds."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    bench = Bench()
    bench.batch = batch
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if DEVICE == "cuda" else [])
    for name in names:
        prof = torch_profile(activities=activities)

        def on_step(i, logs):
            if i + 1 == warmup:
                sync()
                prof.start()
            if i + 1 == warmup + steps:
                sync()
                prof.stop()

        bench._dcobench(name, warmup + steps, on_step)
        key = "self_cuda_time_total" if DEVICE == "cuda" else "self_cpu_time_total"
        print(f"== {name}, batch {batch}, {steps} steps: top kernels by {key}")
        print(prof.key_averages().table(sort_by=key, row_limit=15, max_name_column_width=70))


INTRO = """\
`benchmarks/gpu_sdxl_vs_diffusers.py`: real-size SDXL (random weights) at 1024 px, bf16, LoRA r32,
batch 1: dcobench's `train_lora` against the diffusers SDXL DreamBooth LoRA example's per-step work
(`diffusers_loop.py`: VAE encode in fp32 and both text encoders every step), with and without
gradient checkpointing (-gc) and `train.compile`. Goals: dcobench <= 0.75x the example's time; DCO
<= 1.55x DreamBooth; DCO with gradient checkpointing <= 24 GiB; >= 40% of the measured bf16 matmul
peak."""


if __name__ == "__main__":
    main()
