"""Scoring: backbones (what embeds), metrics (what is compared), and the scorer that runs them."""

from .backbones import BACKBONES, get_backbone  # noqa: F401
from .definitions import METRICS, Metric  # noqa: F401
