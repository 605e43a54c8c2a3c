"""DCO's training step against DreamBooth's, on the CPU, side by side in one process.

DCO adds a reference pass: the same UNet with its LoRA disabled, under no_grad, on the same noisy
latents. A LoRA step on a frozen base is about two forwards' worth of work (forward, and a
backward through the activations), so the floor is about 1.5x. Goal: <= 1.55x.

1. Headline: dcobench's own `train_lora` with `DCO()` and with `DreamBooth()`, alternating rounds
   of fresh LoRAs (A B, B A, ...), all steps but the first timed, medians.
2. The batched alternative: the reference rows and the training rows in one UNet call with
   peft's per-sample adapter selection (`per_sample.py`), against the trainer's two calls, both
   built from the same pieces (family forward, noising, objective, AdamW) on one LoRA. Before
   timing, one batch is run both ways from the same LoRA state and the losses and LoRA gradients
   are compared.

    python benchmarks/dco_vs_dreambooth.py [--models micro,tiny-sd] [--steps 10] [--rounds 6] [--threads 1]
"""

from __future__ import annotations

import torch
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
from per_sample import BASE, per_sample_adapters

from baselines.dreambooth import DreamBooth
from dcobench.lora import (
    TRAIN_ADAPTER,
    add_lora,
    lora_disabled,
    lora_layers,
    remove_training_adapter,
)
from dcobench.methods.dco import DCO
from dcobench.trainer import train_lora

GOAL = 1.55


def trainer_step_time(s, objective, steps: int, seed: int = 0) -> float:
    marks = []
    train_lora(s.pipe, s.cond, s.latents, s.subject, objective, s.train_config(steps), seed,
               on_step=lambda step, logs: marks.append(now()))
    remove_training_adapter(s.pipe.unet)
    return (marks[-1] - marks[0]) / (len(marks) - 1)


class Variants:
    """DreamBooth, DCO with a separate reference call, DCO with one batched call: one LoRA, one optimizer."""

    def __init__(self, s, seed: int = 0):
        self.s, self.family, self.model = s, s.cond.family, s.cond.denoiser
        cfg = s.train_config(1)
        self.params = add_lora(self.model, cfg.rank, cfg.alpha, cfg.target_modules, seed)
        self.layers = lora_layers(self.model)
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.noising = self.family.noising(s.pipe.scheduler)
        self.captions, self.bases = s.cond(s.subject.captions), s.cond(s.subject.base_captions)
        self.gen, self.dco, self.db = torch.Generator().manual_seed(seed), DCO(), DreamBooth()
        self.model.train()

    def batch(self):
        b = self.s.train["batch_size"]
        idx = torch.randint(0, len(self.s.subject.images), (b,), generator=self.gen)
        x0 = self.s.latents.sample(idx, self.gen)
        noise = torch.randn(x0.shape, generator=self.gen)
        t = self.noising.timesteps(b, self.gen, x0.device)
        pick = lambda c: {k: v[idx] for k, v in c.items()}  # noqa: E731
        return self.noising.add_noise(x0, noise, t), t, pick(self.captions), pick(self.bases), \
            self.noising.target(x0, noise, t)

    def loss(self, kind: str, batch):
        x, t, caps, bases, target = batch
        fwd = self.family.forward
        if kind == "dreambooth":
            return self.db(fwd(self.model, x, t, caps), target)[0]
        if kind == "dco_separate":
            pred = fwd(self.model, x, t, caps)
            with torch.no_grad(), lora_disabled(self.model, self.layers):
                ref = fwd(self.model, x, t, bases)
            return self.dco(pred, target, ref)[0]
        n = x.shape[0]
        with per_sample_adapters(self.model, [TRAIN_ADAPTER] * n + [BASE] * n):
            both = fwd(self.model, torch.cat([x, x]), torch.cat([t, t]),
                       {k: torch.cat([caps[k], bases[k]]) for k in caps})
        pred, ref = both.split(n)
        return self.dco(pred, target, ref.detach())[0]

    def step(self, kind: str, batch) -> float:
        loss = self.loss(kind, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return loss.item()

    def agreement(self) -> tuple[float, float]:
        """(|loss diff|, max |grad diff|) of the two DCO forms on one batch from one LoRA state."""
        batch, out = self.batch(), []
        for kind in ("dco_separate", "dco_batched"):
            loss = self.loss(kind, batch)
            loss.backward()
            out.append((loss.item(), torch.cat([p.grad.flatten() for p in self.params])))
            self.optimizer.zero_grad(set_to_none=True)
        return abs(out[0][0] - out[1][0]), (out[0][1] - out[1][1]).abs().max().item()

    def timer(self, kind: str, steps: int):
        def run() -> float:
            self.step(kind, self.batch())
            start = now()
            for _ in range(steps - 1):
                self.step(kind, self.batch())
            return (now() - start) / (steps - 1)
        return run

    def close(self):
        self.model.eval()
        remove_training_adapter(self.model)


def main():
    args = ratio_args(__doc__, rounds=6, steps=10)
    threads = set_threads(args.threads)
    load0, rows, out = load_avg(), [], []
    for name in args.models.split(","):
        s = setup(name)
        t = alternate({"dreambooth": lambda: trainer_step_time(s, DreamBooth(), args.steps),
                       "dco": lambda: trainer_step_time(s, DCO(), args.steps)}, args.rounds)
        db, dco = median(t["dreambooth"]), median(t["dco"])
        v = Variants(s)
        dloss, dgrad = v.agreement()
        vt = alternate({k: v.timer(k, args.steps) for k in ("dreambooth", "dco_separate", "dco_batched")}, args.rounds)
        v.close()
        vdb, vsep, vbat = (median(vt[k]) for k in ("dreambooth", "dco_separate", "dco_batched"))
        rows.append([name, s.setting(), f"{1000 * db:.1f}", f"{1000 * dco:.1f}", verdict(dco / db, GOAL),
                     f"{vsep / vdb:.2f}x", f"{vbat / vdb:.2f}x", f"{vbat / vsep:.2f}x",
                     f"{dloss:.0e} / {dgrad:.0e}"])
        out.append((name, dco / db, vbat / vsep))
    header = ["model", "setting", "DreamBooth CPU ms/step", "DCO CPU ms/step", "DCO / DreamBooth (trainer)",
              "separate ref / DB (same pieces)", "batched ref / DB", "batched / separate",
              "batched vs separate: loss / grad max diff"]
    print_and_record("DCO against DreamBooth, training step (issue 14, item 2)", INTRO,
                     header, rows, load0, threads,
                     f"{args.rounds} alternating rounds of {args.steps} steps", not args.no_record)
    return out


INTRO = """\
`benchmarks/dco_vs_dreambooth.py`: a DCO training step (with its no-grad reference pass, LoRA
disabled, on the base prompt) against a DreamBooth step, through dcobench's `train_lora`,
alternating rounds in one process, medians. The next columns time the same steps built from the
trainer's pieces, with the reference pass either a separate call (what the trainer does) or
batched with the training rows in one call through peft's per-sample adapter selection; the two
forms agree (last column). Goal: DCO <= 1.55x DreamBooth; the faster form is kept in the trainer.
Times are the process's CPU time with one torch thread (`benchmarks/common.py`), so that other
processes on the machine do not count."""


if __name__ == "__main__":
    main()
