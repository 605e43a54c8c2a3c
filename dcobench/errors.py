"""User-facing errors.

Every problem a user can fix (a bad config value, a missing folder, an unreadable image) is raised
as a `DcoError` whose message is one line naming the file or field and the fix. The CLI prints it
and exits non-zero; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib


class DcoError(Exception):
    """An error the user can fix; its message is a single line."""

    exit_code = 2
    # False: a problem of the whole command (bad input, a full disk): it stops the run with one line.
    # True (`UnitFailure`): a problem of one training or cell, which the run records and goes past.
    unit_failure = False

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class UnitFailure(DcoError):
    """One unit's own failure with a one-line cause (a training whose loss is not finite): a run
    records it in the unit's folder and goes on (`failures.py`); under --fail-fast it stops the run
    with that line and exit 2, like any DcoError."""

    unit_failure = True


def did_you_mean(name: str, choices) -> str:
    """' (did you mean 'x'?)' for the closest choice, else a list of what exists."""
    choices = sorted(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if close:
        return f"did you mean '{close[0]}'?"
    return "choose one of: " + ", ".join(choices) if choices else "nothing is registered"
