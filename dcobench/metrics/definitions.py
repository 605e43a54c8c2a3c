"""The metrics, registered where they are defined with what the report needs.

Image-reference metrics follow the DreamBench convention: for each generated image, the mean
cosine similarity to every reference image; a cell's score is the mean over its images. CLIP-T is
the cosine between a generated image and the prompt text it was scored against, which by default
has the class noun in place of the identifier (`score.clip_t_prompt`). Scores are raw cosines
(the report may show x100).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..registry import Registry

METRICS = Registry("metric")


@dataclass(frozen=True)
class Metric:
    name: str
    role: str  # which backbone of the score config embeds: clip, dino or dinov2
    against: str  # references, style_references or prompt

    def per_image(self, images: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """images: (N, D) normalised; other: (R, D) references, or (N, D) prompt embeddings."""
        if self.against == "prompt":
            return (images * other).sum(-1)
        return (images @ other.T).mean(-1)


def _register(name, role, against, kind, label):
    METRICS.register(name, Metric(name, role, against), higher_is_better=True, kind=kind, label=label,
                     aggregate="mean over images, then mean ± 95% CI over cells")


_register("dino", "dino", "references", "subject", "DINO (subject)")
_register("dinov2", "dinov2", "references", "subject", "DINOv2 (subject)")
_register("clip_i", "clip", "references", "subject", "CLIP-I (subject)")
_register("clip_t", "clip", "prompt", "prompt", "CLIP-T (prompt)")
_register("style_dino", "dino", "style_references", "style", "DINO (style)")
_register("style_clip_i", "clip", "style_references", "style", "CLIP-I (style)")
