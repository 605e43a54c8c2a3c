"""Suites register on import. `get_suite` takes a registered name or a path to a suite YAML."""

from __future__ import annotations

from pathlib import Path

from ..registry import SUITES
from . import tiny  # noqa: F401
from .base import Subject, Suite, load_subject, load_suite_file  # noqa: F401


def get_suite(name_or_path: str) -> Suite:
    if name_or_path in SUITES or not (name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).exists()):
        return SUITES.get(name_or_path)()
    return load_suite_file(name_or_path)
