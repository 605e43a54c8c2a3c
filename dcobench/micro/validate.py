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

from . import oracle, silhouette
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


def seed_diversity(pipe, n: int = 60, seed: int = 0, cfg_scale: float = 3.0, steps: int = 25) -> dict:
    """Two sampling seeds per prompt: how often the images differ.  The world's uncaptioned jitter
    is what a seed should decide; a model that ignores the seed draws the same image twice."""

    scenes = balanced_scenes(max(1, n // 6), seed + 1)[:n]
    prompts = [caption(s) for s in scenes]
    a = generate(pipe, prompts, [seed * 100003 + i for i in range(len(prompts))], cfg_scale, steps)
    b = generate(pipe, prompts, [seed * 100003 + 50000 + i for i in range(len(prompts))], cfg_scale, steps)
    diff = np.abs(a.astype(float) - b.astype(float)).mean((1, 2, 3))
    boxes = [(silhouette.analyze(x) or {}).get("bbox") for x in np.concatenate([a, b])]
    moved = [p != q for p, q in zip(boxes[:len(a)], boxes[len(a):])]
    return {"n": len(prompts), "mean_abs_diff": float(diff.mean()), "share_differing": float((diff > 2.0).mean()),
            "share_box_moved": float(np.mean(moved))}


def degradation(pipe, n: int = 60, seed: int = 0, cfg_scale: float = 3.0, steps: int = 25) -> dict:
    """Blur and noise of the base model's samples against clean renders of their prompts
    (``judges.sample_degradation``): the strength the judges' degraded sets use. Samples that do not
    follow their prompt (the oracle reads another shape, colour, background, position, size or
    style) are left out: the distance from a purple shape to the blue one its prompt asked for is a
    failure to follow the prompt, not how a correct sample is degraded."""
    from .judges import sample_degradation

    scenes = balanced_scenes(max(1, n // 6), seed + 2)[:n]
    images = generate(pipe, [caption(s) for s in scenes], [seed * 100003 + 7 + i for i in range(len(scenes))],
                      cfg_scale, steps)
    keys = ("background", "shape", "color", "position", "size", "style")
    follows = [all(oracle.read_attributes(img)[k] == getattr(s, k) for k in keys) for img, s in zip(images, scenes)]
    keep = np.array(follows) if any(follows) else np.ones(len(scenes), bool)  # an untrained model: all
    pairs = sample_degradation(images[keep], [s for s, ok in zip(scenes, keep) if ok])
    blur, noise = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    shift = np.array([np.linalg.norm(p[2:5]) for p in pairs])
    return {"n": len(pairs), "n_off_prompt": len(scenes) - sum(follows), "strengths": [list(p) for p in pairs],
            "blur_median": float(np.median(blur)), "noise_median": float(np.median(noise)),
            "noise_p90": float(np.quantile(noise, 0.9)), "ink_shift_median": float(np.median(shift)),
            "ink_shift_p90": float(np.quantile(shift, 0.9))}


def _f(x, fmt="{:.2f}") -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else fmt.format(x)


def _m(n) -> str:
    return "—" if n is None else f"{n / 1e6:.2f}M"


TARGETS = {"shape": 0.9, "color": 0.95, "background": 0.95}
DIVERSITY_TARGET = 0.8  # share of prompts whose two seeds give visibly different images


def base_checks(base: dict, diversity: dict | None = None) -> dict[str, bool]:
    out = {f"base model {a} >= {t}": base["accuracy"][a] >= t for a, t in TARGETS.items()}
    if diversity is not None:
        out[f"samples differ between seeds in >= {DIVERSITY_TARGET:.0%} of prompts"] = \
            diversity["share_differing"] >= DIVERSITY_TARGET
    return out


def validation_table(stats: dict, base: dict, diversity: dict, degradation: dict, retrieval: dict) -> str:
    """Markdown for ``VALIDATION.md``: build numbers (``build_stats.json``), prompt following,
    seed diversity, measured degradation and micro-clip retrieval."""
    b, enc = stats.get("build", {}), stats.get("encoders", {})
    vae, unet = b.get("vae", {}), b.get("unet", {})
    lines = ["## Micro base model", "",
             "| part | parameters | steps | wall time (s) | device, threads | final train loss | held-out |",
             "|---|---|---|---|---|---|---|",
             f"| VAE | {_m(vae.get('params'))} | {vae.get('steps', '—')} | {_f(vae.get('wall_seconds'), '{:.0f}')} "
             f"| {vae.get('device', '—')}, {vae.get('torch_threads', '—')} | MSE {_f(vae.get('final_mse'), '{:.4f}')} "
             f"| MSE {_f(vae.get('recon_mse'), '{:.4f}')}, held-out concepts {_f(vae.get('heldout_recon_mse'), '{:.4f}')} |",
             f"| UNet + text encoder | {_m(unet.get('unet_params'))} + {_m(unet.get('text_encoder_params'))} "
             f"| {unet.get('steps', '—')} | {_f(unet.get('wall_seconds'), '{:.0f}')} "
             f"| {unet.get('device', '—')}, {unet.get('torch_threads', '—')} | v-MSE {_f(unet.get('final_loss'), '{:.4f}')} "
             f"| v-MSE {_f(unet.get('eval_loss'), '{:.4f}')} ({_f(unet.get('images_per_s'), '{:.0f}')} img/s) |"]
    for name in ("clip", "dino"):
        e = enc.get(name, {})
        lines.append(f"| micro-{name} | — | {e.get('steps', '—')} | {_f(e.get('wall_seconds'), '{:.0f}')} "
                     f"| {e.get('device', '—')}, {e.get('torch_threads', '—')} | {_f(e.get('final_loss'), '{:.3f}')} "
                     f"| {e.get('data', '—')} |")
    by = vae.get("heldout_recon_by_concept")
    if by:
        lines += ["", "VAE reconstruction MSE ([-1, 1] units) of each held-out concept's reference images "
                      "(target <= 0.005): " + ", ".join(f"{k} {_f(v, '{:.4f}')}" for k, v in by.items()) + "."]
    acc = base["accuracy"]
    lines += ["", f"Oracle accuracy of {base['n']} generated images (DDIM {base['steps']} steps, CFG "
                  f"{base['cfg_scale']}, balanced pretraining prompts; targets shape >= 0.9, colour and background "
                  ">= 0.95):", "",
              "| | " + " | ".join(ATTRIBUTES) + " | all |", "|---" * (len(ATTRIBUTES) + 2) + "|",
              "| accuracy | " + " | ".join(_f(acc.get(a)) for a in ATTRIBUTES) + f" | {_f(base.get('all_correct'))} |",
              "| chance | " + " | ".join(_f(CHANCE[a]) for a in ATTRIBUTES) + " | — |", "",
              f"Seed diversity ({diversity['n']} prompts, two sampling seeds each): images differ (mean |diff| > 2 "
              f"RGB units) for {diversity['share_differing']:.0%} of prompts, the shape's box moves for "
              f"{diversity['share_box_moved']:.0%}; mean |diff| {diversity['mean_abs_diff']:.1f} RGB units.", "",
              f"Degradation of real samples ({degradation['n']} base-model samples that follow their prompt, "
              f"{degradation.get('n_off_prompt', 0)} that do not left out, against the best-aligned clean "
              f"render of their prompt): Gaussian blur sigma median {degradation['blur_median']:.2f} px; object colour "
              f"shift median {degradation['ink_shift_median']:.1f} RGB units (90th percentile "
              f"{degradation['ink_shift_p90']:.1f}); pixel noise (robust std) median {degradation['noise_median']:.1f} "
              f"(90th percentile {degradation['noise_p90']:.1f}). The judges' degraded sets apply these to clean renders "
              "(the measured blur already holds the VAE's), one measured sample's values per image.",
              "", "micro-clip zero-shot retrieval against one-attribute-off candidates (chance "
              f"{_f(retrieval.get('chance_all'))}): image→text {_f(retrieval.get('i2t_top1'))}, text→image "
              f"{_f(retrieval.get('t2i_top1'))}; image→text by attribute: "
              + ", ".join(f"{a} {_f(v)}" for a, v in retrieval.get("i2t_by_attr", {}).items()) + "."]
    checks = base_checks(base, diversity)
    lines += [""] + [f"- {'met' if ok else 'NOT met'}: {k}" for k, ok in checks.items()]
    return "\n".join(lines) + "\n"
