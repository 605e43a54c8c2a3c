"""A failure stops only its own cells (issue 33): a plugin whose loss raises, and one whose loss is
NaN, in a run and in a study, on the local executor and on Ray; a rerun retries only what failed;
`--fail-fast` keeps the old behaviour. Also: a method without a sweep takes its guidance's, and
`dcobench ls options` lists every registered method's options."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAST = ["train.steps=2", "sample.steps=2", "sample.seeds=[0]", "subjects=[robot]"]

PLUGIN = '''
import os
from dcobench.methods import Objective, per_sample_mse
from dcobench.registry import METHODS

@METHODS.register("boom", description="a plugin whose loss raises until BOOM_FIXED is set")
class Boom(Objective):
    name = "boom"
    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        if os.environ.get("BOOM_FIXED"):
            loss = per_sample_mse(model_pred, target, weights).mean()
            return loss, {"loss": loss.item()}
        return self.cfg.no_such_field, {}

@METHODS.register("nanloss", description="a plugin whose loss is NaN")
class NanLoss(Objective):
    name = "nanloss"
    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        loss = per_sample_mse(model_pred, target, weights).mean() * float("nan")
        return loss, {"loss": loss.item()}
'''


@pytest.fixture(scope="module")
def plugin(tmp_path_factory):
    """An installed plugin package (dist-info + entry point) with the two broken objectives."""
    root = tmp_path_factory.mktemp("badplug")
    (root / "badplug.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "badplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: badplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dcobench.plugins]\nbad = badplug\n")
    return root


def dcobench(plugin: Path, *args, fixed: bool = False, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(plugin), "OMP_NUM_THREADS": "1"}
    env.pop("BOOM_FIXED", None)
    if fixed:
        env["BOOM_FIXED"] = "1"
    return subprocess.run([sys.executable, "-m", "dcobench", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def failed_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("failed: ")]


def done_methods(out: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in (out / "cells").glob("*/result.json"):
        m = json.loads(p.read_text())["method"]
        counts[m] = counts.get(m, 0) + 1
    return counts


def check_first_attempt(r, out: Path) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr  # one line per failed unit, the tracebacks in their folders
    lines = failed_lines(r.stderr)
    assert len(lines) == 2, r.stderr  # one training of each broken method (one subject, one seed)
    boom = next(line for line in lines if line.startswith("failed: boom subject=robot seed=0 training"))
    assert "AttributeError: 'MethodConfig' object has no attribute 'no_such_field'" in boom
    nan = next(line for line in lines if line.startswith("failed: nanloss"))
    assert "training diverged at step 0 (loss nan)" in nan
    for line in lines:
        tb = Path(line.rsplit("[traceback: ", 1)[1].rstrip("]"))
        assert tb.is_file() and tb.parent.parent.name == "loras"
        assert "Traceback (most recent call last)" in tb.read_text()
    assert done_methods(out) == {"dreambooth": 2}  # the other method's cells all ran
    # the broken methods were swept like dreambooth (the suite's cfg sweep): 2 cells each, all failed
    records = [json.loads(p.read_text()) for p in (out / "cells").glob("*/failed.json")]
    assert sorted(r["method"] for r in records) == ["boom", "boom", "nanloss", "nanloss"]
    assert {r["knobs"]["sample.cfg_scale"] for r in records} == {3.0, 7.5}


def test_a_raising_and_a_nan_plugin_fail_only_their_cells(plugin, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--suite", "tiny", "--methods", "boom,nanloss,dreambooth", "--out", out, "--quiet", *FAST]
    r = dcobench(plugin, *args)
    check_first_attempt(r, out)
    db = {p: p.stat().st_mtime_ns for p in (out / "loras").glob("dreambooth-*/*.safetensors")}

    rep = dcobench(plugin, "report", out)
    assert rep.returncode == 0, rep.stderr
    failed_csv = (out / "report" / "failed.csv").read_text().splitlines()
    assert len(failed_csv) == 5 and failed_csv[0].startswith("cell_id,method,subject")
    page = (out / "report" / "index.html").read_text()
    assert "Failed cells" in page and "no_such_field" in page
    assert "4 cells failed" in (out / "report" / "summary.md").read_text()

    # the plugin fixed: a rerun retries only the failed units; nanloss still fails, nothing else reruns
    r = dcobench(plugin, *args, fixed=True)
    assert r.returncode == 1, r.stderr
    said = " ".join(r.stderr.split())  # the console wraps its lines
    assert "6 cells in" in said and "2 run, 2 already done, 2 failed, 1 LoRAs trained" in said
    assert [line.split()[1] for line in failed_lines(r.stderr)] == ["nanloss"]
    assert done_methods(out) == {"dreambooth": 2, "boom": 2}
    assert {p: p.stat().st_mtime_ns for p in db} == db
    assert not list((out / "loras").glob("boom-*/failed.json"))  # a retried unit forgets its failure

    # --fail-fast: the first error stops the run, as before (a diverged training is the user's to fix: exit 2)
    ff = tmp_path / "ff"
    r = dcobench(plugin, "run", "--suite", "tiny", "--methods", "nanloss,dreambooth", "--out", ff, "--quiet",
                 "--fail-fast", *FAST)
    assert r.returncode == 2 and "error: training diverged at step 0" in r.stderr
    assert not done_methods(ff)


STUDY = """
name: broken
suite: tiny
config:
  seeds: [0]
  subjects: [robot]
  train: {steps: 2}
  sample: {steps: 2, seeds: [0], max_prompts: 2}
