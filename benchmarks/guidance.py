"""Consistency guidance against classifier-free guidance: sampling time per image, same steps,
batch and LoRA, on the CPU, side by side in one process.

CFG evaluates the fine-tuned denoiser on the prompt and on "" (one call on 2B rows). Consistency
guidance needs the base model on "" and on the base prompt (one call on 2B rows, LoRA disabled)
and the fine-tuned model on the prompt (B rows): 3B rows against 2B, a floor of 1.5x. Goal:
<= 1.55x. Also timed: the batched form, all 3B rows in one call with peft's per-sample adapter
selection (`per_sample.py`), checked against the guidance formula to 1e-5 before timing.

The LoRA is trained-size random (B != 0), saved and loaded back through diffusers as the runner
does. Each round samples one batch of images through `GuidedSampler.sample` (denoising and VAE
decode); rounds alternate the sides; medians.

    python benchmarks/guidance.py [--models micro,tiny-sd] [--rounds 4] [--threads 1]
"""

from __future__ import annotations

import tempfile

import torch
from common import (
    alternate,
    load_avg,
    median,
    print_and_record,
    ratio_args,
    set_threads,
    setup,
    timed,
    verdict,
)
from per_sample import BASE, per_sample_adapters

from dcobench.config import SampleConfig
from dcobench.lora import add_lora, load_lora, remove_training_adapter, save_lora
from dcobench.models.pipeline import cat
from dcobench.sampling import (
    GuidedSampler,
    ImageJob,
    combine_consistency,
    lora_disabled,
)

GOAL = 1.55
# the micro suite's sampling defaults (20 steps, batch 32); the tiny suite's 10 steps at batch 4 (its
# default is 8), as 64 px tiny SD samples slowly on a CPU (full-resolution self-attention)
SAMPLING = {"micro": dict(steps=20, batch_size=32, w_text=3.0, cfg_scale=3.0),
            "tiny-sd": dict(steps=10, batch_size=4)}


class BatchedSampler(GuidedSampler):
    """Consistency guidance with the base rows and the LoRA rows in one denoiser call."""

    adapter = "dcobench"

    def guided_eps(self, x, t, prompts, base_prompts, cfg, guidance):
        if guidance == "cfg":
            return super().guided_eps(x, t, prompts, base_prompts, cfg, guidance)
        family, model, n = self.cond.family, self.cond.denoiser, len(prompts)
        conds = cat([self.cond([""] * n), self.cond(base_prompts), self.cond(prompts)])
        with per_sample_adapters(model, [BASE] * (2 * n) + [self.adapter] * n):
            phi_uncond, phi_base, theta = family.forward(model, torch.cat([x, x, x]), t, conds).chunk(3)
        return combine_consistency(phi_uncond, phi_base, theta, cfg.w_text, cfg.w_con)


def attach_lora(s) -> str:
    """A LoRA of the suite's rank with random B, saved and loaded back as the runner does."""
    model = s.cond.denoiser
    cfg = s.train_config(1)
    params = add_lora(model, cfg.rank, cfg.alpha, cfg.target_modules, 0)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in params:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    folder = tempfile.mkdtemp(prefix="dcobench-bench-lora-")
    save_lora(s.pipe, folder)
    remove_training_adapter(model)
    return load_lora(s.pipe, folder)


def formula_gap(s, sampler: BatchedSampler, cfg: SampleConfig, n: int = 3) -> float:
    """Largest difference between the batched form and the guidance formula term by term."""
    prompts = [s.subject.captions[i % len(s.subject.captions)] for i in range(n)]
    bases = [s.subject.base(p) for p in prompts]
    size = s.resolution // sampler.vae_scale
    x = torch.randn(n, s.cond.denoiser.config.in_channels, size, size, generator=torch.Generator().manual_seed(0))
    t = torch.tensor(500)
    fwd, model = s.cond.family.forward, s.cond.denoiser
    with torch.no_grad():
        got = sampler.guided_eps(x, t, prompts, bases, cfg, "consistency")
        theta = fwd(model, x, t, s.cond(prompts))
        with lora_disabled(model):
            phi0, phi_base = fwd(model, x, t, s.cond([""] * n)), fwd(model, x, t, s.cond(bases))
    if torch.allclose(theta, phi_base, atol=1e-4):
        raise RuntimeError("the LoRA does not change the output; the check could not fail")
    expected = phi0 + cfg.w_text * (phi_base - phi0) + cfg.w_con * (theta - phi_base)
    return (got - expected).abs().max().item()


def main():
    args = ratio_args(__doc__, rounds=4)
    threads = set_threads(args.threads)
    load0, rows, out = load_avg(), [], []
    for name in args.models.split(","):
        s = setup(name)
        cfg = SampleConfig(**SAMPLING[name])
        BatchedSampler.adapter = attach_lora(s)
        plain, batched = GuidedSampler(s.pipe, s.cond, s.resolution), BatchedSampler(s.pipe, s.cond, s.resolution)
        gap = formula_gap(s, batched, cfg)
        caps = s.subject.captions
        jobs = [ImageJob(caps[i % len(caps)], s.subject.base(caps[i % len(caps)]), i % len(caps), 0, i)
                for i in range(cfg.batch_size)]
        n = len(jobs)
        t = alternate({"cfg": lambda: timed(lambda: plain.sample(jobs, cfg, "cfg")) / n,
                       "consistency": lambda: timed(lambda: plain.sample(jobs, cfg, "consistency")) / n,
                       "batched": lambda: timed(lambda: batched.sample(jobs, cfg, "consistency")) / n}, args.rounds)
        c, g, b = median(t["cfg"]), median(t["consistency"]), median(t["batched"])
        s.pipe.unload_lora_weights()
        rows.append([name, f"{s.resolution} px, batch {cfg.batch_size}, {cfg.steps} steps, LoRA r{s.train['rank']}",
                     f"{1000 * c:.1f}", f"{1000 * g:.1f}", verdict(g / c, GOAL), f"{1000 * b:.1f}",
                     f"{b / c:.2f}x", f"{gap:.1e}"])
        out.append((name, g / c, b / c))
    header = ["model", "setting", "CFG CPU ms/image", "consistency CPU ms/image", "consistency / CFG",
              "batched consistency CPU ms/image", "batched / CFG", "batched vs formula max diff"]
    print_and_record("Consistency guidance against CFG, sampling (issue 14, item 3)", INTRO,
                     header, rows, load0, threads,
                     f"{args.rounds} alternating rounds", not args.no_record)
    return out


INTRO = """\
`benchmarks/guidance.py`: sampling time per image (denoising loop and VAE decode through
`GuidedSampler.sample`) with consistency guidance against CFG, same LoRA, steps and batch,
alternating rounds in one process, medians. "batched" puts the base-model rows and the LoRA rows in
one call with peft's per-sample adapter selection; its last column is its largest difference from
the guidance formula computed term by term. Goal: consistency <= 1.55x CFG; the faster form is kept
in the sampler.
Times are the process's CPU time with one torch thread (`benchmarks/common.py`), so that other
processes on the machine do not count."""


if __name__ == "__main__":
    main()
