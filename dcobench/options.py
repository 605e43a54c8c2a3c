"""The config field helper and its range checks, shared by every typed config (`config.py`,
`adapter_options.py`, methods, merges, studies). `config.py` re-exports them."""

from __future__ import annotations

from dataclasses import field


def option(default, help: str, check=None, choices=None, id_default: bool = False, identity: bool = True):
    """A config field with help text, an optional range check and optional allowed values.

    `id_default=True` marks a field added after cells were first hashed: at its default value it is
    left out of cell and train ids (`cells.config_identity`), so adding it changes no existing id.
    `identity=False` marks an option that cannot change results (speed, resumability): it is never
    part of an id.
    """
    meta = {"help": help, "check": check, "choices": choices, "id_default": id_default, "identity": identity}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def positive(x):
    return None if x > 0 else "must be > 0"


def non_negative(x):
    return None if x >= 0 else "must be >= 0"


def probability(x):
    return None if 0 <= x < 1 else "must be >= 0 and < 1"
