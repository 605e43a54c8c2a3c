"""YAML files and `key=value` overrides, read the same way everywhere.

PyYAML follows YAML 1.1, where yes / no / on / off are booleans, so `mixed_precision: no` arrived
as False. `YamlLoader` reads YAML 1.2 booleans (only true / false); the config's boolean fields
still accept the 1.1 spellings (`config._coerce`).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from .errors import DcoError

YAML11_BOOLS = {"yes": True, "on": True, "no": False, "off": False}


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 booleans: only true / false; yes / no / on / off stay strings."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                 list("tTfF"))


def yaml_load(text: str):
    return yaml.load(text, Loader=YamlLoader)


def load_yaml(path: str | Path) -> dict:
    """A YAML file whose top level is a mapping (a run config, a suite, a subject.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise DcoError(f"{path}: config file not found; pass an existing YAML file")
    try:
        data = yaml_load(path.read_text()) or {}
    except UnicodeDecodeError:
        raise DcoError(f"{path}: not a text file (not UTF-8); pass a YAML file")
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise DcoError(f"{path}:{line} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax")
    if not isinstance(data, dict):
        raise DcoError(f"{path}: the top level must be a mapping of options (key: value), not a "
                       f"{type(data).__name__}; e.g. `train: {{steps: 400}}`")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key=value` as (dotted keys, value); see `parse_op` for the `+key=value` form."""
    keys, value, _ = parse_op(text)
    return keys, value


def parse_op(text: str) -> tuple[list[str], Any, bool]:
    """One command-line override as (dotted keys, value, merge).

    `key=value` sets the key; when the value is a mapping it *replaces* the mapping there (a new
    sweep is the whole sweep). `+key=value` merges a mapping into the one there instead, key by key.
    """
    merge = text.startswith("+")
    key, sep, raw = text[merge:].partition("=")
    if not sep or not key.strip():
        raise DcoError(f"override '{text}': expected key=value (or +key={{...}} to merge into a mapping), e.g. "
                       "methods.dco.beta=2000")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if merge and not isinstance(value, dict):
        raise DcoError(f"override '{text}': `+` merges a mapping into a mapping, e.g. "
                       f"+{key.strip()}={{...}}; to set a value write {key.strip()}={raw}")
    return key.strip().split("."), value, merge


def set_dotted(data: dict, keys: list[str], value) -> None:
    for k in keys[:-1]:
        node = data.get(k)
        if not isinstance(node, dict):
            node = data[k] = {}
        data = node
    data[keys[-1]] = value


def apply_ops(data: dict, ops) -> dict:
    """A deep copy of `data` with each (keys, value, merge) override applied in order."""
    out = copy.deepcopy(data)
    for keys, value, merge in ops:
        node = out
        for k in keys[:-1]:
            if not isinstance(node.get(k), dict):
                node[k] = {}
            node = node[k]
        old = node.get(keys[-1])
        node[keys[-1]] = deep_merge(old, value) if merge and isinstance(old, dict) else copy.deepcopy(value)
    return out


# Mappings that are one setting, not a set of settings: a layer that gives one replaces the one
# below it (a config file's sweep is the whole sweep, not knobs added to the suite's).
ATOMIC = frozenset({"sweep"})


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, mapping by mapping; a mapping under an ATOMIC key is replaced whole."""
    out = dict(base or {})
    for k, v in (top or {}).items():
        nested = isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ATOMIC
        out[k] = deep_merge(out[k], v) if nested else v
    return out
