"""`dcobench run --merge`: the merge cells of a plan, a run on the tiny suite, the interference table."""

import json
import math

import pandas as pd
import pytest

from dcobench.errors import DcoError
from dcobench.plan import make_plan
from dcobench.report import write_report
from dcobench.report.merges import interference_table, pair_drops
from dcobench.runner import run_plan

FAST = ["train.steps=3", "sample.steps=2", "sample.seeds=[0]", "sample.max_prompts=2", "merges.ziplora.steps=2"]


def test_plan_pairs_every_subject_with_every_style(dcobench_cache):
    plan = make_plan(overrides=FAST, methods=["dco", "dreambooth"], suite="tiny", merge=["direct", "ziplora"])
    # 2 methods x 2 subjects x 1 style x 1 seed x (subject alone, style alone, direct, ziplora)
    assert len(plan.merge_cells) == 16
    by_row = {(c.method, c.subject.name, c.merge): c for c in plan.merge_cells}
    cell = by_row[("dco", "robot", "direct")]
    assert cell.style.name == "stripes"
    assert all(p.endswith(", in kxv style") for p in cell.prompts())
    assert cell.base(cell.prompts()[0]) == "a photo of toy on the beach, in style"
    regular = {(c.method, c.subject.name): c.train_id for c in plan.cells}
    assert cell.train_cell("subject").train_id == regular[("dco", "robot")]  # the subject LoRA is shared
    ids = {c.cell_id for c in plan.merge_cells}
    assert len(ids) == 16 and not ids & {c.cell_id for c in plan.cells}
    assert plan.config.merges["ziplora"].steps == 2


def test_merge_bad_input(dcobench_cache, tmp_path, tiny_suite, tiny_sd_path, cli):
    r = cli("run", "--suite", "tiny", "--merge", " ,", "--out", tmp_path / "run")
    assert r.returncode == 2 and "--merge: give a comma-separated list" in r.stderr
    assert not (tmp_path / "run").exists()
    with pytest.raises(DcoError, match="did you mean 'ziplora'"):
        make_plan(suite="tiny", merge=["zip"])
    with pytest.raises(DcoError, match="merges.ziplora.stepz: unknown key"):
        make_plan(overrides=["merges.ziplora.stepz=3"], suite="tiny", merge=["ziplora"])
    with pytest.raises(DcoError, match="report.pareto_metrics: 'oracle_subjct' is not scored by this run"):
        make_plan(overrides=["report.pareto_metrics=[oracle_subjct]"], suite="tiny")
    with pytest.raises(DcoError, match="no style 'dots'"):
        make_plan(overrides=["styles=[dots]"], suite="tiny", merge=["direct"])
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"model: {tiny_sd_path}\nresolution: 32\nprompts: ['a photo of {{identifier}} {{class_noun}}']\n"
                     f"subjects: [{tiny_suite.subjects[0].root}]\n")
    with pytest.raises(DcoError, match="no style references; add `styles:`"):
        make_plan(suite=str(suite), merge=["direct"])
    suite.write_text(suite.read_text() + f"styles: [{tiny_suite.styles[0].root}]\n")
    assert len(make_plan(suite=str(suite), merge=["direct"], methods=["dreambooth"]).merge_cells) == 3


def test_merge_run_and_report(dcobench_cache, tmp_path):
    plan = make_plan(overrides=FAST + ["subjects=[robot]"], methods=["dco", "dreambooth"], suite="tiny",
                     merge=["direct", "ziplora"])
    stats = run_plan(plan, tmp_path, show_progress=False)
    assert stats["cells"] == len(plan.cells) + 8 and stats["trained"] == 4  # subject + style LoRA per method
    merged = sorted((tmp_path / "merges").iterdir())
    assert len(merged) == 4 and all((m / "merge.json").is_file() for m in merged)
    info = json.loads((merged[0] / "merge.json").read_text())
    assert info["rank"] == 8 and info["subject_lora"].startswith(("dco-robot", "dreambooth-robot"))
    result = json.loads(next((tmp_path / "cells").glob("merge-dco-robot+stripes-ziplora-*/result.json")).read_text())
    assert result["kind"] == "merge" and result["style_references"] and result["lora"].startswith("../../merges/")
    assert {"dino", "style_dino", "clip_t"} <= set(result["metrics"])
    scores = pd.read_csv(tmp_path / "cells" / result["cell_id"] / result["scores"])
    assert all("kxv" not in t and "sks" not in t for t in scores["scored_prompt"])  # CLIP-T sees class nouns

    assert run_plan(plan, tmp_path, show_progress=False)["sampled"] == 0  # a rerun redoes nothing

    paths = write_report(tmp_path, tmp_path / "report")
    table = pd.read_csv(paths["merge_csv"])
    assert list(table["label"]) == ["subject LoRA alone"] * 2 + ["style LoRA alone"] * 2 + [
        "merge: direct", "merge: ziplora"] * 2
    summary = pd.read_csv(paths["summary_csv"])
    assert summary["n"].sum() == len(plan.cells)  # merge cells stay out of the summary and Pareto plot
    assert paths["merge_figure:robot+stripes"].is_file()
    html = paths["index_html"].read_text()
    assert "Merge interference" in html and "merge: ziplora" in html


def _df(rows):
    df = pd.DataFrame(rows)
    for col, default in (("protocol_id", "p"), ("kind", "merge"), ("seed", 0), ("style", "st")):
        df[col] = default
    df.attrs = {"metrics": ["dino", "clip_t", "style_dino"]}
    return df


def test_interference_is_the_drop_against_the_unmerged_loras():
    df = _df([
        {"method": "dco", "subject": "a", "merge": "subject", "dino": 0.8, "clip_t": 0.30, "style_dino": 0.1},
        {"method": "dco", "subject": "a", "merge": "style", "dino": 0.1, "clip_t": 0.20, "style_dino": 0.9},
        {"method": "dco", "subject": "a", "merge": "direct", "dino": 0.5, "clip_t": 0.22, "style_dino": 0.6},
        {"method": "dco", "subject": "b", "merge": "subject", "dino": 0.6, "clip_t": 0.30, "style_dino": 0.1},
        {"method": "dco", "subject": "b", "merge": "style", "dino": 0.1, "clip_t": 0.30, "style_dino": 0.7},
        {"method": "dco", "subject": "b", "merge": "direct", "dino": 0.5, "clip_t": 0.30, "style_dino": 0.7},
    ])
    drops = pair_drops(df).set_index(["subject", "merge"])
    assert drops.loc[("a", "direct"), "drop_dino"] == pytest.approx(0.3)  # vs the subject LoRA alone
    assert drops.loc[("a", "direct"), "drop_style_dino"] == pytest.approx(0.3)  # vs the style LoRA alone
    assert drops.loc[("a", "direct"), "drop_clip_t"] == pytest.approx(0.03)  # vs the mean of both
    assert math.isnan(drops.loc[("a", "subject"), "drop_dino"])
    table = interference_table(df).set_index("merge")
    assert table.loc["direct", "n"] == 2
    assert table.loc["direct", "drop_dino_mean"] == pytest.approx((0.3 + 0.1) / 2)
    assert table.loc["direct", "drop_style_dino_mean"] == pytest.approx(0.15)
