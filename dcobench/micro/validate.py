"""Does the micro base model follow its prompts?  Sample with the stock pipeline, read with the oracle.

``validate_base`` draws a *balanced* set of pretraining scenes (every colour exactly
``n_per_attr`` times, every shape, size, position, background and pretraining style about evenly:
each attribute's values are repeated and shuffled independently), captions them, samples them with
the stock ``StableDiffusionPipeline.__call__`` (so this is what every method starts from) and
scores each image attribute by attribute with ``oracle.judge``.  Each image has its own seeded
generator, so results do not depend on the batch size.

``validation_table`` renders the build, sampling and encoder statistics as the markdown table that
goes into the micro model card / report.
"""
from __future__ import annotations

import time

import numpy as np
import torch

from . import oracle
from .world import BACKGROUNDS, COLORS, POSITIONS, PRETRAIN_STYLES, SHAPES, SIZES, Scene, caption

ATTRIBUTES = ("shape", "color", "background", "position", "size", "style")
_VALUES = {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS),
           "position": POSITIONS, "size": SIZES, "style": PRETRAIN_STYLES}
CHANCE = {a: 1 / len(v) for a, v in _VALUES.items()}


def balanced_scenes(n_per_attr: int, seed: int) -> list[Scene]:
    """``6 * n_per_attr`` pretraining scenes (6 = the most values any attribute has)."""
    rng = np.random.default_rng(seed)
    n = 6 * n_per_attr
    cols = {a: list(rng.permutation(np.resize(np.array(v, dtype=object), n))) for a, v in _VALUES.items()}
    scenes = []
    for i in range(n):
        row = {a: str(cols[a][i]) for a in ATTRIBUTES}
        if row["background"] == row["color"]:  # the world forbids blue on blue: re-pick the background
            row["background"] = str(rng.choice([b for b in BACKGROUNDS if b != row["color"]]))
        scenes.append(Scene(**row))
    return scenes


def to_uint8(images) -> np.ndarray:
    return (np.clip(np.asarray(images), 0, 1) * 255).round().astype(np.uint8)


@torch.no_grad()
def generate(pipe, prompts: list[str], seeds: list[int], cfg_scale: float, steps: int,
             batch_size: int = 64) -> np.ndarray:
    """uint8 (N, 32, 32, 3) from the stock pipeline, one generator per image."""
    pipe.set_progress_bar_config(disable=True)
    out = []
    for i in range(0, len(prompts), batch_size):
        gens = [torch.Generator().manual_seed(s) for s in seeds[i:i + batch_size]]
        res = pipe(prompts[i:i + batch_size], guidance_scale=cfg_scale, num_inference_steps=steps,
                   generator=gens, height=32, width=32, output_type="np")
        out.append(to_uint8(res.images))
    return np.concatenate(out) if out else np.zeros((0, 32, 32, 3), np.uint8)


def validate_base(pipe, n_per_attr: int = 20, seed: int = 0, cfg_scale: float = 3.0, steps: int = 25,
                  batch_size: int = 64, keep_images: bool = False) -> dict:
    """Per-attribute oracle accuracy of images generated from pretraining-style prompts.

    Returns ``accuracy`` (attribute -> fraction correct), ``all_correct`` (every attribute right),
    ``by_value`` (attribute -> prompted value -> accuracy), ``chance`` and the settings; with
    ``keep_images`` also ``images`` (uint8 array) and ``prompts`` (not JSON-serialisable)."""
    t0 = time.time()
    scenes = balanced_scenes(n_per_attr, seed)
    prompts = [caption(s) for s in scenes]
    images = generate(pipe, prompts, [seed * 100003 + i for i in range(len(scenes))], cfg_scale, steps, batch_size)
    verdicts = [oracle.judge(img, s) for img, s in zip(images, scenes)]
    acc = {a: float(np.mean([v[a] for v in verdicts])) for a in ATTRIBUTES}
    by_value = {a: {val: float(np.mean([v[a] for v, s in zip(verdicts, scenes) if getattr(s, a) == val]))
                    for val in _VALUES[a] if any(getattr(s, a) == val for s in scenes)}
                for a in ATTRIBUTES}
    out = {"n": len(scenes), "seed": seed, "cfg_scale": cfg_scale, "steps": steps,
           "accuracy": acc, "all_correct": float(np.mean([all(v[a] for a in ATTRIBUTES) for v in verdicts])),
           "by_value": by_value, "chance": dict(CHANCE), "seconds": round(time.time() - t0, 2)}
    if keep_images:
        out.update(images=images, prompts=prompts)
    return out


def _f(x, fmt="{:.2f}") -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else fmt.format(x)


def _m(n) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}M"


