"""Scoring: backbones (what embeds), metrics and judges (what is compared), registered on import."""

from ..registry import BACKBONES, METRICS  # noqa: F401
from .backbones import get_backbone  # noqa: F401
from .definitions import Judge, Metric, metric_meta  # noqa: F401
