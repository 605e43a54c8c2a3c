"""How good the micro encoders are at what the benchmark asks of them, on fresh renders.

micro-clip: zero-shot retrieval against one-attribute-off captions and renders (CLIP-T must tell
"a red circle" from "a red square").  micro-dino is measured as a subject judge in
``judge_validity.py``, like every subject-fidelity judge.
"""
from __future__ import annotations

import numpy as np
import torch

from .encoders import MicroClip, clip_caption
from .world import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, STYLES, Scene, render, sample_scenes

_ATTRS = {"shape": SHAPES, "color": tuple(COLORS), "background": tuple(BACKGROUNDS),
          "position": POSITIONS, "size": SIZES, "style": STYLES}


def _variants(scene: Scene, attr: str) -> list[Scene]:
    """``scene`` with ``attr`` changed to each other valid value (one-attribute-off negatives)."""
    out = []
    for v in _ATTRS[attr]:
        if v != getattr(scene, attr):
            try:
                out.append(Scene(**{**scene.__dict__, attr: v}))
            except ValueError:  # colour == background
                pass
    return out


@torch.no_grad()
def retrieval_accuracy(clip: MicroClip, n: int = 200, seed: int = 12345) -> dict:
    """Zero-shot top-1 retrieval on fresh renders (all styles, no subjects).  For each scene the
    candidates are its own caption/image and every one-attribute-off variant: image->text picks
    the caption, text->image the render.  ``by_attr`` restricts candidates to one attribute."""
    scenes = [s for s in sample_scenes(4 * n, seed, pretraining=False) if s.subject is None][:n]
    groups = [(s, {a: _variants(s, a) for a in _ATTRS}) for s in scenes]
    uniq = list(dict.fromkeys([s for s, _ in groups] + [v for _, g in groups for vs in g.values() for v in vs]))
    where = {s: i for i, s in enumerate(uniq)}
    img = clip.embed_images([render(s) for s in uniq])
    txt = clip.embed_texts([clip_caption(s) for s in uniq])
    hits = {k: {a: [] for a in ["all", *_ATTRS]} for k in ("i2t", "t2i")}
    for s, g in groups:
        for a in ["all", *_ATTRS]:
            cand = [where[s]] + [where[v] for b, vs in g.items() if a in ("all", b) for v in vs]
            if len(cand) < 2:
                continue
            hits["i2t"][a].append(int((txt[cand] @ img[where[s]]).argmax()) == 0)
            hits["t2i"][a].append(int((img[cand] @ txt[where[s]]).argmax()) == 0)
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    return {"n": len(scenes), "seed": seed,
            "i2t_top1": mean(hits["i2t"]["all"]), "t2i_top1": mean(hits["t2i"]["all"]),
            "i2t_by_attr": {a: mean(hits["i2t"][a]) for a in _ATTRS},
            "t2i_by_attr": {a: mean(hits["t2i"][a]) for a in _ATTRS},
            "chance_all": mean([1 / (1 + sum(len(v) for v in g.values())) for _, g in groups])}
