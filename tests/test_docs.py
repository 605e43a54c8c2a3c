"""The documentation: generated blocks current, the README a short landing page, the nav complete.

`mkdocs build --strict` itself runs in `make docs` (CI), not here.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen():
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_generated_block_is_current():
    """docs/gen.py --check: the CLI and config references, the three studies' findings (micro paper, adapters, power),
    their README headlines, the adapters' frontier table and the plugin page's objective interface."""
    gen = _gen()
    assert len(gen.blocks()) == 10
    stale = gen.stale()
    assert not stale, f"stale generated blocks (run .venv/bin/python docs/gen.py): {stale}"


def test_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines; move text into docs/"
    start = next(i for i, line in enumerate(lines) if line.startswith("```"))
    assert start <= 2, "the code block with `make run` and `make test` must open the README"
    assert lines[start + 1].startswith("make run ") and lines[start + 2].startswith("make test ")


def _nav_pages(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [p for item in node for p in _nav_pages(item)]
    if isinstance(node, dict):
        return [p for value in node.values() for p in _nav_pages(value)]
    return []


def test_every_page_in_the_nav_exists():
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    assert "index.md" in pages and "reference/cli.md" in pages and "reference/config.md" in pages
    missing = [p for p in pages if not (ROOT / config.get("docs_dir", "docs") / p).is_file()]
    assert not missing, f"mkdocs.yml nav names pages that do not exist: {missing}"
    on_disk = sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    assert sorted(pages) == on_disk, "every page in docs/ is in the nav (mkdocs --strict fails otherwise)"


def test_readme_links_into_docs_resolve():
    """The README's relative links (docs pages, the figure) point at files in the checkout."""
    text = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert "reports/micro/pareto.png" in targets and "docs/studies.md" in targets
    missing = [t for t in targets if not (ROOT / t).is_file()]
    assert not missing, f"README.md links to missing files: {missing}"
