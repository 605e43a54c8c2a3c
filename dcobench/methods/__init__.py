"""Objectives register themselves on import; importing this package registers them all."""

from . import dco, dreambooth  # noqa: F401
from .base import Objective, per_sample_mse  # noqa: F401
