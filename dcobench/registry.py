"""Name -> object registries, in the style of lm-evaluation-harness.

Objects register where they are defined, with the metadata a report needs. Heavy optional pieces
register lazily as "module:attr" strings and are imported on first lookup, so `dcobench ls` and
config validation never import torch models they do not use.

These are the only registries, and a plugin uses exactly the ones the core uses:

    METHODS    training objectives (dcobench/methods, baselines/): an `Objective` subclass
    MERGES     merge methods (baselines/): fn(a, b, cfg, **inputs) -> (state, rank, info)
    SUITES     suites: a builder returning a `Suite`
    METRICS    a `Metric` (embeds with a backbone) or a `Judge` (reads the images itself)
    BACKBONES  image/text encoders the embedding metrics use
    COMMANDS   typer apps added to the `dcobench` command line under their name

The first lookup in any of them loads the core's own registrations and every plugin
(`dcobench.plugins`); see `plugins.py`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from .errors import DcoError, did_you_mean


class Registry:
    def __init__(self, kind: str, load_plugins: bool = False):
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._meta: dict[str, dict] = {}
        self._load_plugins = load_plugins

    def register(self, name: str, obj: Any = None, **meta) -> Callable:
        """Register `obj` (or decorate it) under `name`; `obj` may be a "module:attr" string."""

        def add(o):
            if name in self._entries and self._entries[name] is not o:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = o
            self._meta[name] = meta
            return o

        return add(obj) if obj is not None else add

    def _ready(self) -> None:
        if self._load_plugins:
            from .plugins import load_all

            load_all()

    def get(self, name: str) -> Any:
        self._ready()
        if name not in self._entries:
            raise DcoError(f"unknown {self.kind} '{name}': {did_you_mean(name, self._entries)}")
        obj = self._entries[name]
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._entries[name] = obj
        return obj

    def meta(self, name: str) -> dict:
        """Registration metadata, without importing a lazy entry."""
        self._ready()
        if name not in self._meta:
            self.get(name)  # raises the did-you-mean error
        return dict(self._meta[name])

    def names(self) -> list[str]:
        self._ready()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._ready()
        return name in self._entries


METHODS = Registry("method", load_plugins=True)
MERGES = Registry("merge method", load_plugins=True)
SUITES = Registry("suite", load_plugins=True)
METRICS = Registry("metric", load_plugins=True)
BACKBONES = Registry("backbone", load_plugins=True)
COMMANDS = Registry("command", load_plugins=True)
