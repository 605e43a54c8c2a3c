"""Where a CPU training step's time goes: dcobench's DreamBooth step and the diffusers example's,
profiled by operator class in one process.

`train_vs_diffusers.py` can only beat the example by the per-step work dcobench skips (the VAE
and text encoders it caches); this script says how large that work is next to the UNet's forward
and backward, which both loops run identically. Each side trains a fresh LoRA for `--steps` steps
(the first, warm-up step is profiled too but the figures are per step over all of them) under
`torch.profiler`; operators are grouped by their self CPU time:

  attention   scaled-dot-product attention, forward and backward
  conv        convolutions, forward and backward
  matmul      mm / addmm / bmm (linear layers, LoRA)
  other       everything else (norms, activations, copies, optimizer, encoders' non-matmul ops)

    python benchmarks/step_profile.py [--models micro,tiny-sd] [--steps 6] [--threads 1]
"""

from __future__ import annotations

from common import load_avg, print_and_record, ratio_args, set_threads
from train_vs_diffusers import Sides

GROUPS = {"attention": ("scaled_dot_product", "flash_attention"), "conv": ("conv",),
          "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")}


def group(op: str) -> str:
    return next((g for g, keys in GROUPS.items() if any(k in op for k in keys)), "other")


def profile(fn) -> dict[str, float]:
    """Self CPU milliseconds of `fn()` per operator group."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    out = dict.fromkeys([*GROUPS, "other"], 0.0)
    for ev in prof.key_averages():
        out[group(ev.key)] += ev.self_cpu_time_total / 1000
    return out


def sides(name: str, steps: int) -> dict[str, dict[str, float]]:
    both = Sides(name, steps)  # the two loops of train_vs_diffusers.py, same LoRA, batch and seed
    both.dcobench(), both.example()  # warm both (allocator, oneDNN primitives) before profiling
    return {side: {k: v / steps for k, v in profile(fn).items()} for side, fn in (("example", both.example),
                                                                                  ("dcobench", both.dcobench))}


def main():
    args = ratio_args(__doc__, steps=6)
    threads, load0, rows = set_threads(args.threads), load_avg(), []
    for name in args.models.split(","):
        got = sides(name, args.steps)
        for side, ms in got.items():
            total = sum(ms.values())
            shares = [f"{ms[g]:.1f} ({ms[g] / total:.0%})" for g in [*GROUPS, "other"]]
            rows.append([name, side, f"{total:.1f}", *shares])
        gap = sum(got["example"].values()) - sum(got["dcobench"].values())
        rows.append([name, "example - dcobench", f"{gap:.1f}", "", "", "", ""])
    header = ["model", "side", "profiled CPU ms/step", "attention ms (share)", "conv ms (share)",
              "matmul ms (share)", "other ms (share)"]
    print_and_record("Where a CPU training step's time goes", INTRO, header, rows, load0, threads,
                     f"{args.steps} profiled steps per side", not args.no_record)


INTRO = """\
`benchmarks/step_profile.py`: self CPU time per step by operator group under `torch.profiler`
(operators only: Python time between them is not counted, so totals run below
`train_vs_diffusers.py`'s), for
dcobench's DreamBooth step and the diffusers example's (same UNet, LoRA, batch, seed). It explains
the training-step ratio: dcobench can only save the example's per-step encoder work, the
"example - dcobench" row; attention, convolutions and matmuls of the UNet are the same work on
both sides."""


if __name__ == "__main__":
    main()
