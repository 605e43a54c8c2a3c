"""Procedural 32x32 micro world for personalization benchmarks.

A ``Scene`` is a handful of discrete attributes plus an uncaptioned jitter.  ``render`` turns it
into a 32x32 RGB uint8 image with no randomness at all, so a scene *is* its image and the oracle
(``oracle.py``) can read every captioned attribute back exactly, because:

* masks are hard (a pixel is ink when its *centre* lies in the continuous shape) and every
  silhouette is convex, so the convex hull of the ink pixels recovers it;
* shapes fill a 12 px ("small") or 18 px ("large") box centred on an integer anchor moved by the
  scene's jitter, and never touch the 1 px border ring, which stays pure background;
* ink colours and backgrounds are >= 100 RGB units apart.

The jitter (``dx``, ``dy``: up to 2 px for small shapes, 1 px for large ones) is never captioned,
like a photo's exact framing: a caption leaves it open, so the base model learns a distribution
per caption and its samples vary with the sampling seed (with a caption that fixed every pixel,
two seeds gave the same image).

Styles (``styles.py``): "plain", "outline" and "pastel" are pretraining styles; "striped" and
"dotted", and later "banded" and "checked", are HELD OUT and only named through rare identifiers
("in kxv style").

Held-out subjects are specific instances of a class the base model knows, as DreamBench's are
(this dog, this backpack): the class shape in the class colour with a distinctive part in a
second colour (``tent``: a yellow triangle with a purple base band; ``quilt``: a green square with
orange top-left and bottom-right quarters; ``badge``: a red circle with a yellow centre disc; and
eighteen more, ``SECOND_SUBJECTS``: halves, corners, stripes, quarters, bands, a centre square).
Their class noun is that pretraining look in the caption form pretraining uses ("yellow
triangle"), so the class prior is a near miss that differs exactly in the part: what the oracle's
region test checks (``oracle.subject_regions``).  Captions are compositional: "a red circle on a
blue background, small, top left, in outline style", "a sks yellow triangle on a white
background, large, center".
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .styles import (ALL_STYLES, HELDOUT_STYLES, PASTEL_MIX, PRETRAIN_STYLES, SECOND_STYLES,  # noqa: F401
                     STYLE_IDENTIFIERS, STYLES, TARGET_STYLES, apply_style)

CANVAS = 32
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220),
    "yellow": (245, 215, 30), "purple": (140, 40, 180), "orange": (250, 130, 10)}
PASTEL: dict[str, tuple[int, int, int]] = {
    k: tuple(int(round(c + (255 - c) * PASTEL_MIX)) for c in v) for k, v in COLORS.items()}
# "blue" is both a colour and a background (same RGB): the sampler rejects that pair.
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (255, 255, 255), "black": (0, 0, 0), "gray": (100, 100, 100), "blue": COLORS["blue"]}
SHAPES = ("circle", "square", "triangle")
POSITIONS = ("center", "top left", "top right", "bottom left", "bottom right")
SIZES = ("small", "large")
HALF_EXTENT = {"small": 6, "large": 9}
# Corner anchors leave room for the jitter inside the free 1 px border ring.
_CORNER_OFFSET = {"small": 7, "large": 5}
JITTER = {"small": 2, "large": 1}


@dataclass(frozen=True)
class Subject:
    name: str
    class_shape: str  # the pretraining shape it is an instance of
    identifier: str
    colors: tuple[str, str]  # (body = the class colour, part)
    part: str  # which region carries the part colour (``part_mask``)

    @property
    def class_noun(self) -> str:
        """The class prior as the base model knows it: "yellow triangle", a pretraining caption's
        colour + shape. A bare "triangle" never occurs in pretraining captions, so the base model
        answered it with a gray background whatever the prompt said (measured); with the colour,
        the base prompt, DCO's reference pass and consistency guidance are in distribution."""
        return f"{self.colors[0]} {self.class_shape}"


