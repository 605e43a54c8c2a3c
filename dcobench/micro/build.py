"""`dcobench micro build`: train the micro world's models in stages and save what ships.

Stages, in order; each writes its result under the output folder, and a later stage reads an
earlier one from there, so a CPU build can run one stage per command:

* ``vae``: ``training.train_vae`` -> ``.stages/vae`` (a diffusers AutoencoderKL folder);
* ``unet``: ``training.train_base`` on that VAE -> ``base/`` (the whole StableDiffusionPipeline);
* ``clip``: micro-clip -> ``encoders/micro-clip.*``;
* ``dino``: micro-dino (DINO self-distillation) -> ``encoders/micro-dino.*``.

Every stage's numbers go into ``build_stats.json`` (merged with what earlier stages wrote).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ..store import atomic_folder, atomic_write_json
from .models import TEXT_LEN, build_micro_pipeline, folder_bytes, resolve, save_pipeline

STAGES = ("vae", "unet", "clip", "dino")


def _stats_file(out: Path) -> Path:
    return out / "build_stats.json"


def read_stats(out: Path) -> dict:
    f = _stats_file(out)
    return json.loads(f.read_text()) if f.is_file() else {}


def _vae_dir(out: Path) -> Path:
    return out / ".stages" / "vae"


def load_stage_vae(out: Path):
    from diffusers import AutoencoderKL

    for where in (_vae_dir(out), out / "base" / "vae"):
        if (where / "config.json").is_file():
            return AutoencoderKL.from_pretrained(where, torch_dtype=torch.float32)
    raise FileNotFoundError(f"{out}: no trained VAE; run `dcobench micro build --stages vae` first")


def build(out, stages=STAGES, seed: int = 0, device=None, log=print, vae_steps: int = 4000,
          vae_batch_size: int = 32, vae_generic_frac: float = 0.5, unet_steps: int = 6000,
          unet_seconds: float | None = None, batch_size: int = 32, attention_16: bool = False,
          clip_steps: int = 3000, dino_steps: int = 3000, eval_n: int = 256) -> dict:
    """Run ``stages``; returns the merged build stats (also written to ``build_stats.json``)."""
    from ..models.pipeline import quiet_libraries
    from . import encoder_training, encoders, suite, training

    quiet_libraries()
    out, device = Path(out), resolve(device)
    out.mkdir(parents=True, exist_ok=True)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {sorted(unknown)}; choose from {', '.join(STAGES)}")
    stats = read_stats(out)
    stats.setdefault("build", {}).update(seed=seed, text_len=TEXT_LEN)
    stats.setdefault("encoders", {})

    def record(part: str, values: dict, t0: float) -> None:
        values.update(device=str(device), torch_threads=torch.get_num_threads(),
                      wall_seconds=round(time.time() - t0, 2))
        (stats["build"] if part in ("vae", "unet") else stats["encoders"])[part] = values
        atomic_write_json(_stats_file(out), stats)

    if "vae" in stages:
        t0, s = time.time(), {}
        vae = training.train_vae(vae_steps, vae_batch_size, seed, device, log, generic_frac=vae_generic_frac,
                                 stats=s, eval_n=eval_n)
        with atomic_folder(_vae_dir(out)) as tmp:
            vae.save_pretrained(tmp)
        record("vae", {**s, "batch_size": vae_batch_size, "generic_frac": vae_generic_frac}, t0)
    if "unet" in stages:
        t0, s = time.time(), {}
        vae = load_stage_vae(out).to(device)
        unet, text_encoder = training.train_base(vae, unet_steps, batch_size, seed, device, unet_seconds, log,
                                                 stats=s, eval_n=eval_n, attention_16=attention_16)
        path = save_pipeline(build_micro_pipeline(vae, unet, text_encoder), out / "base", torch.float16)
        s["saved"] = {"bytes": folder_bytes(path), "dtype": "float16"}
        record("unet", {**s, "attention_16": attention_16}, t0)
    if "clip" in stages:
        t0 = time.time()
        clip = encoder_training.train_micro_clip(clip_steps, seed=seed, device=device, log=log)
        encoders.save_encoder(clip.cpu(), out / "encoders" / encoders.CLIP_FILE)
        record("clip", dict(clip.stats), t0)
    if "dino" in stages:
        t0 = time.time()
        dino = encoder_training.train_micro_dino(dino_steps, seed=seed, device=device, log=log)
        encoders.save_encoder(dino.cpu(), out / "encoders" / encoders.DINO_FILE)
        record("dino", dict(dino.stats), t0)
    suite.subjects_root(out / "subjects")
    return stats
