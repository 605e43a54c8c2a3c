"""Analytic oracle for the micro world: read scene attributes back from pixels.

Design
------
Everything is derived from two robust estimates and one geometric object:

* the background colour = per-channel median of the 124 border pixels (the
  renderer never draws there, so a generated image only needs most of its
  border right);
* the ink mask = pixels far from that estimate (threshold 50..80 RGB units,
  raised with the border's own noise level), minus speckles (pixels with < 3
  ink pixels in their 5x5 window), so isolated noise cannot stretch the
  bounding box;
* the filled silhouette = the convex hull of the ink pixel centres.  For the
  convex shapes this reproduces a plain render exactly (a digital convex
  set is the lattice points of its hull) and also fills outlines exactly;
  for striped/dotted renders it is a slightly shrunk silhouette, which is
  still good enough for shape, size and position.

Attributes: colour is the median ink colour matched against saturated and
pastel palettes (so it survives outline/stripes/dots and also reveals the
pastel style); shape uses the hull's bbox fill ratio (square ~1, circle
~0.78) plus top/bottom area balance (triangles are bottom-heavy); size is
the bbox extent; position is the nearest layout anchor of that size; style
comes from per-row ink coverage of the hull (striped: rows alternate empty
and full, dotted: empty and half full, outline: no empty rows but a hole).

Held-out subjects are not closed-form, so they are judged by nearest
template: the image's appearance features (ink-colour composition, fill,
solidity, colour-transition rate) are compared with clean renders of every
subject and every plain shape/colour at the detected size; the subject
matches when it is the nearest.  Their style is read the same way.

All readers return plain Python strings (``None`` when no ink is found).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from .world import (BACKGROUNDS, CANVAS, COLORS, PASTEL, POSITIONS, SHAPES, STYLES, SUBJECTS,
                    Scene, anchor, render)

MASK_THRESHOLD, MAX_THRESHOLD = 50.0, 80.0  # ink/background gaps are >= 107 RGB units
SIZE_SPLIT = 16  # small bboxes are 12 px, large 20 px (striped/dotted lose <= 2 px)
_INK_NAMES = list(COLORS) + [f"pastel {k}" for k in PASTEL]
_INK_RGB = np.array(list(COLORS.values()) + list(PASTEL.values()), float)


def _nearest(rgb, palette: dict) -> str:
    names = list(palette)
    d = np.linalg.norm(np.array(list(palette.values()), float) - np.asarray(rgb, float), axis=1)
    return names[int(np.argmin(d))]


def _as_float(img) -> np.ndarray:
    img = np.asarray(img)
    if img.shape != (CANVAS, CANVAS, 3):
        raise ValueError(f"expected a ({CANVAS}, {CANVAS}, 3) image, got {img.shape}")
    return img.astype(float)


def _background_rgb(img: np.ndarray) -> np.ndarray:
    border = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.median(border, axis=0)


def background(img) -> str:
    return _nearest(_background_rgb(_as_float(img)), BACKGROUNDS)


def shape_mask(img) -> np.ndarray:
    """Boolean ink mask (pixels far from the estimated background), despeckled."""
    img = _as_float(img)
    dist = np.linalg.norm(img - _background_rgb(img), axis=2)
    # Raise the threshold with the border's own noise but stay below the
    # smallest ink gap.  A quantile (not a sigma fit) also covers the one-sided
    # noise left after clipping on white/black backgrounds.
    border = np.concatenate([dist[0], dist[-1], dist[1:-1, 0], dist[1:-1, -1]])
    ink = dist > np.clip(1.5 * np.quantile(border, 0.95), MASK_THRESHOLD, MAX_THRESHOLD)
    # 5x5 box count; the dotted style's period-2 lattice keeps >= 3 per window.
    p = np.pad(ink.astype(int), 2)
    count = sum(p[i:i + CANVAS, j:j + CANVAS] for i in range(5) for j in range(5))
    return ink & (count >= 3)


def _hull_fill(mask: np.ndarray) -> np.ndarray:
    rows = np.nonzero(mask.any(1))[0]
    if len(rows) == 0:
        return mask.copy()
    # Row extremes are the only candidates for hull vertices.
    pts = set()
    for r in rows:
        cols = np.nonzero(mask[r])[0]
        pts.update({(int(cols[0]), int(r)), (int(cols[-1]), int(r))})
    pts = sorted(pts)

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    hull = lower[:-1] + upper[:-1]
    if len(hull) < 3:  # a line or a point: nothing to fill
        return mask.copy()
    ys, xs = np.mgrid[:CANVAS, :CANVAS]
    filled = np.ones_like(mask)
    for a, b in zip(hull, hull[1:] + hull[:1]):
        filled &= (b[0] - a[0]) * (ys - a[1]) - (b[1] - a[1]) * (xs - a[0]) >= 0
    return filled | mask


def _analyze(img) -> dict | None:
    """Everything the readers need, computed once; None when there is no ink."""
    img = _as_float(img)
    mask = shape_mask(img)
    if not mask.any():
        return None
    filled = _hull_fill(mask)
    rows, cols = np.nonzero(filled)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = bottom - top + 1, right - left + 1
    return {"img": img, "mask": mask, "filled": filled, "bbox": (top, bottom, left, right),
            "h": h, "w": w, "ink_rgb": np.median(img[mask], axis=0)}


def _size(a) -> str:
    return "large" if max(a["h"], a["w"]) >= SIZE_SPLIT else "small"


def _position(a) -> str:
    top, bottom, left, right = a["bbox"]
    centre = np.array([(left + right + 1) / 2, (top + bottom + 1) / 2])
    size = _size(a)
    d = [np.linalg.norm(centre - np.array(anchor(p, size))) for p in POSITIONS]
    return POSITIONS[int(np.argmin(d))]


def _shape(a) -> str:
    f = a["filled"][a["bbox"][0]:a["bbox"][1] + 1, a["bbox"][2]:a["bbox"][3] + 1]
    half = f.shape[0] // 2
    upper, lower = f[:half].sum(), f[-half:].sum() if half else 0
    balance = min(upper, lower) / max(upper, lower, 1)
    if balance < 0.6:
        return "triangle"
    return "square" if f.mean() >= 0.9 else "circle"


def _ink_name(a) -> str:
    return _INK_NAMES[int(np.argmin(np.linalg.norm(_INK_RGB - a["ink_rgb"], axis=1)))]


def _style(a) -> str:
    mask, filled = a["mask"], a["filled"]
    rows = filled.any(1)
    cover = mask[rows].sum(1) / filled[rows].sum(1)
    empty = cover < 0.15
    if empty.mean() >= 0.3:
        return "striped" if cover[~empty].mean() >= 0.75 else "dotted"
    if 1 - mask.sum() / filled.sum() >= 0.12:
        return "outline"
    return "pastel" if _ink_name(a).startswith("pastel") else "plain"


def _color(a) -> str:
    return _ink_name(a).replace("pastel ", "")  # pastel is a style, not a colour


def _read(img, fn):
    a = _analyze(img)
    return None if a is None else fn(a)


def color(img) -> str | None:
    """Median ink colour -> nearest of COLORS (pastel tints map to their base)."""
    return _read(img, _color)


def shape(img) -> str | None:
    """circle / square / triangle.  Exact on clean renders of every style
    (outline is filled exactly by the hull; stripes and dots shrink it a bit
    but keep fill ratio and top/bottom balance); star subjects read as
    triangle or circle, which is meaningless for them."""
    return _read(img, _shape)


def size(img) -> str | None:
    return _read(img, _size)


def position(img) -> str | None:
    return _read(img, _position)


def style(img) -> str | None:
    """plain / outline / pastel / striped / dotted for single-colour shapes.
    Held-out subjects have holes and textures of their own: use judge()."""
    return _read(img, _style)


_READERS = {"shape": _shape, "color": _color, "position": _position, "size": _size,
            "style": _style}


def _attributes(img, a) -> dict:
    out = {"background": background(img)}
    return {**out, **{k: None if a is None else f(a) for k, f in _READERS.items()}}


def read_attributes(img) -> dict:
    """All closed-form attributes (background, shape, color, position, size,
    style) in one pass; everything but background is None without ink."""
    return _attributes(img, _analyze(img))


def _features(a) -> np.ndarray:
    mask = a["mask"]
    d = np.linalg.norm(a["img"][..., None, :] - _INK_RGB, axis=-1)
    labels = np.where(mask, np.argmin(d, axis=-1), -1)
    comp = np.bincount(labels[mask], minlength=len(_INK_NAMES)) / mask.sum()
    pairs = [(labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])]
    both = sum(((x >= 0) & (y >= 0)).sum() for x, y in pairs)
    changes = sum(((x >= 0) & (y >= 0) & (x != y)).sum() for x, y in pairs)
    fill = a["filled"].sum() / (a["h"] * a["w"])
    solidity = mask.sum() / a["filled"].sum()
    return np.concatenate([0.5 * comp, [fill, solidity, changes / max(both, 1)]])


@lru_cache(maxsize=4096)
def _template(candidate: str, style: str, size: str, bg: str) -> np.ndarray | None:
    if candidate in SUBJECTS:
        scene = Scene(SUBJECTS[candidate].class_shape, None, bg, "center", size, style, candidate)
    else:
        col, shp = candidate.split()
        if col == bg:
            return None
        scene = Scene(shp, col, bg, "center", size, style)
    return _features(_analyze(render(scene)))


def _nearest_template(a, bg: str, options) -> str:
    """``options`` are (label, candidate, style); the label of the closest template wins."""
    feats, best, best_d = _features(a), None, np.inf
    for label, cand, sty in options:
        t = _template(cand, sty, _size(a), bg)
        if t is not None and (d := np.abs(feats - t).sum()) < best_d:
            best, best_d = label, d
    return best


def _identify(a, bg: str, style: str) -> str:
    cands = list(SUBJECTS) + [f"{c} {s}" for c in COLORS for s in SHAPES]
    return _nearest_template(a, bg, [(c, c, style) for c in cands])


def identify_subject(img, style: str = "plain") -> str | None:
    """Nearest identity among held-out subjects and plain "colour shape" pairs."""
    a = _analyze(img)
    return None if a is None else _identify(a, background(img), style)


def subject_match(img, subject: str, style: str = "plain") -> bool:
    return identify_subject(img, style) == subject


def subject_style(img, subject: str) -> str | None:
    """Which style of ``subject`` the image looks most like."""
    a = _analyze(img)
    if a is None:
        return None
    return _nearest_template(a, background(img), [(s, subject, s) for s in STYLES])


def judge(img, scene: Scene) -> dict[str, bool]:
    """Per-attribute correctness of ``img`` against the ``scene`` it should show.
    Regular scenes: shape, color, background, position, size, style.  Held-out
    subjects: background, position, size, style and subject_match."""
    a = _analyze(img)
    out = {"background": background(img) == scene.background}
    if scene.subject is not None:
        keys = ("position", "size", "style", "subject_match")
        if a is None:
            return {**out, **dict.fromkeys(keys, False)}
        bg = background(img)
        styles = [(st, scene.subject, st) for st in STYLES]
        out.update(position=_position(a) == scene.position, size=_size(a) == scene.size,
                   style=_nearest_template(a, bg, styles) == scene.style,
                   subject_match=_identify(a, bg, scene.style) == scene.subject)
        return {k: bool(v) for k, v in out.items()}
    got = _attributes(img, a)
    return {k: bool(v == getattr(scene, k)) for k, v in got.items()}
