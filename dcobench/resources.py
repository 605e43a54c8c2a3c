"""Where the data that ships with dcobench lives: configs, the micro world's models and subjects.

In a source checkout it is the repository's `data/` folder; a wheel (`python -m build`) carries
the same files as the package `dcobench.data` (pyproject.toml maps one onto the other), so an
installed dcobench finds them without the checkout.
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
