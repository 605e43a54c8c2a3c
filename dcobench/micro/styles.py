"""The micro world's looks: what each style does to a shape's ink mask and colours (`apply_style`).

"plain", "outline" (2 px border) and "pastel" (colours mixed 50% with white: the palette-shift
style) are pretraining styles. The rest are HELD OUT, named only through rare identifiers ("in kxv
style"), and are what a style LoRA learns:

* ``HELDOUT_STYLES``, the first two: "striped" (2-row bands) and "dotted" (2x2 px dots), both
  period 4. The world's random draws (`world.sample_scenes`), the micro encoders' training data and
  the base model's build know these two only.
* ``SECOND_STYLES`` (the verdicts issue, item 5: at least two more held-out styles, designed and
  validated before any method ran on them, then screened by `data/studies/micro_style_screen.yaml`):
  "banded" (3-row bands with 2-row gaps, period 5) and "checked" (a 3x3 px checkerboard, period 6).
  Design rules, fixed before screening: the same family as the first two (a lattice cut out of the
  ink, phase tied to the shape's box), coarser than "dotted" (whose 2x2 dots the VAE keeps but
  no method generalises, MODEL_CARD.md), no gap wider than 2 px (the oracle's ink mask keeps one blob,
  joined across gaps of up to 2 px: a first design with 3-row gaps read as one band), and told apart
  from every other style by the oracle's lattice reader on clean renders.
  They enter no draw of the world, so the base model, the encoders and every earlier validation set
  stay as they were: to the micro encoders they are as new as to the base model.
"""
from __future__ import annotations

import numpy as np

PASTEL_MIX = 0.5  # mixing with white keeps the hue but moves far from the saturated colour (oracle-visible)
PRETRAIN_STYLES = ("plain", "outline", "pastel")
HELDOUT_STYLES = ("striped", "dotted")
STYLES = PRETRAIN_STYLES + HELDOUT_STYLES  # what the world's random draws pick from
SECOND_STYLES = ("banded", "checked")
TARGET_STYLES = HELDOUT_STYLES + SECOND_STYLES  # every held-out style: a style LoRA's possible targets
ALL_STYLES = STYLES + SECOND_STYLES
# Two-piece identifiers like the first two ("k"+"xv", "p"+"tz"), none a subject's
STYLE_IDENTIFIERS = {"striped": "kxv", "dotted": "ptz", "banded": "vfk", "checked": "qwx"}


def apply_style(style: str, mask: np.ndarray, tex: np.ndarray):
    """(mask, texture) of a shape drawn in ``style``; lattice phases start at the shape's top-left."""
    rows, cols = np.nonzero(mask)
    iy, ix = np.arange(mask.shape[0])[:, None] - rows.min(), np.arange(mask.shape[1])[None, :] - cols.min()
    if style == "outline":
        inner = mask
        for _ in range(2):  # 4-neighbour erosion, twice: a 2 px border
            p = np.pad(inner, 1)
            inner = inner & p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
        mask = mask & ~inner
    elif style == "pastel":
        tex = np.round(tex + (255.0 - tex) * PASTEL_MIX)
    elif style == "striped":
        # Phase is tied to the shape's top row so the first band is always ink.
        mask = mask & ((iy // 2) % 2 == 0)
    elif style == "dotted":
        # 2x2 px dots: 1 px dots (period 2) were finer than the 2x-downsampling VAE reproduces.
        mask = mask & (iy % 4 < 2) & (ix % 4 < 2)
    elif style == "banded":
        # 3-row bands, 2-row gaps (period 5), first band at the top row like striped's: a shape of 12
        # or 18 rows then ends in ink at both ends (4-on/2-off bands lost a large circle's bottom rows,
        # and it read as a square).
        mask = mask & (iy % 5 < 3)
    elif style == "checked":
        # The board starts 1 px above and left of the shape's box: started at the box's corner, a small
        # triangle lost its apex cell and a bottom corner and read as a circle (phases checked on every
        # shape, size, position and jitter: this one and most others keep each attribute readable).
        mask = mask & (((iy + 1) // 3 + (ix + 1) // 3) % 2 == 0)
    return mask, tex
