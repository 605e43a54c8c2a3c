"""A dcobench training step against the loop users would run instead: the diffusers DreamBooth
LoRA example's per-step work (`diffusers_loop.py`), on the CPU, side by side in one process.

Both sides train the same LoRA (rank, alpha, targets, lr, batch size, seed) on the same UNet with
the DreamBooth loss. dcobench encodes each reference image and caption once per subject and then
only samples latents from the cached posteriors; the example encodes the batch with the VAE and
the text encoder on every step and reads the images from disk. Because both draw examples, VAE
samples, noise and timesteps from one generator in the same order, their loss curves agree step by
step (printed as the largest difference) and the time difference is the per-step work dcobench
does not do.

Rounds alternate the two sides (A B, B A, ...); each round trains a fresh LoRA for `--steps` steps
and times all steps but the first; the figure is the median over rounds.

    python benchmarks/train_vs_diffusers.py [--models micro,tiny-sd] [--steps 12] [--rounds 6] [--threads 1]
"""

from __future__ import annotations

from common import (
    alternate,
    load_avg,
    median,
    now,
    print_and_record,
    ratio_args,
    set_threads,
    setup,
    verdict,
)
from diffusers_loop import ExampleLoop

from baselines.dreambooth import DreamBooth
from dcobench.lora import remove_training_adapter
from dcobench.trainer import train_lora

GOAL = 0.8


class Sides:
    """Both loops on one pipeline; each call trains one fresh LoRA and returns seconds per step."""

    def __init__(self, name: str, steps: int, seed: int = 0):
        self.s = setup(name)
        self.steps, self.seed = steps, seed
        self.cfg = self.s.train_config(steps)
        self.losses: dict[str, list[float]] = {}

    def dcobench(self) -> float:
        s, marks = self.s, []
        report = train_lora(s.pipe, s.cond, s.latents, s.subject, DreamBooth(), self.cfg, self.seed,
                            on_step=lambda step, logs: marks.append(now()))
        remove_training_adapter(s.pipe.unet)
        self.losses["dcobench"] = report.losses
        return (marks[-1] - marks[0]) / (len(marks) - 1)

    def example(self) -> float:
        s, t = self.s, self.s.train
        loop = ExampleLoop(s.pipe, s.subject, t["rank"], t["alpha"], self.cfg.target_modules, t["lr"],
                           t["batch_size"], s.resolution, self.seed)
        losses = [loop.step()]
        start = now()
        losses += [loop.step() for _ in range(self.steps - 1)]
        per_step = (now() - start) / (self.steps - 1)
        loop.close()
        self.losses["example"] = losses
        return per_step

    def loss_gap(self) -> float:
        return max(abs(a - b) for a, b in zip(self.losses["dcobench"], self.losses["example"]))


def main():
    args = ratio_args(__doc__, rounds=6, steps=12)
    threads = set_threads(args.threads)
    load0, rows, out = load_avg(), [], []
    for name in args.models.split(","):
        sides = Sides(name, args.steps)
        times = alternate({"example": sides.example, "dcobench": sides.dcobench}, args.rounds)
        ex, dc = median(times["example"]), median(times["dcobench"])
        rows.append([name, sides.s.setting(), f"{1000 * ex:.1f}", f"{1000 * dc:.1f}", verdict(dc / ex, GOAL),
                     f"{sides.loss_gap():.1e}", f"{1000 * sides.s.setup_s:.0f}"])
        out.append((name, dc / ex))
    header = ["model", "setting", "example CPU ms/step", "dcobench CPU ms/step", "dcobench / example", "max loss diff",
              "dcobench setup ms (once per subject)"]
    print_and_record("Training step against the diffusers DreamBooth LoRA example (issue 14, item 1)", INTRO,
                     header, rows, load0, threads,
                     f"{args.rounds} alternating rounds of {args.steps} steps", not args.no_record)
    return out


INTRO = """\
`benchmarks/train_vs_diffusers.py`: dcobench's `train_lora` (DreamBooth loss) against a replica of
the per-step work of diffusers' `train_dreambooth_lora.py` (`benchmarks/diffusers_loop.py`: the
images read and transformed, VAE encode, text encode, noise, UNet forward/backward, clipping,
AdamW, every step), same UNet, LoRA, batch and seed, alternating rounds in one process, medians.
"max loss diff" is the largest per-step difference of the two loss curves (same seeds, same
examples and noise). The micro model is built from its configs with random weights (a step's
cost does not depend on them). Goal: dcobench <= 0.8x the example's time per step.
Times are the process's CPU time with one torch thread (`benchmarks/common.py`), so that other
processes on the machine do not count."""


if __name__ == "__main__":
    main()
