"""What each held-out subject and style of the micro world ships with: its reference scenes, its
evaluation prompts, and the subject folder (images, captions, subject.yaml) written from them.

The renderer and the scene vocabulary are `world.py`; this module is the benchmark's side of the
world, the fixed sets a personalization method is trained and evaluated on. The references of a
subject deliberately share one white background and the plain style, so that overfitting shows as
the white background leaking into recontextualised prompts (`oracle_bg_leak`); the evaluation
prompts recontextualise (other backgrounds, positions, sizes) and restyle (pretraining styles only).
"""
from __future__ import annotations

from pathlib import Path

import yaml
from PIL import Image

from .world import BACKGROUNDS, COLORS, SHAPES, STYLE_IDENTIFIERS, SUBJECTS, TARGET_STYLES, Scene, caption, render


_REF_LAYOUTS = [("center", "large"), ("top left", "small"), ("bottom right", "small"),
                ("top right", "large"), ("bottom left", "small"), ("center", "small")]


def reference_scenes(subject: str, n: int = 4) -> list[Scene]:
    """Training images for a held-out subject.  They deliberately share one
    white background and the plain style, so overfitting shows up as the
    background leaking into recontextualised prompts."""
    if not 3 <= n <= len(_REF_LAYOUTS):
        raise ValueError("between 3 and 6 reference scenes")
    sub = SUBJECTS[subject]
    return [Scene(sub.class_shape, None, "white", p, s, "plain", subject) for p, s in _REF_LAYOUTS[:n]]


def _style_rows(shift: int) -> list[tuple]:
    # Cycling covers every shape, colour and background in six rows; shift=1
    # gives eval combinations the references never show (and no blue-on-blue).
    cols, bgs = list(COLORS), list(BACKGROUNDS)
    return [(SHAPES[(i + shift) % 3], cols[(i + 3 * shift) % 6], bgs[(i + shift) % 4],
             *_REF_LAYOUTS[(i + 2 * shift) % 6]) for i in range(6)]


_STYLE_REFS, _STYLE_EVALS = _style_rows(0), _style_rows(1)
# Recontextualise (backgrounds other than the references' white, new
# layouts) and restyle (pretraining styles only: the base model knows them).
_SUBJECT_EVALS = [
    ("black", "center", "large", "plain"), ("gray", "top left", "small", "plain"),
    ("blue", "bottom right", "large", "plain"), ("black", "top right", "small", "plain"),
    ("white", "center", "large", "outline"), ("gray", "bottom left", "large", "outline"),
    ("white", "center", "large", "pastel"), ("blue", "top left", "small", "pastel")]


def style_reference_scenes(style: str, n: int = 4) -> list[Scene]:
    if style not in TARGET_STYLES or not 3 <= n <= len(_STYLE_REFS):
        raise ValueError("held-out style and 3..6 references expected")
    return [Scene(*row, style) for row in _STYLE_REFS[:n]]


def eval_prompts(name: str) -> list[Scene]:
    """Evaluation scenes for a held-out subject or style; caption them with
    ``caption`` and check generations with ``oracle.judge``."""
    if name in SUBJECTS:
        sub = SUBJECTS[name]
        return [Scene(sub.class_shape, None, bg, p, s, st, name) for bg, p, s, st in _SUBJECT_EVALS]
    if name in TARGET_STYLES:
        return [Scene(*row, name) for row in _STYLE_EVALS]
    raise ValueError(f"{name!r} is neither a held-out subject nor a held-out style")


def _write_folder(path, refs, name: str, class_noun: str, identifier: str, kind: str) -> Path:
    meta = {"name": name, "class_noun": class_noun, "identifier": identifier, "kind": kind,
            "prompts": [caption(s) for s in eval_prompts(name)]}
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, scene in enumerate(refs):
        Image.fromarray(render(scene)).save(path / f"{i:02d}.png")
        (path / f"{i:02d}.txt").write_text(caption(scene) + "\n")
    (path / "subject.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
    return path


def write_subject_folder(subject: str, path, n: int = 4) -> Path:
    """DreamBench-like folder: 00.png + 00.txt ... and subject.yaml."""
    sub = SUBJECTS[subject]
    return _write_folder(path, reference_scenes(subject, n), sub.name, sub.class_noun,
                         sub.identifier, "subject")


def write_style_folder(style: str, path, n: int = 4) -> Path:
    """Same layout for a held-out style; its class noun is "style"."""
    return _write_folder(path, style_reference_scenes(style, n), style, "style",
                         STYLE_IDENTIFIERS[style], "style")