# One-piece identifiers ("sks</w>", "bnp</w>", "bsp</w>"): with the colour in the class noun,
# two-piece ones pushed the restyle prompts past the 20-token text length.
SUBJECTS: dict[str, Subject] = {
    "tent": Subject("tent", "triangle", "sks", ("yellow", "purple"), "base band"),
    "quilt": Subject("quilt", "square", "bnp", ("green", "orange"), "quarters"),
    "badge": Subject("badge", "circle", "bsp", ("red", "yellow"), "centre disc"),
    # The second set (the verdicts issue: power counted in subjects), designed and screened
    # (`dcobench micro screen-subjects`, data/micro/SUBJECTS.md) before any method ran on them, by
    # the rules of subject_screen.py. Design rules: each is a pretraining (shape, colour) with a part
    # in a second colour; no blue (an evaluation background); no yellow/orange or red/orange pair
    # (< 110 RGB units apart). First batch: flag ... card (7 of 12 passed: the four circles and
    # lamp failed). Second batch, designed after that screen and before any method ran, by one more
    # rule: the first design in a fixed order (shape, part kind, body, part colour) with no clean-render
    # confusion with any subject and >= 8 part and body pixels in a small clean render: brick ... hill.
    "flag": Subject("flag", "square", "rcn", ("red", "green"), "left half"),
    "lamp": Subject("lamp", "triangle", "hmv", ("green", "purple"), "top half"),
    "coin": Subject("coin", "circle", "dbz", ("green", "purple"), "quarters"),
    "tile": Subject("tile", "square", "pbc", ("purple", "yellow"), "corners"),
    "door": Subject("door", "square", "tvc", ("red", "green"), "vertical stripe"),
    "belt": Subject("belt", "circle", "gsp", ("green", "yellow"), "horizontal stripe"),
    "moon": Subject("moon", "circle", "pln", ("purple", "orange"), "left half"),
    "sail": Subject("sail", "triangle", "mwf", ("red", "yellow"), "left half"),
    "gem": Subject("gem", "square", "ccd", ("green", "red"), "centre square"),
    "dome": Subject("dome", "circle", "bdg", ("red", "green"), "top half"),
    "spire": Subject("spire", "triangle", "szn", ("purple", "green"), "vertical stripe"),
    "card": Subject("card", "square", "lpg", ("yellow", "red"), "diagonal half"),
    "brick": Subject("brick", "square", "mgt", ("red", "purple"), "bottom half"),
    "cone": Subject("cone", "triangle", "nrg", ("green", "yellow"), "bottom half"),
    "book": Subject("book", "square", "bpd", ("yellow", "green"), "right half"),
    "wedge": Subject("wedge", "triangle", "kts", ("purple", "red"), "right half"),
    "chest": Subject("chest", "square", "rsc", ("orange", "purple"), "top band"),
    "hill": Subject("hill", "triangle", "fbs", ("red", "green"), "horizontal stripe")}
# The first three: the default run's and the first study's subjects. `sample_scenes` and the judge
# validity sets draw from these only, so the base model's build and data/micro/VALIDATION.md do not
# move when subjects are added (a longer list changes the random stream).
HELDOUT_SUBJECTS = ("tent", "quilt", "badge")
SECOND_SUBJECTS = tuple(n for n in SUBJECTS if n not in HELDOUT_SUBJECTS)
_PAIRS = {(s, c) for s in SHAPES for c in COLORS}
_LAYOUTS = {(b, p, s) for b in BACKGROUNDS for p in POSITIONS for s in SIZES}


