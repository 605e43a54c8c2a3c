"""Suites register on import. `get_suite` takes a registered name or a path to a suite YAML."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

from ..errors import DcoError
from ..registry import SUITES
from . import dreambench, tiny  # noqa: F401
from .base import Subject, Suite, load_subject, load_suite_file  # noqa: F401


def get_suite(name_or_path: str, data: str = "", model: str = "") -> Suite:
    """A registered suite (given the options its builder takes) or a suite YAML file.

    `model` replaces any suite's base model; `data` goes to suites that read a dataset folder.
    The model's family (from its model_index.json) adds its own run defaults (SD3: the LoRA
    targets of the transformer) below the suite's defaults; an unsupported model fails here.
    """
    if name_or_path in SUITES or not (name_or_path.endswith((".yaml", ".yml")) or Path(name_or_path).exists()):
        builder = SUITES.get(name_or_path)
        params = inspect.signature(builder).parameters
        if data and "data" not in params:
            raise DcoError(f"data: suite '{name_or_path}' reads no dataset folder; drop --data")
        kwargs = {k: v for k, v in (("data", data), ("model", model)) if v and k in params}
        suite = builder(**kwargs)
    else:
        if data:
            raise DcoError(f"data: suite file '{name_or_path}' lists its own subjects; drop --data")
        suite = load_suite_file(name_or_path)
    if model and suite.model != model:
        from ..models.pipeline import native_resolution

        suite = dataclasses.replace(suite, model=model, resolution=native_resolution(model, suite.resolution))
    return with_family_defaults(suite)


def with_family_defaults(suite: Suite) -> Suite:
    from ..config import deep_merge
    from ..families import family_of_model

    family = family_of_model(suite.model)  # None for a hub id that is not cached: loading says so later
    defaults = family.run_defaults() if family else {}
    return dataclasses.replace(suite, defaults=deep_merge(defaults, suite.defaults)) if defaults else suite