def validation_table(base_stats: dict, clip_stats: dict | None = None, dino_stats: dict | None = None) -> str:
    """Markdown for the model card.  ``base_stats`` is ``models.build``'s dict, optionally with
    ``"validation": validate_base(...)``; the encoder stats are ``build_encoders``' "clip" and
    "dino" entries (or plain ``retrieval_accuracy`` / ``identity_accuracy`` results).  Missing
    numbers show as a dash, so a partial build still renders."""
    base_stats, clip_stats, dino_stats = base_stats or {}, clip_stats or {}, dino_stats or {}
    vae, unet, saved = base_stats.get("vae", {}), base_stats.get("unet", {}), base_stats.get("saved", {})
    lines = ["## Micro base model", "",
             f"Device {base_stats.get('device', '—')}, seed {base_stats.get('seed', '—')}, "
             f"total {_f(base_stats.get('total_seconds'), '{:.0f}')} s; saved "
             f"{_f(saved.get('bytes', 0) / 1e6 if saved else None, '{:.1f}')} MB ({saved.get('dtype', '—')}).", "",
             "| part | parameters | steps | wall time (s) | final train loss | held-out |",
             "|---|---|---|---|---|---|",
             f"| VAE | {_m(vae.get('params'))} | {vae.get('steps', '—')} | {_f(vae.get('seconds'), '{:.0f}')} "
             f"| MSE {_f(vae.get('final_mse'), '{:.4f}')} | MSE {_f(vae.get('recon_mse'), '{:.4f}')}, held-out "
             f"concepts {_f(vae.get('heldout_recon_mse'), '{:.4f}')} |",
             f"| UNet + text encoder | {_m(unet.get('unet_params'))} + {_m(unet.get('text_encoder_params'))} "
             f"| {unet.get('steps', '—')} | {_f(unet.get('seconds'), '{:.0f}')} | v-MSE "
             f"{_f(unet.get('final_loss'), '{:.4f}')} | v-MSE {_f(unet.get('eval_loss'), '{:.4f}')} "
             f"({_f(unet.get('images_per_s'), '{:.0f}')} img/s) |"]
    by = vae.get("heldout_recon_by_concept")
    if by:
        lines += ["", "VAE reconstruction MSE of held-out concepts' reference images (pretraining scenes: "
                      f"{_f(vae.get('recon_mse'), '{:.4f}')}): "
                      + ", ".join(f"{k} {_f(v, '{:.4f}')}" for k, v in by.items()) + "."]
    val = base_stats.get("validation")
    if val:
        acc = val["accuracy"]
        lines += ["", f"Oracle accuracy of {val['n']} generated images (DDIM {val['steps']} steps, "
                      f"CFG {val['cfg_scale']}, balanced pretraining prompts):", "",
                  "| | " + " | ".join(ATTRIBUTES) + " | all |", "|---" * (len(ATTRIBUTES) + 2) + "|",
                  "| accuracy | " + " | ".join(_f(acc.get(a)) for a in ATTRIBUTES) + f" | {_f(val.get('all_correct'))} |",
                  "| chance | " + " | ".join(_f(CHANCE[a]) for a in ATTRIBUTES) + " | — |"]
    lines += ["", "## Micro encoders", "", "| encoder | parameters | steps | measure | value | chance |",
              "|---|---|---|---|---|---|"]
    if clip_stats:
        head = f"| micro-clip | {_m(clip_stats.get('params'))} | {clip_stats.get('steps', '—')}"
        lines += [f"{head} | image→text top-1 vs one-attribute-off captions | {_f(clip_stats.get('i2t_top1'))} "
                  f"| {_f(clip_stats.get('chance_all'))} |",
                  f"{head} | text→image top-1 vs one-attribute-off renders | {_f(clip_stats.get('t2i_top1'))} "
                  f"| {_f(clip_stats.get('chance_all'))} |"]
        by = clip_stats.get("i2t_by_attr", {})
        if by:
            lines.append(f"{head} | image→text by attribute: "
                         + ", ".join(f"{a} {_f(v)}" for a, v in by.items()) + " | | |")
    if dino_stats:
        head = f"| micro-dino | {_m(dino_stats.get('params'))} | {dino_stats.get('steps', '—')}"
        lines += [f"{head} | identity top-1 across layout and background | {_f(dino_stats.get('identity_top1'))} "
                  f"| {_f(dino_stats.get('chance'), '{:.3f}')} |",
                  f"{head} | held-out subjects top-1 | {_f(dino_stats.get('subject_top1'))} "
                  f"| {_f(dino_stats.get('chance'), '{:.3f}')} |",
                  f"{head} | cosine same / other identity | {_f(dino_stats.get('same_identity_cos'))} / "
                  f"{_f(dino_stats.get('other_identity_cos'))} | |"]
    return "\n".join(lines) + "\n"
