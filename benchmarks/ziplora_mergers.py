"""Do ZipLoRA's merger vectors move? mean |cos(m1, m2)| before and after, per setting, on one pair.

Trains a subject LoRA (the suite's first subject) and a style LoRA (its first style) with the same
recipe, then runs ZipLoRA on the pair at each setting and prints `merger_cos` (what merge.json
records), the mean merger weights, the two fidelity terms (first and last 10 steps) and the time.
The LoRAs are cached under --out, so further settings reuse them.

    .venv/bin/python benchmarks/ziplora_mergers.py --suite tiny --steps 20 --lr 1e-3
    .venv/bin/python benchmarks/ziplora_mergers.py --suite micro --targets to_q,to_k,to_v,to_out.0,conv1,conv2 \\
        --steps 150 --lr 3e-3 --method dco
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from baselines.dreambooth import DreamBooth
from baselines.ziplora import ZipLoRAConfig, ziplora
from dcobench.config import TrainConfig
from dcobench.lora import remove_training_adapter, save_lora
from dcobench.merging import load_lora_weights
from dcobench.methods.dco import DCO, DCOConfig
from dcobench.models.pipeline import Conditioner, load_pipeline
from dcobench.suites import get_suite
from dcobench.trainer import encode_images, train_lora

SETTINGS = [  # (name, ZipLoRAConfig fields)
    ("public (lr 5e-5, plain)", {"lr": 5e-5, "normalize": False}),
    ("lr 0.01, normalised", {"lr": 1e-2}),
    ("lr 0.03, plain", {"lr": 3e-2, "normalize": False}),
    ("defaults", {}),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="tiny")
    ap.add_argument("--targets", default="to_q,to_k,to_v,to_out.0")
    ap.add_argument("--steps", type=int, default=20, help="LoRA training steps")
    ap.add_argument("--lr", type=float, default=1e-3, help="LoRA learning rate")
    ap.add_argument("--method", default="dreambooth", choices=["dreambooth", "dco"])
    ap.add_argument("--out", default="/tmp/ziplora-mergers")
    ap.add_argument("--settings", default=None, help='JSON list of [name, {field: value}] (default: four settings)')
    args = ap.parse_args()
    torch.set_num_threads(1)
    suite = get_suite(args.suite)
    pipe = load_pipeline(suite.model)
    res = suite.resolution
    cond = Conditioner(pipe, res)
    subject, style = suite.subjects[0], suite.styles[0]
    latents = {s.name: encode_images(pipe.vae, s.images, res) for s in (subject, style)}
    root = Path(args.out) / f"{args.suite}-{args.method}-{args.targets.replace(',', '_')}-{args.steps}-{args.lr}"
    for seed, s in enumerate((subject, style)):
        if not (root / s.name / "pytorch_lora_weights.safetensors").is_file():
            objective = DreamBooth() if args.method == "dreambooth" else DCO(DCOConfig(beta=5.0))
            cfg = TrainConfig(steps=args.steps, lr=args.lr, rank=8, alpha=8.0, batch_size=4, resolution=res,
                              target_modules=args.targets.split(","))
            train_lora(pipe, cond, latents[s.name], s, objective, cfg, seed)
            save_lora(pipe, root / s.name)
            remove_training_adapter(pipe.unet)
    a, b = load_lora_weights(root / subject.name), load_lora_weights(root / style.name)
    for name, fields in (json.loads(args.settings) if args.settings else SETTINGS):
        start = time.perf_counter()
        _, _, info = ziplora(a, b, ZipLoRAConfig(**fields), pipe=pipe, cond=cond, subject=subject,
                             subject_latents=latents[subject.name], style=style, style_latents=latents[style.name])
        terms = np.array(info["fidelity_terms"])
        print(f"{name:26s} merger_cos {info['merger_cos']['before']:.3f} -> {info['merger_cos']['after']:.3f} "
              f"(fall {info['merger_cos']['fall']:.0%})  mean m1 {info['merger_mean']['m1']:.2f} "
              f"m2 {info['merger_mean']['m2']:.2f}  fidelity terms {terms[:10].mean(0).round(3).tolist()} -> "
              f"{terms[-10:].mean(0).round(3).tolist()}  {time.perf_counter() - start:.1f} s", flush=True)


if __name__ == "__main__":
    main()
