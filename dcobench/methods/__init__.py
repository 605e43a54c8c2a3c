"""The objective interface and DCO, registered on import. The baselines live in baselines/."""

from . import dco  # noqa: F401
from .base import Objective, per_sample_mse  # noqa: F401
