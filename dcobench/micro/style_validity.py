"""Style-judge validity: how often each style-fidelity judge is right, on labelled image sets.

The style claim of `dcobench study` scores style LoRAs with the oracle's style reader
(`oracle_style`: does the image show the prompted held-out style?) and with style-CLIP-I (mean
cosine to the style's references). Like the subject judges (`judge_validity.py`), they count only
with known error rates. For each held-out style (striped, dotted, banded, checked) the sets are, over shapes,
colours, backgrounds, positions and sizes of the pretraining world (random jitter):

positives
    ``clean``: renders in the style; ``vae``: the same through the micro VAE's round trip (its
    oracle acceptance rate is how well the VAE reproduces the style); ``degraded``: the round trip
    plus the blur and noise measured on the base model's own samples (`judges.degrade`).
negatives (degraded the same way, except the base model's samples)
    ``plain (base model)``: the base model's samples of the same captions without the style
    phrase (the look a style LoRA starts from); ``plain``: renders in the plain style;
    ``outline``, ``pastel``: the pretraining styles; ``other held-out``: the nearest other held-out
    style (`RIVAL`: striped and dotted each other's, as before the later two existed; banded
    striped's bands, checked dotted's two-way lattice).

The oracle is binary: acceptance rate per set (TPR on positives, FPR on negatives), per style and
pooled. Embedding judges are rated by AUC of ``degraded`` against each negative set (per style,
then averaged) and by their error rates at the threshold that best separates ``degraded`` from
``plain (base model)``. `measure` returns all of it; `table` renders markdown for VALIDATION.md.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from . import judges, oracle
from .validate import generate
from .references import style_reference_scenes
from .world import COLORS, SHAPES, TARGET_STYLES, Scene, caption, render

RIVAL = {"striped": "dotted", "dotted": "striped", "banded": "striped", "checked": "dotted"}
POSITIVE_SETS = ("clean", "vae", "degraded")
NEGATIVE_SETS = ("plain (base model)", "plain", "outline", "pastel", "other held-out")
TARGETS = {"oracle_style": "TPR >= 0.90 on every positive set, FPR <= 0.05 on every negative set (each style)",
           "style_clip_i": "AUC >= 0.90, degraded style vs plain (both plain sets; each style)"}


def scenes(rng: np.random.Generator, n: int | None = None) -> list[Scene]:
    """Plain scenes over every background x position x size (or `n` of them), shapes and colours cycled."""
    out = []
    for i, (bg, pos, size, dx, dy) in enumerate(judges.layouts(rng, n)):
        colours = [c for c in COLORS if c != bg]
        out.append(Scene(SHAPES[i % 3], colours[(i // 3) % len(colours)], bg, pos, size, "plain", None, dx, dy))
    return out


def _styled(base: list[Scene], style: str) -> np.ndarray:
    return np.stack([render(dataclasses.replace(s, style=style)) for s in base])


def build_sets(pipe, style: str, strengths, rng, n: int | None = None, cfg_scale: float = 3.0, steps: int = 25,
               seed: int = 0) -> dict[str, np.ndarray]:
    """Every positive and negative set of one held-out `style`, as uint8 image arrays."""
    base = scenes(rng, n)
    clean = _styled(base, style)
    vae = judges.vae_round_trip(pipe.vae, clean)
    sets = {"clean": clean, "vae": vae, "degraded": judges.degrade(clean, strengths, rng)}  # see judge_validity
    sets["plain (base model)"] = generate(pipe, [caption(s) for s in base],
                                          [seed * 7919 + 17 + i for i in range(len(base))], cfg_scale, steps)
    other = RIVAL[style]
    for name, look in (("plain", "plain"), ("outline", "outline"), ("pastel", "pastel"), ("other held-out", other)):
        sets[name] = judges.degrade(_styled(base, look), strengths, rng)
    return sets


def _embed_score(backbone, images: np.ndarray, style: str) -> np.ndarray:
    refs = backbone.embed_images([render(s) for s in style_reference_scenes(style)])
    return (backbone.embed_images(list(images)) @ refs.T).mean(1).numpy()


def measure(pipe, clip, strengths, dino=None, n: int | None = None, seed: int = 0, cfg_scale: float = 3.0,
            steps: int = 25) -> dict:
    """Rates of the oracle per style and set (and pooled), AUCs and thresholds of the embedding judges."""
    rng = np.random.default_rng(seed)
    encoders = {"style_clip_i": clip, **({"style_dino": dino} if dino is not None else {})}
    per_style, scores, n_per_set = {}, {j: {k: [] for k in POSITIVE_SETS + NEGATIVE_SETS} for j in encoders}, {}
    pooled = {k: [] for k in POSITIVE_SETS + NEGATIVE_SETS}
    for style in TARGET_STYLES:  # the later styles last: the first two's sets keep their random draws
        sets = build_sets(pipe, style, strengths, rng, n, cfg_scale, steps, seed)
        per_style[style] = {}
        for kind, imgs in sets.items():
            verdicts = np.array([oracle.style(img) == style for img in imgs], float)
            per_style[style][kind] = float(verdicts.mean())
            pooled[kind].append(verdicts)
            n_per_set[kind] = n_per_set.get(kind, 0) + len(imgs)
            for j, bb in encoders.items():
                scores[j][kind].append(_embed_score(bb, imgs, style))
    out = {"n_per_set": n_per_set, "styles": list(TARGET_STYLES), "oracle_style": {
        "per_style": per_style, "pooled": {k: float(np.concatenate(v).mean()) for k, v in pooled.items()}}}
    plain_sets = ("plain (base model)", "plain")
    for j in encoders:
        s = scores[j]
        # per style: the micro encoders were trained with striped and dotted, never the later two
        per = {st: {neg: float(judges.auc(s["degraded"][i], s[neg][i])) for neg in NEGATIVE_SETS}
               for i, st in enumerate(TARGET_STYLES)}
        auc = {neg: float(np.mean([per[st][neg] for st in per])) for neg in NEGATIVE_SETS}
        thr = [judges.best_threshold(p, q) for p, q in zip(s["degraded"], s["plain (base model)"])]
        out[j] = {"auc": auc, "auc_per_style": per, "threshold": [t[0] for t in thr],
                  "tpr_at_threshold": float(np.mean([t[1] for t in thr])),
                  "fpr_at_threshold": float(np.mean([t[2] for t in thr])),
                  "plain_auc_min": float(min(auc[k] for k in plain_sets)),
                  "plain_auc_min_per_style": {st: float(min(per[st][k] for k in plain_sets)) for st in per}}
    out["checks"] = checks(out)
    return out


def checks(res: dict) -> dict[str, bool]:
    per = res["oracle_style"]["per_style"]
    out = {f"oracle_style TPR >= 0.90 on every positive set ({s})": all(per[s][k] >= 0.90 for k in POSITIVE_SETS)
           for s in per}
    out.update({f"oracle_style FPR <= 0.05 on every negative set ({s})": all(per[s][k] <= 0.05 for k in NEGATIVE_SETS)
                for s in per})
    if "style_clip_i" in res:
        for st, v in res["style_clip_i"]["plain_auc_min_per_style"].items():
            out[f"style_clip_i AUC >= 0.90, degraded style vs plain ({st})"] = v >= 0.90
    return out


def table(res: dict) -> str:
    sets = POSITIVE_SETS + NEGATIVE_SETS
    n = res["n_per_set"]
    lines = ["| judge | " + " | ".join(f"{k} (n={n[k]})" for k in sets) + " |", "|---" * (len(sets) + 1) + "|"]
    o = res["oracle_style"]
    for style, rates in o["per_style"].items():
        lines.append(f"| oracle_style = {style}: accepted | " + " | ".join(f"{rates[k]:.2f}" for k in sets) + " |")
    for j in ("style_clip_i", "style_dino"):
        for st, auc in res.get(j, {}).get("auc_per_style", {}).items():
            lines.append(f"| {j}: AUC vs degraded {st} | — | — | — | "
                         + " | ".join(f"{auc[k]:.2f}" for k in NEGATIVE_SETS) + " |")
    lines += ["", "| judge | threshold (per style) | TPR on degraded | FPR on base-model plain |", "|---|---|---|---|"]
    for j in ("style_clip_i", "style_dino"):
        if j in res:
            r = res[j]
            lines.append(f"| {j} | {', '.join(f'{t:.3f}' for t in r['threshold'])} | {r['tpr_at_threshold']:.2f} "
                         f"| {r['fpr_at_threshold']:.2f} |")
    lines += ["", "The oracle's acceptance of the `vae` set is how well the micro VAE reproduces each held-out "
              "style. The micro encoders (style_clip_i, style_dino) were trained with striped and dotted in their "
              "data; banded and checked are as new to them as to the base model.", "", "Targets: " + "; ".join(f"{k}: {v}" for k, v in TARGETS.items()) + ".", ""]
    lines += [f"- {'met' if ok else 'NOT met'}: {name}" for name, ok in res["checks"].items()]
    return "\n".join(lines) + "\n"

