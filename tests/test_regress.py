"""The fidelity regression guard: reproducible scores, tolerances, and a broken objective caught."""

import json

import pytest

from baselines.dreambooth import DreamBooth
from dcobench import regress as rg
from dcobench.config import ScoreConfig
from dcobench.errors import DcoError
from dcobench.plan import make_plan
from dcobench.registry import METHODS
from dcobench.runner import run_plan
from dcobench.scoring import rescore


class WrongSign(DreamBooth):
    """A deliberately broken objective: gradient ascent on the diffusion loss."""

    def __call__(self, model_pred, target, ref_pred=None, weights=None, prior=None):
        loss, logs = super().__call__(model_pred, target, ref_pred, weights, prior)
        return -loss, logs


def _run(out):
    run_plan(make_plan(methods=["dreambooth"], suite="tiny"), out, show_progress=False)
    return out


@pytest.fixture(scope="module")
def good_run(tmp_path_factory, dcobench_cache):
    return _run(tmp_path_factory.mktemp("good") / "run")


def test_rescoring_gives_identical_numbers(good_run, tmp_path):
    before = {p.parent.name: json.loads(p.read_text())["metrics"] for p in good_run.glob("cells/*/result.json")}
    cfg = ScoreConfig(**json.loads((good_run / "run.json").read_text())["config"]["score"])
    stats = rescore(good_run, cfg, force=True)
    assert stats["scored"] == len(before)
    after = {p.parent.name: json.loads(p.read_text())["metrics"] for p in good_run.glob("cells/*/result.json")}
    assert after == before


def test_same_run_passes_and_broken_objective_is_caught(good_run, tmp_path, monkeypatch):
    baseline = tmp_path / "baseline.json"
    rg.update(good_run, baseline, tolerance=0.005)
    rows, ok, note = rg.compare(good_run, baseline)
    assert ok and rows and not note
    monkeypatch.setitem(METHODS._entries, "dreambooth", WrongSign)
    bad = _run(tmp_path / "bad")
    rows, ok, _ = rg.compare(bad, baseline)
    assert not ok
    assert any(not r["ok"] and r["delta"] < -0.005 for r in rows)


def test_tolerance_direction_and_missing_groups(good_run, tmp_path):
    baseline = tmp_path / "b.json"
    data = rg.update(good_run, baseline, tolerance=0.01)
    group = next(iter(data["metrics"]))
    data["metrics"][group]["dino"] -= 0.5  # the run is now far *better* than the baseline: fine
    data["metrics"]["ghost[sample.cfg_scale=1.0]"] = {"dino": 0.5}  # a group the run lacks: not fine
    baseline.write_text(json.dumps(data))
    rows, ok, _ = rg.compare(good_run, baseline)
    status = {(r["group"], r["metric"]): r["ok"] for r in rows}
    assert status[(group, "dino")] is True
    assert status[("ghost[sample.cfg_scale=1.0]", "dino")] is False and not ok


def test_protocol_mismatch_is_never_compared(good_run, tmp_path, cli):
    baseline = tmp_path / "b.json"
    data = rg.update(good_run, baseline)
    data["protocol"]["id"] = "other"
    baseline.write_text(json.dumps(data))
    with pytest.raises(DcoError, match="protocols differ"):
        rg.compare(good_run, baseline)
    r = cli("regress", good_run, "--baseline", baseline)  # bad input (exit 2), not a regression (exit 1)
    assert r.returncode == 2 and "protocols differ" in r.stderr and len(r.stderr.strip().splitlines()) == 1
