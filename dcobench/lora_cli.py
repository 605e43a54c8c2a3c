"""`dcobench merge` and `dcobench export`: LoRA files in and out, through diffusers and peft."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from .errors import DcoError


def scoped_overrides(texts, prefix: list[str], example: str) -> dict:
    """`prefix.field=value` overrides as a dict under `prefix`; anything else is refused."""
    from .config import parse_override, set_dotted

    out: dict = {}
    for text in texts or []:
        keys, value = parse_override(text)
        if keys[: len(prefix)] != prefix or len(keys) <= len(prefix):
            raise DcoError(f"override '{text}': only {'.'.join(prefix)}.<field> can be set here (e.g. {example})")
        set_dotted(out, keys[len(prefix):], value)
    return out


def merge_command(
    subject_lora: Path = typer.Argument(..., help="Subject LoRA folder or .safetensors file."),
    style_lora: Path = typer.Argument(..., help="Style LoRA folder or .safetensors file."),
    method: str = typer.Option("direct", help="Merge method: direct or ziplora (see `dcobench ls merges`)."),
    out: Path = typer.Option(..., help="Folder for the merged pytorch_lora_weights.safetensors and merge.json."),
    model: Optional[str] = typer.Option(None, help="Base model (needed by ziplora)."),
    subject: Optional[Path] = typer.Option(None, help="The subject's reference folder (ziplora)."),
    style: Optional[Path] = typer.Option(None, help="The style's reference folder (ziplora)."),
    overrides: Optional[List[str]] = typer.Argument(None, help="merges.<method>.<field>=value, as in `dcobench run`"),
):
    """Merge a subject LoRA and a style LoRA into one LoRA that stock diffusers loads."""
    from .config import from_dict
    from .merging import merge_loras
    from .registry import MERGES

    raw = scoped_overrides(overrides, ["merges", method], f"merges.{method}.steps=50")
    cfg = from_dict(MERGES.get(method).config_cls, raw, f"merges.{method}.")
    if out.exists() and any(out.iterdir()) and not (out / "merge.json").is_file():
        raise DcoError(f"--out {out}: exists and is not a merged LoRA folder (no merge.json); pick a new folder")
    inputs = {}
    if model:
        from .models.pipeline import Conditioner, load_pipeline, native_resolution
        from .suites.base import load_subject
        from .trainer import encode_images

        pipe = load_pipeline(model)
        res = native_resolution(model)
        inputs = {"pipe": pipe, "cond": Conditioner(pipe, res)}
        for key, folder in (("subject", subject), ("style", style)):
            if folder is not None:
                s = load_subject(folder, kind=None)
                inputs[key], inputs[f"{key}_latents"] = s, encode_images(pipe.vae, s.images, res)
    info = merge_loras(method, cfg, subject_lora, style_lora, out,
                       record={"subject_lora": str(subject_lora), "style_lora": str(style_lora)}, **inputs)
    typer.echo(f"merged ({method}, rank {info['rank']}): {out / 'pytorch_lora_weights.safetensors'}")


def export_command(
    lora: Path = typer.Argument(..., help="An adapter folder (e.g. RUN/loras/<train_id>) or a LoRA .safetensors file."),
    format: str = typer.Option("kohya", "--format", help="kohya: lora_unet_* keys for ComfyUI, A1111, kohya's scripts "
                               "(LoRA; LoHa and LoKr as LyCORIS keys)."),
    out: Optional[Path] = typer.Option(None, help="Output file (default: <LORA folder>/<folder name>.<format>.safetensors)."),
):
    """Write a LoRA (or a LoHa / LoKr adapter) in another tool's format: kohya's, which ComfyUI, A1111 and
    kohya's scripts read (LoHa and LoKr as LyCORIS keys)."""
    from .kohya import export

    if format != "kohya":
        raise DcoError(f"--format: '{format}' is not supported; use --format kohya")
    folder = lora if lora.is_dir() else lora.parent
    path = export(lora, out or folder / f"{folder.name}.{format}.safetensors")
    typer.echo(f"exported ({format}): {path}")
    if (folder / "learned_embeds.safetensors").is_file():
        typer.echo(f"note: this LoRA trained a new token; load {folder / 'learned_embeds.safetensors'} as well")