claims:
  subject:
    kind: frontier
    title: A broken plugin against DreamBooth
    methods: [boom, dreambooth]
    reference: boom
    judges: [dino, clip_i]
"""


@pytest.mark.parametrize("executor", ["local", pytest.param("ray", marks=pytest.mark.slow)])
def test_a_study_with_a_raising_plugin_reports_what_it_lost(plugin, tmp_path, executor):
    if executor == "ray":
        pytest.importorskip("ray")
    study = tmp_path / "broken.yaml"
    study.write_text(STUDY)
    out = tmp_path / "study"
    extra = ["executor.name=ray", "executor.workers=1"] if executor == "ray" else []
    r = dcobench(plugin, "study", study, "--out", out, "--quiet", *extra)
    assert r.returncode == 1, r.stderr
    lines = failed_lines(r.stderr)
    assert len(lines) == 1 and lines[0].startswith("failed: boom subject=robot seed=0 training"), r.stderr
    assert "study report:" in r.stdout  # the report is written all the same, and says what it lost
    md = (out / "report" / "study.md").read_text()
    # 4 cells of the two methods and the anchor (the base model, on the other method's LoRA): the boom cells fail
    assert "(lost: 2 of 5 cells failed)" in md and "2 cells of this study failed" in md
    assert done_methods(out) == {"dreambooth": 3}  # its two cells and the anchor
    r = dcobench(plugin, "study", study, "--out", out, "--quiet", *extra, fixed=True)
    assert r.returncode == 0, r.stderr
    assert "2 run, 3 already done, 1 LoRAs trained" in " ".join(r.stderr.split())
    assert "lost:" not in (out / "report" / "study.md").read_text()


@pytest.mark.slow
def test_ray_run_keeps_going_past_a_failed_unit(plugin, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    r = dcobench(plugin, "run", "--suite", "tiny", "--methods", "boom,nanloss,dreambooth", "--out", out, "--quiet",
                 "--executor", "ray", "--workers", "1", *FAST)
    check_first_attempt(r, out)


def test_a_method_without_a_sweep_takes_its_guidances(plugin, dcobench_cache):
    from dcobench.plan import make_plan

    plan = make_plan(None, ["subjects=[robot]"], ["dreambooth_pp", "dreambooth"], "tiny")
    knobs = sorted((c.method, c.knobs["sample.cfg_scale"]) for c in plan.cells)
    assert knobs == [("dreambooth", 3.0), ("dreambooth", 7.5), ("dreambooth_pp", 3.0), ("dreambooth_pp", 7.5)]
    plan = make_plan(None, ["subjects=[robot]", "sample.guidance=consistency"], ["dreambooth_pp"], "tiny")
    assert sorted(c.knobs["sample.w_con"] for c in plan.cells) == [1.0, 2.0]
    plan = make_plan(None, ["subjects=[robot]", "methods.dreambooth_pp.sweep={}"], ["dreambooth_pp"], "tiny")
    assert [c.knobs for c in plan.cells] == [{}]  # an explicit empty sweep keeps one point


def test_ls_options_lists_every_methods_options(plugin):
    r = dcobench(plugin, "ls", "options")
    assert r.returncode == 0, r.stderr
    keys = {line.split()[0] for line in r.stdout.splitlines()[1:]}
    assert {"methods.dco.beta", "methods.dco.reference_prompt", "methods.dreambooth_pp.num_class_images",
            "merges.ziplora.steps", "executor.fail_fast", "methods.boom.sweep", "train.steps"} <= keys
