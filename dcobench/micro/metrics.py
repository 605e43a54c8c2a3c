"""Oracle metrics: the micro world's exact judge, registered beside the embedding metrics.

Each generated image is compared with the scene its prompt describes (`references.eval_prompts`), so
these metrics need no encoder: `oracle_background` is the fraction of images whose background is
the prompted one (a model that overfits its white-background references fails it),
`oracle_subject` whether the subject's own look is there, `oracle_layout` position and size,
`oracle_style` the prompted style. Prompts that are not micro-world captions score NaN.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from ..cells import styled_prompt
from ..metrics.definitions import Judge
from ..registry import METRICS
from . import oracle, references, world


def _scene_index() -> dict[str, world.Scene]:
    scenes = {}
    for name in list(world.SUBJECTS) + list(world.TARGET_STYLES):
        for scene in references.eval_prompts(name) + (references.reference_scenes(name) if name in world.SUBJECTS else []):
            scenes[world.caption(scene)] = scene
    # `dcobench run --merge` prompts: a subject's plain evaluation scenes in a held-out style
    for name in world.SUBJECTS:
        for scene in references.eval_prompts(name):
            if scene.style == "plain":
                for style in world.TARGET_STYLES:
                    prompt = styled_prompt(world.caption(scene), world.STYLE_IDENTIFIERS[style])
                    scenes[prompt] = dataclasses.replace(scene, style=style)
    return scenes


_SCENES: dict[str, world.Scene] | None = None


def scene_for(prompt: str) -> world.Scene | None:
    global _SCENES
    if _SCENES is None:
        _SCENES = _scene_index()
    return _SCENES.get(prompt)


class _OracleJudge(Judge):
    keys: tuple[str, ...]

    def describe(self) -> str:
        return f"micro-world oracle v{oracle.VERSION}: " + "+".join(self.keys)


REFERENCE_BACKGROUND = "white"  # every held-out subject's references share it (references.reference_scenes)


@dataclass(frozen=True)
class LeakMetric(_OracleJudge):
    """1 when an image shows the references' background although its prompt asks for another;
    NaN for prompts that ask for the references' background (nothing to leak) or are not micro
    captions. Lower is better: this is DreamBooth-style overfitting, measured directly."""

    name: str = "oracle_bg_leak"
    keys: tuple[str, ...] = ("background",)
    role: str = "oracle"
    against: str = "prompt"

    def judge_images(self, images: list[np.ndarray], prompts: list[str]) -> torch.Tensor:
        out = []
        for img, prompt in zip(images, prompts):
            scene = scene_for(prompt)
            if scene is None or scene.subject is None or scene.background == REFERENCE_BACKGROUND:
                out.append(float("nan"))
            else:
                out.append(float(oracle.background(img) == REFERENCE_BACKGROUND))
        return torch.tensor(out, dtype=torch.float32)


@dataclass(frozen=True)
class OracleMetric(_OracleJudge):
    name: str
    keys: tuple[str, ...]
    role: str = "oracle"  # no backbone
    against: str = "prompt"

    def judge_images(self, images: list[np.ndarray], prompts: list[str]) -> torch.Tensor:
        out = []
        for img, prompt in zip(images, prompts):
            scene = scene_for(prompt)
            if scene is None:
                out.append(float("nan"))
                continue
            verdict = oracle.judge(img, scene)
            got = [verdict.get(k, False) for k in self.keys]
            # None: the judge abstains (a style that hides the subject's part)
            out.append(float("nan") if any(v is None for v in got) else float(all(got)))
        return torch.tensor(out, dtype=torch.float32)


for _name, _keys, _label in (
    ("oracle_background", ("background",), "Oracle: prompted background"),
    ("oracle_subject", ("subject_match",), "Oracle: subject's look present"),
    ("oracle_subject_colour", ("subject_colours",), "Oracle: subject in its exact colours"),
    ("oracle_layout", ("position", "size"), "Oracle: prompted position and size"),
    ("oracle_style", ("style",), "Oracle: prompted style"),
):
    # in a merge prompt ("..., in <style> style") the prompted style is the style LoRA's: style fidelity
    METRICS.register(_name, OracleMetric(_name, _keys), higher_is_better=True,
                     kind="subject" if _name.startswith("oracle_subject") else "prompt", label=_label,
                     merge_kind="style" if _name == "oracle_style" else None,
                     aggregate="fraction of images the exact oracle accepts; mean ± 95% CI over cells")

METRICS.register("oracle_bg_leak", LeakMetric(), higher_is_better=False, kind="prompt",
                 label="Oracle: references' background leaked",
                 aggregate="fraction of the images prompted for another background that show the references' "
                           "white one; mean ± 95% CI over cells")
