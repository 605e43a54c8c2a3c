"""From a micro-world image to the geometry the oracle reads: background colour, ink mask, silhouette.

* the background colour = per-channel median of the 124 border pixels (the renderer never draws
  there, so a generated image only needs most of its border right);
* the ink mask = pixels far from that estimate (threshold 50..140 RGB units, raised with the
  border's own noise level), minus speckles (pixels with < 3 ink pixels in their 5x5 window) and
  minus every blob but the largest (`main_object`), so noise cannot stretch the bounding box;
* the filled silhouette = the convex hull of the ink pixel centres.  For the convex shapes this
  reproduces a plain render exactly (a digital convex set is the lattice points of its hull) and
  also fills outlines exactly; for striped/dotted renders it is a slightly shrunk silhouette,
  which is still good enough for shape, size and position.

`analyze` computes all of it once per image for the readers in `oracle`.
"""
from __future__ import annotations

import numpy as np

from .world import CANVAS

# The ink threshold rises with the border's noise from 50 to at most 140 RGB units. Renders and the
# base model's samples have quiet borders (50). Guided method outputs often have a mottled
# background; up to oracle v2 the cap was 80, below the smallest ink/background gap (107), and the
# mottle's far pixels joined the object. Saturated inks stand 150+ units off those backgrounds.
MASK_THRESHOLD, MAX_THRESHOLD = 50.0, 140.0


def as_float(img) -> np.ndarray:
    img = np.asarray(img)
    if img.shape != (CANVAS, CANVAS, 3):
        raise ValueError(f"expected a ({CANVAS}, {CANVAS}, 3) image, got {img.shape}")
    return img.astype(float)


def _border(a: np.ndarray) -> np.ndarray:
    """The 124 pixels of the 1 px ring the renderer never draws on."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def background_rgb(img: np.ndarray) -> np.ndarray:
    return np.median(_border(img), axis=0)


def shape_mask(img) -> np.ndarray:
    """Boolean ink mask (pixels far from the estimated background), despeckled."""
    img = as_float(img)
    dist = np.linalg.norm(img - background_rgb(img), axis=2)
    # Raise the threshold with the border's own noise (see MAX_THRESHOLD). A quantile (not a sigma
    # fit) also covers the one-sided noise left after clipping on white/black backgrounds.
    ink = dist > np.clip(1.5 * np.quantile(_border(dist), 0.95), MASK_THRESHOLD, MAX_THRESHOLD)
    # 5x5 box count; the dotted style's period-2 lattice keeps >= 3 per window.
    p = np.pad(ink.astype(int), 2)
    count = sum(p[i:i + CANVAS, j:j + CANVAS] for i in range(5) for j in range(5))
    return main_object(ink & (count >= 3))


def _grow(mask: np.ndarray) -> np.ndarray:
    """8-neighbour dilation by one pixel."""
    p = np.pad(mask, 1)
    return np.logical_or.reduce([p[1 + i:1 + i + CANVAS, 1 + j:1 + j + CANVAS]
                                 for i in (-1, 0, 1) for j in (-1, 0, 1)])


def main_object(mask: np.ndarray) -> np.ndarray:
    """The ink of the largest blob, where blobs are the connected parts of the mask grown by one
    pixel (so a dotted or striped object, whose gaps are 2 px, stays one blob). Stray clusters
    of guidance noise elsewhere in the image would otherwise stretch the convex hull: measured on
    method outputs, a few specks in a corner turned the bounding box of a square into one whose
    corners the square does not fill, and the square was read as a circle."""
    return _largest(mask)


def _largest(mask: np.ndarray) -> np.ndarray:
    grown = _grow(mask)
    labels = np.zeros(mask.shape, int)
    best, best_size, n = 0, 0, 0
    for start in zip(*np.nonzero(grown)):
        if labels[start]:
            continue
        n += 1
        labels[start] = n
        stack, size = [start], 0
        while stack:
            y, x = stack.pop()
            size += int(mask[y, x])
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < CANVAS and 0 <= xx < CANVAS and grown[yy, xx] and not labels[yy, xx]:
                        labels[yy, xx] = n
                        stack.append((yy, xx))
        if size > best_size:
            best, best_size = n, size
    return mask & (labels == best) if best else mask


def hull_fill(mask: np.ndarray) -> np.ndarray:
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


def analyze(img) -> dict | None:
    """Everything the readers need, computed once; None when there is no ink."""
    img = as_float(img)
    mask = shape_mask(img)
    if not mask.any():
        return None
    filled = hull_fill(mask)
    rows, cols = np.nonzero(filled)
    top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = bottom - top + 1, right - left + 1
    return {"img": img, "mask": mask, "filled": filled, "bbox": (top, bottom, left, right),
            "h": h, "w": w, "ink_rgb": np.median(img[mask], axis=0)}
