"""The `tiny` suite: a random tiny SD pipeline and two drawn subjects; the whole path in seconds.

Nothing here is meaningful as a benchmark: it exists so that training, sampling, scoring and
reporting run end to end in tests and CI. Models and subjects are built once under the cache
folder ($DCOBENCH_CACHE, default ~/.cache/dcobench) and are identical on every machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..models.tiny import cache_dir, tiny_model_path
from ..registry import SUITES
from .base import Suite, load_subject

SUBJECTS = {
    # name: (class noun, identifier, body colour, accent colour, background)
    "robot": ("toy", "sks", (200, 40, 40), (250, 220, 40), (128, 128, 128)),
    "mug": ("cup", "zwx", (40, 70, 200), (240, 240, 240), (90, 160, 90)),
}
PROMPTS = [
    "a photo of {identifier} {class_noun} on the beach",
    "a photo of {identifier} {class_noun} in the snow",
    "a red {identifier} {class_noun}",
]
DEFAULTS = {
    "train": {"steps": 20, "rank": 4, "alpha": 4.0, "lr": 1e-3},
    "sample": {"steps": 10, "seeds": [0, 1], "batch_size": 8},
    # random encoders: the scores exercise the scoring path and guard it against regressions,
    # they say nothing about fidelity
    "score": {"clip": "tiny-clip", "dino": "tiny-dino", "dinov2": "tiny-dino"},
    "methods": {
        # the variant the committed tiny baselines measured (per-sample gap, base prompt); the method's
        # defaults are the authors' rules (methods/dco.py)
        "dco": {"reference_prompt": "base", "gap": "sample", "sweep": {"sample.w_con": [1.0, 2.0]}},
        "dreambooth": {"sweep": {"sample.cfg_scale": [3.0, 7.5]}},
    },
    # what a method without a sweep of its own (a plugin's) takes under its guidance: the same knobs
    "sweeps": {"cfg": {"sample.cfg_scale": [3.0, 7.5]}, "consistency": {"sample.w_con": [1.0, 2.0]}},
}


def _draw(body, accent, background, offset: int, scale: int) -> np.ndarray:
    img = np.zeros((32, 32, 3), np.uint8)
    img[:] = background
    y0, x0 = 8 + offset, 8 + offset // 2
    img[y0 : y0 + scale, x0 : x0 + scale] = body
    img[y0 + scale // 3 : y0 + scale // 3 + 3, x0 : x0 + scale] = accent
    return img


def _write_subjects(root: Path) -> None:
    from PIL import Image

    for name, (noun, ident, body, accent, bg) in SUBJECTS.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i, (off, scale) in enumerate([(0, 12), (4, 10), (-4, 14)]):
            Image.fromarray(_draw(body, accent, bg, off, scale)).save(folder / f"{i:02d}.png")
            (folder / f"{i:02d}.txt").write_text(f"a photo of {ident} {noun} on a plain background")
        (folder / "subject.yaml").write_text(
            f"name: {name}\nclass_noun: {noun}\nidentifier: {ident}\nkind: subject\n"
        )


STYLE = ("stripes", "kxv")  # name, identifier: diagonal stripes over any subject, for merge tests
# a style's own prompts (a style as the personalization target): other subjects in that style
STYLE_PROMPTS = ["a red toy in {identifier} style", "a cup on the beach in {identifier} style"]


def _write_style(root: Path) -> None:
    from PIL import Image

    name, ident = STYLE
    folder = root / name
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[:32, :32]
    for i, colour in enumerate([(30, 30, 200), (200, 30, 160), (30, 160, 60)]):
        img = np.full((32, 32, 3), 235, np.uint8)
        img[((xx + yy + 3 * i) // 3) % 2 == 0] = colour
        Image.fromarray(img).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"a pattern in {ident} style")
    (folder / "subject.yaml").write_text(f"name: {name}\nclass_noun: style\nidentifier: {ident}\nkind: style\n")


def tiny_subjects_root(root: Path | None = None) -> Path:
    root = Path(root) if root is not None else cache_dir()
    path = root / "tiny-subjects-v2"  # v2 added the style folder
    if path.is_dir():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    try:
        _write_subjects(tmp)
        _write_style(tmp)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


@SUITES.register("tiny", description="Random tiny SD pipeline + 2 drawn subjects; runs in seconds (tests, CI).")
def build() -> Suite:
    subjects_root = tiny_subjects_root()
    return Suite(
        name="tiny",
        model=str(tiny_model_path("sd")),
        resolution=32,
        subjects=[load_subject(subjects_root / n, prompts=PROMPTS) for n in SUBJECTS],
        styles=[load_subject(subjects_root / STYLE[0], prompts=STYLE_PROMPTS)],
        defaults=DEFAULTS,
        description="random weights: exercises the code path, measures nothing",
    )
