"""`dcobench micro build`, `validate` and `screen-subjects`: make and measure the shipped micro world."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

micro_app = typer.Typer(add_completion=False, no_args_is_help=True,
                        help="Build (train) and validate the micro world's models.")


@micro_app.command("build")
def build_cmd(
    out: Optional[Path] = typer.Option(None, help="Folder for base/, encoders/, subjects/ (default data/micro)."),
    stages: str = typer.Option("vae,unet,clip,dino", help="Comma-separated stages to (re)train, in order: "
                                                          "vae, unet (reads the trained VAE), clip, dino."),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    threads: int = typer.Option(1, help="torch threads on the CPU (1 is fastest for these small models)."),
    seed: int = typer.Option(0),
    vae_steps: int = typer.Option(4000, help="VAE steps."),
    vae_batch_size: int = typer.Option(32, help="VAE batch size."),
    vae_generic_frac: float = typer.Option(0.5, help="Share of each VAE batch that is generic two-colour noise "
                                                     "texture (0: world renders only)."),
    unet_steps: int = typer.Option(6000, help="UNet + text encoder steps."),
    unet_seconds: Optional[float] = typer.Option(None, help="Optional wall-time cap of the UNet training."),
    batch_size: int = typer.Option(32, help="UNet batch size."),
    attention_16: bool = typer.Option(False, help="Cross-attention at the 16x16 latent resolution too."),
    clip_steps: int = typer.Option(3000, help="micro-clip steps."),
    dino_steps: int = typer.Option(3000, help="micro-dino steps."),
):
    """Train the micro VAE, UNet + text encoder and the micro encoders; write stats for the model card."""
    import torch

    from ..errors import DcoError
    from . import build, models

    torch.set_num_threads(threads)
    out = out or models.default_micro_dir()
    try:
        build.build(out, [s.strip() for s in stages.split(",") if s.strip()], seed=seed,
                    device=None if device == "auto" else device, vae_steps=vae_steps, vae_batch_size=vae_batch_size,
                    vae_generic_frac=vae_generic_frac, unet_steps=unet_steps, unet_seconds=unet_seconds,
                    batch_size=batch_size, attention_16=attention_16, clip_steps=clip_steps, dino_steps=dino_steps)
    except (ValueError, FileNotFoundError) as e:
        raise DcoError(f"--stages: {e}")
    typer.echo(f"built {out}; run `dcobench micro validate` and update {Path(out) / 'MODEL_CARD.md'}")


@micro_app.command("validate")
def validate_cmd(
    folder: Optional[Path] = typer.Option(None, help="The micro folder (default data/micro)."),
    n_per_attr: int = typer.Option(20, help="Generated images per attribute value (prompt following)."),
    judge_layouts: int = typer.Option(40, help="Layouts per subject and set in the judge-validity sets "
                                               "(40 = every background x position x size)."),
    cfg_scale: float = typer.Option(3.0),
    steps: int = typer.Option(25),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch threads on the CPU."),
    check: bool = typer.Option(False, help="Exit 1 when a validation target is not met."),
):
    """Measure the shipped models: prompt following, seed diversity, how real samples degrade, the
    error rates of every subject judge, micro-clip retrieval, and every judge against the committed
    blind labels of the methods' outputs (data/micro/labels/). Writes VALIDATION.md and judges.png."""
    import torch
    from PIL import Image

    from ..models.pipeline import load_pipeline
    from ..store import atomic_write_bytes, atomic_write_json
    from . import build, encoder_eval, encoders, judge_validity, models, people, style_validity, validate

    torch.set_num_threads(threads)
    folder = folder or models.default_micro_dir()
    torch.manual_seed(seed)
    pipe = load_pipeline(folder / "base")
    stats = build.read_stats(folder)
    kw = dict(seed=seed, cfg_scale=cfg_scale, steps=steps)
    base = validate.validate_base(pipe, n_per_attr=n_per_attr, **kw)
    diversity = validate.seed_diversity(pipe, **kw)
    degradation = validate.degradation(pipe, **kw)
    clip = encoders.load_micro_clip(folder / "encoders" / encoders.CLIP_FILE)
    dino = encoders.load_micro_dino(folder / "encoders" / encoders.DINO_FILE)
    judged = judge_validity.measure(pipe, dino, clip, [tuple(s) for s in degradation["strengths"]],
                                    n_layouts=judge_layouts, **kw)
    styles = style_validity.measure(pipe, clip, [tuple(s) for s in degradation["strengths"]], dino=dino,
                                    n=judge_layouts, **kw)
    retrieval = encoder_eval.retrieval_accuracy(clip)
    text = validate.validation_table(stats, base, diversity, degradation, retrieval)
    text += "\n## Subject judges: measured error rates\n\n" + judge_validity.table(judged)
    text += "\n## Style judges: measured error rates\n\n" + style_validity.table(styles)
    agreed = people.measure_all(people.set_dirs(folder / "labels"))
    if agreed:
        text += "\n## Judges against people, on the methods' own outputs\n\n" + people.markdown(agreed)
    text += ("\n`judges.png`: for each judge (oracle_subject, dino, clip_i), a row of 16 images it accepts, then a "
             "row of 16 it rejects, drawn from all the sets above.\n")
    cmd = (f"dcobench micro validate --n-per-attr {n_per_attr} --judge-layouts {judge_layouts} --cfg-scale "
           f"{cfg_scale} --steps {steps} --seed {seed}")
    text += f"\nMeasured by `{cmd}` on the CPU ({threads} thread).\n"
    atomic_write_bytes(folder / "VALIDATION.md", text.encode())
    grid = judge_validity.panel(judged)
    Image.fromarray(grid).resize((grid.shape[1] * 2, grid.shape[0] * 2), Image.NEAREST).save(folder / "judges.png")
    summary = {k: v for k, v in judged.items() if not k.startswith("_")}
    atomic_write_json(folder / "validation.json", {"command": cmd, "base": base, "seed_diversity": diversity,
                                                   "degradation": degradation, "judges": summary,
                                                   "style_judges": {k: v for k, v in styles.items()
                                                                    if not k.startswith("_")},
                                                   "micro_clip": retrieval,
                                                   "people": {r["set"]: {"n": r["n"], "verdicts": r["verdicts"],
                                                                         "all": r["table"][r["table"]["stratum"] == "all"]
                                                                         .to_dict("records")} for r in agreed}})
    typer.echo(text)
    targets = {**judged["checks"], **style_validity.checks(styles), **validate.base_checks(base, diversity),
               **people.checks(agreed)}
    if check and not all(targets.values()):
        typer.echo("not met: " + "; ".join(k for k, ok in targets.items() if not ok), err=True)
        raise typer.Exit(1)


