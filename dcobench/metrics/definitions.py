"""The metrics, registered where they are defined with what the report needs.

Image-reference metrics follow the DreamBench convention: for each generated image, the mean
cosine similarity to every reference image; a cell's score is the mean over its images. CLIP-T is
the cosine between a generated image and the prompt text it was scored against, which by default
has the class noun in place of the identifier (`score.clip_t_prompt`). Scores are raw cosines
(the report may show x100).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DcoError
from ..registry import METRICS


@dataclass(frozen=True)
class Metric:
    """Compares backbone embeddings of each image with its references or its prompt."""

    name: str
    role: str  # which backbone of the score config embeds: clip, dino or dinov2
    against: str  # references, style_references or prompt

    def per_image(self, images: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """images: (N, D) normalised; other: (R, D) references, or (N, D) prompt embeddings."""
        if self.against == "prompt":
            return (images * other).sum(-1)
        return (images @ other.T).mean(-1)


@dataclass(frozen=True)
class Diversity(Metric):
    """DIV (the DreamBooth paper's within-prompt diversity): per image, the mean cosine distance
    (1 − cos) of its embedding to those of the other images sampled from the same prompt (the other
    sampling seeds). A cell's value, the mean over its images, is then the mean pairwise distance per
    prompt (every prompt has the same seeds). A method that collapses to one image per prompt scores
    near 0. An image alone with its prompt has no value (NaN)."""

    def per_group(self, images: torch.Tensor, groups: list[str]) -> torch.Tensor:
        keys = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        ids = torch.tensor([keys[g] for g in groups])
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(groups), dtype=torch.bool)
        dist = 1.0 - images @ images.T
        count = same.sum(-1)
        out = (dist * same).sum(-1) / count.clamp(min=1)
        return torch.where(count > 0, out, torch.full_like(out, float("nan")))


class Judge:
    """A metric that reads each image itself, against the prompt it was sampled from, with no
    backbone: an exact oracle, a detector, a rule. A judge may abstain on an image (NaN); a cell's
    value is then the mean over the images it judged."""

    name: str  # set by the subclass (a dataclass field or a class attribute)

    def judge_images(self, images: list[np.ndarray], prompts: list[str]) -> torch.Tensor:
        """(N,) float32 verdicts for uint8 HxWx3 `images`, NaN where the judge abstains."""
        raise NotImplementedError

    def describe(self) -> str:
        """What the judge is, as the scoring protocol records it; a changed judge changes this."""
        raise NotImplementedError


@functools.lru_cache(maxsize=None)
def _registered_meta(name: str) -> tuple:
    if name not in METRICS:
        raise DcoError(f"metric '{name}': scored in this run but not registered here, so its direction is unknown; "
                       "install the plugin that defines it (`dcobench ls plugins`) or rescore with `dcobench score`")
    meta = METRICS.meta(name)
    for key in ("higher_is_better", "kind"):
        if key not in meta:
            raise DcoError(f"metric '{name}': registered without '{key}'; its plugin must pass {key}=... to "
                           "METRICS.register")
    return tuple(sorted({"label": name, **meta}.items()))


def metric_meta(name: str) -> dict:
    """{'higher_is_better': bool, 'kind': 'subject'|'prompt'|'style', 'label': str, ...} for a metric,
    from its registration; a metric this installation does not know is an error, never a guess."""
    return dict(_registered_meta(name))


def _register(name, role, against, kind, label):
    METRICS.register(name, Metric(name, role, against), higher_is_better=True, kind=kind, label=label,
                     aggregate="mean over images, then mean ± 95% CI over cells")


_register("dino", "dino", "references", "subject", "DINO (subject)")
_register("dinov2", "dinov2", "references", "subject", "DINOv2 (subject)")
_register("clip_i", "clip", "references", "subject", "CLIP-I (subject)")
_register("clip_t", "clip", "prompt", "prompt", "CLIP-T (prompt)")
_register("style_dino", "dino", "style_references", "style", "DINO (style)")
_register("style_clip_i", "clip", "style_references", "style", "CLIP-I (style)")
# opt-in (score.metrics): a diversity, not a fidelity; the study's points tables show it beside the judges
METRICS.register("div_dino", Diversity("div_dino", "dino", "seeds"), higher_is_better=True, kind="diversity",
                 label="DIV (DINO, within prompt)", aggregate="mean over images of the mean 1 − cos to the "
                 "prompt's other seeds, then mean ± 95% CI over cells")