def part_mask(subject: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where ``subject``'s part colour goes, in coordinates normalised to the shape's box
    (u, v in [-1, 1], v down).  Shared by the renderer and the oracle's region test."""
    part = SUBJECTS[subject].part
    if part == "base band":  # the bottom quarter of the height: 44% of a triangle's area
        return v >= 0.5
    if part == "quarters":
        return (u < 0) == (v < 0)
    if part == "centre disc":  # 30% of the disc's area
        return u**2 + v**2 <= 0.55**2
    if part == "left half":
        return u < 0
    if part == "top half":  # a triangle's apex half: 25% of its area
        return v < 0
    if part == "corners":  # the four corner squares of a square: 36% of its area
        return (np.abs(u) >= 0.4) & (np.abs(v) >= 0.4)
    if part == "vertical stripe":  # the middle 30% of the width
        return np.abs(u) <= 0.3
    if part == "horizontal stripe":
        return np.abs(v) <= 0.3
    if part == "centre square":  # 25% of a square's area
        return (np.abs(u) <= 0.5) & (np.abs(v) <= 0.5)
    if part == "diagonal half":  # the top-left half of the box
        return u + v < 0
    if part == "bottom half":
        return v >= 0
    if part == "right half":
        return u >= 0
    if part == "top band":  # the top quarter of the height
        return v <= -0.5
    raise ValueError(part)


@dataclass(frozen=True)
class Scene:
    shape: str
    color: str | None  # None for held-out subjects: colours are their identity
    background: str
    position: str
    size: str
    style: str = "plain"
    subject: str | None = None
    dx: int = 0  # uncaptioned jitter of the anchor, in pixels
    dy: int = 0

    def __post_init__(self):
        what = (self.subject in SUBJECTS and self.shape == SUBJECTS[self.subject].class_shape
                if self.subject else (self.shape, self.color) in _PAIRS)
        where = (self.background, self.position, self.size) in _LAYOUTS
        if not (what and where and self.style in ALL_STYLES) or self.color == self.background:
            raise ValueError(f"invalid scene {self}")
        if max(abs(self.dx), abs(self.dy)) > JITTER[self.size]:
            raise ValueError(f"jitter of {self} exceeds {JITTER[self.size]} px")

    @property
    def captioned(self) -> "Scene":
        """The scene without its uncaptioned jitter: what its caption pins down."""
        return replace(self, dx=0, dy=0)


def anchor(position: str, size: str) -> tuple[int, int]:
    """Continuous (x, y) centre of the shape's bounding box before jitter; y grows downward."""
    o = _CORNER_OFFSET[size]
    return (CANVAS // 2 + o * (("right" in position) - ("left" in position)),
            CANVAS // 2 + o * (("bottom" in position) - ("top" in position)))


def _offsets(cx: int, cy: int):
    c = np.arange(CANVAS) + 0.5  # pixel centres
    return np.meshgrid(c - cx, c - cy)


def _silhouette(kind: str, cx: int, cy: int, s: int) -> np.ndarray:
    dx, dy = _offsets(cx, cy)
    box = (np.abs(dx) <= s) & (np.abs(dy) <= s)
    if kind == "square":
        return box
    if kind == "circle":
        return dx**2 + dy**2 <= s * s
    if kind == "triangle":
        # The +0.5 gives the apex row two pixels, so the bbox is the full box.
        return box & (np.abs(dx) <= (dy + s) / 2 + 0.5)
    raise ValueError(kind)


def _texture(scene: Scene, cx: int, cy: int, s: int) -> np.ndarray:
    """Per-pixel shape colour (before styling), shape (32, 32, 3) float."""
    dx, dy = _offsets(cx, cy)
    if scene.subject is None:
        return np.broadcast_to(np.array(COLORS[scene.color], float), dx.shape + (3,))
    body, part = (np.array(COLORS[n], float) for n in SUBJECTS[scene.subject].colors)
    return np.where(part_mask(scene.subject, dx / s, dy / s)[..., None], part, body)


def box(scene: Scene) -> tuple[int, int, int]:
    """(cx, cy, half extent) of the scene's shape, jitter included."""
    cx, cy = anchor(scene.position, scene.size)
    return cx + scene.dx, cy + scene.dy, HALF_EXTENT[scene.size]


def render(scene: Scene) -> np.ndarray:
    """Deterministic (32, 32, 3) uint8 rendering of ``scene``."""
    cx, cy, s = box(scene)
    mask, tex = apply_style(scene.style, _silhouette(scene.shape, cx, cy, s), _texture(scene, cx, cy, s))
    bg = np.array(BACKGROUNDS[scene.background], float)
    return np.where(mask[..., None], tex, bg).astype(np.uint8)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: Scene, with_identifier: bool = True) -> str:
    """Compositional caption.  ``with_identifier=False`` gives the class prior:
    a subject becomes its class noun, and a held-out style phrase is dropped
    (the prior of "some style" is the plain look the base model knows)."""
    if scene.subject is not None:
        sub = SUBJECTS[scene.subject]
        noun = f"{sub.identifier} {sub.class_noun}" if with_identifier else sub.class_noun
    else:
        noun = f"{scene.color} {scene.shape}"
    bg = scene.background
    text = f"{_article(noun)} {noun} on {_article(bg)} {bg} background, "
    text += f"{scene.size}, {scene.position}"
    style = STYLE_IDENTIFIERS.get(scene.style, scene.style) if with_identifier else scene.style
    if scene.style != "plain" and (with_identifier or scene.style not in TARGET_STYLES):
        text += f", in {style} style"
    return text


def base_caption(scene: Scene) -> str:
    return caption(scene, with_identifier=False)


def sample_scenes(n: int, seed: int, pretraining: bool = True) -> list[Scene]:
    """``n`` scenes from ``np.random.default_rng(seed)``; pretraining scenes never
    hold held-out subjects or styles.  ``pretraining=False`` draws all styles and
    makes a quarter of the scenes held-out subjects (to probe the full world)."""
    rng = np.random.default_rng(seed)
    out = []

    def pick(seq):
        return seq[int(rng.integers(len(seq)))]

    for _ in range(n):
        # Every field is drawn every time so the stream layout never depends on values.
        subj_draw, sub = rng.random(), SUBJECTS[pick(HELDOUT_SUBJECTS)]
        shape, color, bg = pick(SHAPES), pick(list(COLORS)), pick(list(BACKGROUNDS))
        while bg == color:
            bg = pick(list(BACKGROUNDS))
        layout = (pick(POSITIONS), pick(SIZES), pick(PRETRAIN_STYLES if pretraining else STYLES))
        j = JITTER[layout[1]]
        dx, dy = (int(v) for v in rng.integers(-2, 3, size=2).clip(-j, j))
        if not pretraining and subj_draw < 0.25:
            out.append(Scene(sub.class_shape, None, bg, *layout, sub.name, dx, dy))
        else:
            out.append(Scene(shape, color, bg, *layout, dx=dx, dy=dy))
    return out