@micro_app.command("screen-subjects")
def screen_cmd(
    folder: Optional[Path] = typer.Option(None, help="The micro folder (default data/micro)."),
    subjects: Optional[str] = typer.Option(None, help="Comma-separated subjects to screen (default: every subject of "
                                                      "world.SECOND_SUBJECTS); the others keep their recorded screen."),
    judge_layouts: int = typer.Option(40, help="Layouts per subject and set (40 = every background x position x size)."),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, help="torch threads on the CPU."),
):
    """Screen held-out subjects (world.SECOND_SUBJECTS) by the rules of dcobench/micro/subject_screen.py,
    before any method runs on them. Updates SUBJECTS.md and subjects_screen.json in the micro folder."""
    import json

    import torch

    from ..errors import DcoError
    from ..models.pipeline import load_pipeline
    from ..store import atomic_write_bytes, atomic_write_json
    from . import encoders, models, subject_screen
    from .world import SECOND_SUBJECTS

    names = tuple(n.strip() for n in subjects.split(",") if n.strip()) if subjects else SECOND_SUBJECTS
    unknown = [n for n in names if n not in SECOND_SUBJECTS]
    if unknown:
        raise DcoError(f"--subjects: '{unknown[0]}' is not one of the screened subjects ({', '.join(SECOND_SUBJECTS)})")
    torch.set_num_threads(threads)
    folder = folder or models.default_micro_dir()
    torch.manual_seed(seed)
    pipe = load_pipeline(folder / "base")
    strengths = [tuple(s) for s in json.loads((folder / "validation.json").read_text())["degradation"]["strengths"]]
    clip = encoders.load_micro_clip(folder / "encoders" / encoders.CLIP_FILE)
    dino = encoders.load_micro_dino(folder / "encoders" / encoders.DINO_FILE)
    result = subject_screen.screen(pipe, dino, clip, strengths, subjects=names, n_layouts=judge_layouts, seed=seed)
    cmd = (f"dcobench micro screen-subjects{' --subjects ' + ','.join(names) if subjects else ''} "
           f"--judge-layouts {judge_layouts} --seed {seed}")
    path = folder / "subjects_screen.json"
    recorded = json.loads(path.read_text())["subjects"] if path.is_file() else {}
    merged = {**recorded, **{n: {**r, "command": cmd} for n, r in result["subjects"].items()}}
    merged = {n: merged[n] for n in SECOND_SUBJECTS if n in merged}  # the world's order
    text = subject_screen.markdown({**result, "subjects": merged})
    atomic_write_bytes(folder / "SUBJECTS.md", text.encode())
    atomic_write_json(path, {"subjects": merged, "passed": [n for n, r in merged.items() if r["passed"]]})
    typer.echo(text)
