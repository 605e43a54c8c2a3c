"""What each adapter kind (`train.adapter`) costs: trainable parameters, DCO step time, peak memory.

CPU (default): the micro model at the micro suite's recipe (32 px, batch 4, rank 8, alpha 8, lr
1e-3, LoRA targets attention + ResNet convs; OFT attention only: peft 0.21's OFT cannot adapt a 3x3
conv, docs/adapters.md), through dcobench's `train_lora` with `DCO()`. Step times alternate the
kinds round by round in one process (CPU time, one torch thread, medians; `common.py`); peak memory
is each kind's own child process: its resident high-water mark over the training, less the
resident size after setup.

GPU (`--gpu`, on a machine with CUDA): the real-size SDXL UNet (`gpu_sdxl_step.SDXL_UNET`, random
weights, bf16, adapter fp32, 1024 px, batch 1, attention targets, rank 32) with DCO, each kind in
turn, peak memory from torch's `max_memory_allocated` over the timed steps.

    python benchmarks/adapters.py [--kinds lora,dora,...,boft@attention] [--steps 6] [--rounds 2] [--no-record]
    python benchmarks/adapters.py --gpu [--steps 10 --warmup 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import (alternate, load_avg, machine, median, now, peak_mb, print_and_record, reset_peak, rss_mb,
                    run_child, set_threads, setup)

from dcobench.adapter_options import KINDS
from dcobench.adapters import adapter_parameters
from dcobench.lora import remove_training_adapter
from dcobench.methods.dco import DCO
from dcobench.micro.suite import TARGETS
from dcobench.trainer import train_lora

ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]


def targets(kind: str) -> list[str]:
    """A kind's targets: `kind@attention` (and OFT) the attention projections, else the micro suite's."""
    return ATTENTION if kind in ("oft", "oft@attention") or kind.endswith("@attention") else list(TARGETS)


def train(s, kind: str, steps: int, marks: list | None = None) -> int:
    """`steps` DCO steps of a fresh adapter; returns its trainable parameter count."""
    n, name = [], kind.split("@")[0]
    train_lora(s.pipe, s.cond, s.latents, s.subject, DCO(), s.train_config(steps, adapter=name, target_modules=targets(kind)),
               0, on_start=lambda first, opt: n.append(sum(p.numel() for p in adapter_parameters(s.pipe.unet, name))),
               on_step=(lambda step, logs: marks.append(now())) if marks is not None else None)
    remove_training_adapter(s.pipe.unet)
    return n[0]


def step_timer(s, kind: str, steps: int):
    def run() -> float:
        marks: list[float] = []
        train(s, kind, steps, marks)
        return (marks[-1] - marks[0]) / (len(marks) - 1)
    return run


def child(spec: dict) -> None:
    set_threads(1)
    s = setup("micro")
    train(s, spec["kind"], 1)  # first-call allocations (peft, optimizer) out of the figure
    reset_peak()
    rss0 = rss_mb()
    params = train(s, spec["kind"], spec["steps"])
    print(json.dumps({"params": params, "peak_growth_mb": round(peak_mb() - rss0, 1)}))


def cpu(args) -> None:
    threads = set_threads(args.threads)
    load0, kinds = load_avg(), args.kinds.split(",")
    s = setup("micro")
    times = alternate({k: step_timer(s, k, args.steps) for k in kinds}, args.rounds)
    rows = []
    for k in kinds:
        mem = run_child(Path(__file__), {"kind": k, "steps": args.steps})
        ms = 1000 * median(times[k])
        rows.append([k.split("@")[0], "micro, 32 px, batch 4, " + ("attention" if targets(k) == ATTENTION else
                                                                  "attention + conv1/conv2") +
                     (", rank 8" if k.split("@")[0] in ("lora", "dora", "loha", "lokr") else ""), f"{mem['params']:,}",
                     f"{ms:.1f}", f"{ms / (1000 * median(times['lora'])):.2f}x" if "lora" in times else "–",
                     f"{mem['peak_growth_mb']:.1f}"])
    print_and_record("Adapters: trainable parameters, DCO step time, peak memory (issue 23)", INTRO,
                     ["adapter", "setting", "trainable params", "DCO CPU ms/step", "vs LoRA", "peak RSS growth MB"],
                     rows, load0, threads, f"{args.rounds} alternating rounds of {args.steps} steps",
                     not args.no_record)


def gpu(args) -> None:
    import os

    import torch
    from gpu_sdxl_step import SDXL_UNET
    from step_timing import DEVICE, RandomCond, timed_training

    from dcobench.config import TrainConfig

    from diffusers import DDPMScheduler, UNet2DConditionModel

    if os.environ.get("DCOBENCH_BENCH_TINY_UNET"):  # dry run (DCOBENCH_BENCH_DEVICE=cpu): SDXL's structure, small
        SDXL_UNET.update(block_out_channels=(32, 64, 64), attention_head_dim=(2, 2, 2), transformer_layers_per_block=(1, 1, 1),
                         sample_size=16, norm_num_groups=8)
    dev = torch.device(DEVICE)
    print(json.dumps({"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__}))
    for kind in args.kinds.split(","):
        torch.manual_seed(0)
        with dev:
            unet = UNet2DConditionModel(**SDXL_UNET)
        unet.to(torch.bfloat16)
        sched = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        cond = RandomCond("sdxl", {"encoder_hidden_states": (77, 2048), "text_embeds": (1280,)}, dev,
                          torch.bfloat16, fixed={"time_ids": torch.tensor([[1024.0, 1024, 0, 0, 1024, 1024]])})
        cfg = TrainConfig(steps=args.warmup + args.steps, rank=32, alpha=32.0, lr=5e-5, resolution=1024,
                          mixed_precision="bf16", adapter=kind, target_modules=ATTENTION)
        try:
            out = timed_training("unet", unet, sched, cond, (4, SDXL_UNET["sample_size"], SDXL_UNET["sample_size"]), DCO(),
                                 cfg, args.steps, args.warmup)
            out["trainable_params"] = sum(p.numel() for p in adapter_parameters(unet, kind))
        except Exception as e:  # noqa: BLE001 (one kind's failure is a row, not the end of the run)
            out = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(json.dumps({"adapter": kind, **{k: v for k, v in out.items() if k not in ("params", "lora_params")}}))
        del unet
        if DEVICE == "cuda":
            torch.cuda.empty_cache()


INTRO = """\
`benchmarks/adapters.py`: each adapter kind's trainable parameter count, DCO training step time and
peak memory, through dcobench's `train_lora`, at the micro suite's recipe on the CPU (OFT on the
attention projections only: peft 0.21's OFT cannot adapt a 3x3 conv). Step times: CPU time with
one torch thread, the kinds alternating round by round in one process, medians; peak memory: each
kind's own child process, its resident high-water mark over the training less its size after
setup. The same figures of every real training are in its train.json (`cost`)."""


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]))
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", default=",".join(KINDS))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--gpu", action="store_true", help="the SDXL-size UNet on CUDA (prints JSON rows)")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    a = ap.parse_args()
    gpu(a) if a.gpu else cpu(a)
    print(machine(a.threads) if not a.gpu else "")
