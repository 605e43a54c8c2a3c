"""The committed blind labels of the micro methods' outputs, re-judged by the judges that ship."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from dcobench.labels.agreement import MIN_ACCURACY, MIN_N, rule
from dcobench.micro import people

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def measured():  # re-judges 960 images with the micro encoders: about a minute (the tests using it are slow)
    dirs = people.set_dirs(ROOT / "data" / "micro" / "labels")
    assert [d.name for d in dirs] == ["dev", "fresh"]
    return people.measure_all(dirs)


@pytest.mark.slow
def test_both_sets_are_rejudged_with_every_shipped_judge(measured):
    dev, fresh = measured
    assert (dev["n"], fresh["n"]) == (624, 336)
    assert dev["labellers"] == ["agent", "agent2"] and fresh["labellers"] == ["agent2"]
    for res in measured:
        assert set(res["table"]["judge"]) == set(people.JUDGES)
        assert set(res["verdicts"]) == set(people.JUDGES)
    # the fresh set is held out from every cut: CLIP-T's was fitted on the dev labels
    clip_t = fresh["table"][fresh["table"]["judge"] == "clip_t"]
    assert set(clip_t["cut_source"]) == {"fitted on the dev labels"}
    assert set(dev["table"][dev["table"]["judge"] == "dino"]["cut_source"]) == {"validation: data/micro/validation.json"}


@pytest.mark.slow
def test_rule_verdicts_follow_from_the_per_point_rows(measured):
    for res in measured:
        table = res["table"]
        assert rule(table) == res["verdicts"]
        for judge, (ok, _) in res["verdicts"].items():
            rows = table[(table["judge"] == judge) & (table["stratum"] != "all") & (table["n"] >= MIN_N)]
            assert ok == bool(len(rows) and (rows["accuracy"] >= MIN_ACCURACY).all()
                              and ((rows["judge_rate"] - rows["human_rate"]).abs() <= 0.10).all())


@pytest.mark.slow
def test_second_labeller_overlap_is_measured(measured):
    raters = measured[0]["raters"]
    assert set(raters["question"]) == {"subject", "prompt"}
    assert (raters["n"] >= 80).all()  # a random 96 of the dev images, minus unsure answers
    assert isinstance(raters, pd.DataFrame)


@pytest.mark.parametrize("dev, fresh, carries", [(True, True, True), (True, False, False), (False, True, False)])
def test_a_judge_carries_verdicts_only_if_it_meets_the_rule_on_every_set(tmp_path, monkeypatch, dev, fresh, carries):
    import json

    (tmp_path / "validation.json").write_text(json.dumps({"people": {
        "dev": {"n": 10, "verdicts": {"oracle_subject": [dev, "dev why"]}},
        "fresh": {"n": 5, "verdicts": {"oracle_subject": [fresh, "fresh why"]}}}}))
    monkeypatch.setattr(people, "default_micro_dir", lambda: tmp_path)
    got, source = people.calibration()
    assert got["oracle_subject"][0] is carries and "dev: dev why" in got["oracle_subject"][1]
    assert source == "data/micro/labels/ (dev 10 images, fresh 5 images)"
    assert people.checks([{"set": "dev", "verdicts": {"oracle_subject": (dev, "")}}]) == {
        "oracle_subject meets the headline rule on the blind labels (dev)": dev}
