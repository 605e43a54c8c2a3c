"""Where the data that ships with dcobench lives: configs, the micro world's models and subjects.

The files live in the package folder `dcobench/data/` (a wheel carries them as the package
`dcobench.data`, so an installed dcobench finds them without the checkout); the checkout's `data/`
is a link to it, so the paths the docs give (`data/micro/...`) work too.
"""

from __future__ import annotations

from pathlib import Path

from .errors import DcoError

_HERE = Path(__file__).resolve().parent


def data_dir() -> Path:
    """The shipped `data/` folder: inside the installed package, else beside it in a checkout."""
    for candidate in (_HERE / "data", _HERE.parent / "data"):
        if (candidate / "README.md").is_file():
            return candidate
    raise DcoError(f"{_HERE}: the shipped data folder is missing (neither {_HERE / 'data'} nor {_HERE.parent / 'data'}); "
                   "reinstall dcobench from its wheel or use a full checkout")
