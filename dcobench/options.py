"""The config field helper and its range checks, shared by every typed config (`config.py`,
`adapter_options.py`, methods, merges, studies). `config.py` re-exports them."""

from __future__ import annotations

from dataclasses import field


_UNSET = object()


def option(default, help: str, check=None, choices=None, id_default: bool = False, identity: bool = True,
           id_omit=_UNSET):
    """A config field with help text, an optional range check and optional allowed values.

    `id_default=True` marks a field added after cells were first hashed: at its default value it is
    left out of cell and train ids (`cells.config_identity`), so adding it changes no existing id.
    `id_omit=VALUE` does the same for a field whose earlier behaviour is VALUE but whose default is
    another (a method whose default changed, e.g. DCO's `gap`): at VALUE it is left out of ids.
    `identity=False` marks an option that cannot change results (speed, resumability): it is never
    part of an id.
    """
    meta = {"help": help, "check": check, "choices": choices, "id_default": id_default, "identity": identity}
    if id_omit is not _UNSET:
        meta["id_omit"] = id_omit
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def positive(x):
    return None if x > 0 else "must be > 0"


def non_negative(x):
    return None if x >= 0 else "must be >= 0"


def probability(x):
    return None if 0 <= x < 1 else "must be >= 0 and < 1"
