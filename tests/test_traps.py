"""Silent traps that became correct behaviour or a one-line error (issue 13).

The report's metric directions are tested in test_report.py (an unknown metric is refused, never
ranked as higher-is-better)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcobench.cli import main
from dcobench.config import RunConfig
from dcobench.errors import DcoError
from dcobench.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_is_the_default_run():
    """configs/default.yaml says it is the default run: it plans exactly the cells of no config at all
    (so DCO gets the suite's calibrated beta, not the paper's 1000 that saturates the micro loss)."""
    spelled_out = make_plan(ROOT / "dcobench" / "configs" / "default.yaml")
    default = make_plan()
    assert [c.cell_id for c in spelled_out.cells] == [c.cell_id for c in default.cells]
    assert spelled_out.suite.name == RunConfig().suite == "micro"
    assert {c.method_cfg.beta for c in default.cells if c.method == "dco"} == {5.0}


def test_run_help_names_the_real_default_suite(capsys):
    assert main(["run", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"(default: {RunConfig().suite})" in out and "default: tiny" not in out


def test_merge_takes_the_same_keys_as_run(tmp_path, capsys):
    """`dcobench merge` reads merges.<method>.*, as `dcobench run` does; methods.<method>.* is refused."""
    code = main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                 "methods.direct.weight_style=0.5"])
    assert code == 2
    assert "only merges.direct.<field> can be set here" in capsys.readouterr().err
    code = main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "m"),
                 "merges.direct.weight_styl=0.5"])
    assert code == 2 and "merges.direct.weight_styl: unknown key; did you mean 'weight_style'?" in capsys.readouterr().err


def test_merge_refuses_to_replace_a_folder_that_is_not_a_merge(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert main(["merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 2
    assert "exists and is not a merged LoRA folder" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me"


def test_merges_are_not_swept():
    """A merge method's config has no `sweep`: `merges.ziplora.sweep=...` used to be accepted and ignored."""
    with pytest.raises(DcoError, match=r"merges.ziplora.sweep: unknown key"):
        make_plan(overrides=["merges.ziplora.sweep={steps: [1, 2]}"], suite="tiny", merge=["ziplora"])


def test_unknown_export_format_is_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "a1111"]) == 2
    assert "--format: 'a1111' is not supported; use --format kohya" in capsys.readouterr().err
