"""Scoring: backbones (what embeds), metrics (what is compared), and the scorer that runs them."""

from .backbones import BACKBONES, get_backbone  # noqa: F401
from .definitions import METRICS, Metric  # noqa: F401
from ..micro import metrics as _micro_metrics  # noqa: F401,E402  (registers the oracle_* metrics)
