"""`dcobench micro build` and `dcobench micro validate`: make and measure the shipped micro world."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

micro_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Build (train) and validate the micro world's models.")


@micro_app.command("build")
def build_cmd(
    out: Optional[Path] = typer.Option(None, help="Folder for base/, encoders/, subjects/ (default data/micro)."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    seed: int = typer.Option(0),
    vae_steps: int = typer.Option(3000, help="VAE steps."),
    vae_batch_size: int = typer.Option(128, help="VAE batch size."),
    vae_generic_frac: float = typer.Option(0.5, help="Share of each VAE batch that is generic two-colour noise "
                                                     "texture (0: world renders only, the shipped weights' recipe)."),
    unet_steps: int = typer.Option(1_000_000, help="UNet + text encoder steps (bounded by --unet-seconds)."),
    unet_seconds: float = typer.Option(240.0, help="Wall-time budget of the UNet + text encoder training."),
    batch_size: int = typer.Option(32, help="UNet batch size."),
    clip_steps: int = typer.Option(3000, help="micro-clip steps."),
    dino_steps: int = typer.Option(3000, help="micro-dino steps."),
):
    """Train the micro VAE, UNet + text encoder and the micro encoders; write stats for the model card."""
    import torch

    from ..store import atomic_write_json
    from . import encoders, models, suite

    out = out or models.default_micro_dir()
    dev = None if device == "auto" else device
    stats = models.build(out, vae_steps=vae_steps, unet_steps=unet_steps, seed=seed, device=dev,
                         batch_size=batch_size, time_budget_s=unet_seconds, vae_batch_size=vae_batch_size,
                         vae_generic_frac=vae_generic_frac, save_dtype=torch.float16)
    enc = encoders.build_encoders(out, clip_steps=clip_steps, dino_steps=dino_steps, seed=seed, device=dev)
    suite.subjects_root(Path(out) / "subjects")
    atomic_write_json(Path(out) / "build_stats.json", {"build": stats, "encoders": enc})
    typer.echo(f"built {out}; run `dcobench micro validate` and update {Path(out) / 'MODEL_CARD.md'}")


@micro_app.command("validate")
def validate_cmd(
    folder: Optional[Path] = typer.Option(None, help="The micro folder (default data/micro)."),
    n_per_attr: int = typer.Option(20, help="Generated images per attribute value."),
    cfg_scale: float = typer.Option(3.0),
    steps: int = typer.Option(25),
    seed: int = typer.Option(0),
):
    """Measure the shipped models: oracle prompt-following of the base model, encoder retrieval."""
    import torch

    from ..models.pipeline import load_pipeline
    from ..store import atomic_write_bytes
    from . import encoders, models, validate

    folder = folder or models.default_micro_dir()
    torch.manual_seed(seed)
    pipe = load_pipeline(folder / "base")
    base = {}
    stats_file = folder / "build_stats.json"
    if stats_file.is_file():
        data = json.loads(stats_file.read_text())
        base = data.get("build", data)
    base = dict(base, validation=validate.validate_base(pipe, n_per_attr=n_per_attr, seed=seed, cfg_scale=cfg_scale,
                                                        steps=steps))
    clip = encoders.load_micro_clip(folder / "encoders" / encoders.CLIP_FILE)
    dino = encoders.load_micro_dino(folder / "encoders" / encoders.DINO_FILE)
    clip_stats = encoders.retrieval_accuracy(clip)
    dino_stats = encoders.identity_accuracy(dino)
    table = validate.validation_table(base, clip_stats, dino_stats)
    table += (f"\nMeasured by `dcobench micro validate --n-per-attr {n_per_attr} --cfg-scale {cfg_scale} "
              f"--steps {steps} --seed {seed}` on the CPU.\n")
    atomic_write_bytes(folder / "VALIDATION.md", table.encode())
    typer.echo(table)
