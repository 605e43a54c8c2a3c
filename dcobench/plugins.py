"""Plugins: modules that register into dcobench's registries when imported.

A plugin is named by an entry point of the group `dcobench.plugins`. Importing it registers what
it brings (methods, merges, suites, metrics and judges, backbones, commands) through the public
registries of `dcobench.registry`, exactly as the core's own modules register theirs:

    # pyproject.toml of a third-party package
    [project.entry-points."dcobench.plugins"]
    mything = "mything.dcobench_plugin"          # a module, or "module:function" to call

The micro world is such a plugin (`dcobench.micro.plugin`, declared in dcobench's own
pyproject.toml). BUNDLED repeats the plugins that ship inside dcobench, so that a source checkout
whose entry-point metadata is missing or stale (never installed, or installed from an older
version) still finds them; a test checks that it matches pyproject.toml.

Everything is loaded on the first lookup in any registry (`Registry._ready`), once per process.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from .errors import DcoError

GROUP = "dcobench.plugins"
CORE = ("dcobench.methods", "baselines", "dcobench.metrics", "dcobench.suites")
BUNDLED = {"micro": "dcobench.micro.plugin"}

_loaded: list[str] = []


def declared() -> dict[str, str]:
    """Plugin name -> "module[:function]": the bundled ones, then every installed entry point."""
    found = dict(BUNDLED)
    for ep in entry_points(group=GROUP):
        if found.get(ep.name, ep.value) != ep.value:
            raise DcoError(f"plugin name '{ep.name}' is taken by {found[ep.name]}; rename the entry point of "
                           f"{ep.value} in its package's [project.entry-points.\"{GROUP}\"]")
        found[ep.name] = ep.value
    return found


def _load(name: str, value: str) -> None:
    module, _, attr = value.partition(":")
    if name in BUNDLED:  # ours: an import error is a bug and keeps its traceback
        obj = importlib.import_module(module)
    else:
        try:
            obj = importlib.import_module(module)
        except ImportError as e:
            raise DcoError(f"plugin '{name}' ({value}) cannot be imported ({e}); install what it needs or "
                           "uninstall the package that declares it") from e
    if attr:
        getattr(obj, attr)()


def load_all() -> list[str]:
    """Import the core's registering modules and every plugin once; returns the plugin names."""
    if _loaded:
        return list(_loaded[1:])
    _loaded.append("<core>")  # before importing: a lookup during the imports must not recurse
    try:
        for module in CORE:
            importlib.import_module(module)
        for name, value in declared().items():
            _load(name, value)
            _loaded.append(name)
    except BaseException:
        _loaded.clear()
        raise
    return list(_loaded[1:])
