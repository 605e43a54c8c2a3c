"""docs/plugins.md is enough on its own: its example plugin, taken from the page's own text, installs
with pip and runs on the tiny suite; its objective-interface section documents every capability flag
and every argument of `Objective.__call__` (the section is generated from the docstrings of
dcobench/methods/base.py; tests/test_docs.py keeps it current)."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "plugins.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)
# the overrides that keep the page's run as small as the tiny suite allows
SMALL = ["train.steps=2", "sample.steps=2", "sample.seeds=[0]", "sample.max_prompts=1", "subjects=[robot]"]


def example_files(text: str) -> dict[str, str]:
    """The example package's files: each fenced block whose first line is a comment naming a path
    under `mything/` (`# mything/pyproject.toml`)."""
    out = {}
    for _, body in FENCE.findall(text):
        first, _, _ = body.partition("\n")
        m = re.fullmatch(r"#\s*(mything/\S+)\s*", first)
        if m:
            out[m.group(1)] = body
    return out


def commands(text: str) -> list[list[str]]:
    """Every `dcobench ...` command of the page's bash blocks, comments dropped."""
    out = []
    for lang, body in FENCE.findall(text):
        if lang == "bash":
            out += [shlex.split(line, comments=True) for line in body.splitlines() if line.startswith("dcobench ")]
    return out


def test_the_page_holds_a_complete_example():
    text = PAGE.read_text()
    files = example_files(text)
    assert set(files) == {"mything/pyproject.toml", "mything/mything/__init__.py", "mything/mything/dcobench_plugin.py"}
    assert '[project.entry-points."dcobench.plugins"]' in files["mything/pyproject.toml"]
    assert "pip install -e ." in text
    plugin = files["mything/mything/dcobench_plugin.py"]
    assert "..." not in plugin.replace('"..."', ""), "the example objective must be complete"
    assert "(MethodConfig)" in plugin and "option(" in plugin
    runs = [c for c in commands(text) if c[1] == "run"]
    assert runs and "--methods" in runs[0], "the page shows the `dcobench run` command of its example"


def test_the_interface_section_documents_every_flag_and_argument():
    from dcobench.methods.base import Objective

    block = PAGE.read_text().split("<!-- gen:objective:begin -->")[1].split("<!-- gen:objective:end -->")[0]
    for flag in ("name", "config_cls", "needs_reference", "needs_prior", "default_guidance",
                 "reference_uses_base_prompt"):
        assert f"- **`{flag}`** (default" in block, flag
    for arg in list(inspect.signature(Objective.__call__).parameters)[1:]:
        assert f"- **`{arg}`** (" in block, arg
    assert "Returns `" in block and "`per_sample_mse(" in block


@pytest.mark.slow  # about 35 s on 2 busy cores: pip, a tiny-suite run and `dcobench ls`, each its own process
def test_the_example_plugin_installs_and_runs_on_the_tiny_suite(tmp_path, tiny_suite):
    pytest.importorskip("setuptools", reason="the example's build backend (setuptools) is not installed")
    text = PAGE.read_text()
    for rel, body in example_files(text).items():
        path = tmp_path / "src" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    site = tmp_path / "site"
    # the page says `pip install -e .`; a --target install leaves this environment untouched
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-build-isolation",
                        "--target", str(site), str(tmp_path / "src" / "mything")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}

    def dcobench(args: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dcobench", *args], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)

    run = next(c for c in commands(text) if c[1] == "run")
    methods = run[run.index("--methods") + 1].split(",")
    assert methods == ["anchored"], "the page's run command runs its example method"
    if "--out" in run:
        i = run.index("--out")
        del run[i : i + 2]
    r = dcobench([*run[1:], "--out", str(tmp_path / "run"), "--quiet", *SMALL])
    assert r.returncode == 0, r.stdout + r.stderr
    results = [json.loads(p.read_text()) for p in (tmp_path / "run" / "cells").glob("*/result.json")]
    assert {res["method"] for res in results} == set(methods)
    trained = [json.loads(p.read_text()) for p in (tmp_path / "run" / "loras").glob("*/train.json")]
    assert trained and all(t["config"]["method"] == "anchored" for t in trained)
    # the values the example's __call__ logs, one per optimizer step: the objective itself ran
    assert all(len(t["curves"].get("anchor", [])) == 2 for t in trained)

    listing = dcobench(["ls", "methods"])
    assert listing.returncode == 0, listing.stderr
    assert re.search(r"^  anchored +method +.*needs_reference; knobs: anchor_weight\]$", listing.stdout, re.M), \
        listing.stdout
