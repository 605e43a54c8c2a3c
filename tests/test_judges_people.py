"""Judges against people: the agreement statistics, the headline rule, and the report that folds labels in."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dcobench.labels.agreement import (BINARY, FITTED, MIN_N, Cut, agreement_table, consensus, fit_cut, inter_rater,
                                       kappa, rule, wilson)


def test_kappa_and_wilson_match_hand_computed_values():
    # 2x2 table: both yes 20, a-yes b-no 5, a-no b-yes 10, both no 15 -> po 0.7, pe 0.5, kappa 0.4
    a = np.array([1] * 25 + [0] * 25)
    b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
    assert kappa(a, b) == pytest.approx(0.4)
    assert math.isnan(kappa(np.ones(5), np.ones(5)))  # chance agreement 1: undefined, not 1
    lo, hi = wilson(8, 10)
    assert (lo, hi) == pytest.approx((0.4902, 0.9433), abs=1e-4)  # the textbook Wilson interval
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == pytest.approx(1.0)


def test_consensus_takes_each_labellers_latest_answer_then_the_majority():
    rows = [("i1", "a", "yes", "t1"), ("i1", "a", "no", "t2"),  # a changed their mind: no
            ("i1", "b", "no", "t1"), ("i1", "c", "yes", "t1"),  # majority no (2 of 3)
            ("i2", "a", "yes", "t1"), ("i2", "b", "no", "t1"),  # a tie: unsure
            ("i3", "a", "unsure", "t1")]
    labels = pd.DataFrame([{"item": i, "cell": "c", "image": "x.png", "question": "subject", "answer": ans,
                            "time": t, "labeller": who} for i, who, ans, t in rows])
    got = consensus(labels).set_index("item")["human"]
    assert got["i1"] == 0.0 and math.isnan(got["i2"]) and math.isnan(got["i3"])
    raters = inter_rater(labels)
    ab = raters[(raters.a == "a") & (raters.b == "b")].iloc[0]
    assert (ab.n, ab.agreement) == (2, 0.5)


def _frame(points: dict[str, tuple[list, list]]) -> pd.DataFrame:
    """point -> (human answers, judge scores): one row per image, subject answers only."""
    rows = []
    for point, (human, judge) in points.items():
        rows += [{"point": point, "subject": "s", "human_subject": h, "human_prompt": np.nan, "j": v}
                 for h, v in zip(human, judge)]
    return pd.DataFrame(rows)


SUBJECT_JUDGE = {"j": {"kind": "subject", "higher_is_better": True}}


def test_the_rule_needs_accuracy_and_rate_in_every_big_stratum():
    n = MIN_N
    good = ([1] * n, [1] * n)
    frame = _frame({"a": good, "b": ([1] * n, [1] * (n - 1) + [0])})  # b: accuracy 15/16 = 0.94, gap 0.06
    table = agreement_table(frame, SUBJECT_JUDGE, {"j": Cut(0.5, BINARY)})
    assert rule(table)["j"][0] is True
    # one stratum with a 2-in-16 miss: accuracy 0.875 < 0.90 -> the judge carries no verdict
    frame = _frame({"a": good, "b": ([1] * n, [1] * (n - 2) + [0, 0])})
    ok, why = rule(agreement_table(frame, SUBJECT_JUDGE, {"j": Cut(0.5, BINARY)}))["j"]
    assert not ok and "1 of 2 strata" in why
    # a stratum below MIN_N images does not count either way, but some stratum must be big enough
    frame = _frame({"a": good, "small": ([1] * 5, [0] * 5)})
    assert rule(agreement_table(frame, SUBJECT_JUDGE, {"j": Cut(0.5, BINARY)}))["j"][0] is True
    frame = _frame({"small": ([1] * 5, [1] * 5)})
    assert rule(agreement_table(frame, SUBJECT_JUDGE, {"j": Cut(0.5, BINARY)}))["j"][0] is False


def test_abstentions_and_unsure_answers_are_left_out_and_counted():
    frame = _frame({"a": ([1, 1, np.nan, 0], [1, np.nan, 1, 0])})
    row = agreement_table(frame, SUBJECT_JUDGE, {"j": Cut(0.5, BINARY)}).iloc[0]
    assert (row.n, row.abstained, row.accuracy) == (2, 1, 1.0)


def test_a_continuous_judge_uses_its_validated_cut_else_a_flagged_fit():
    human = [1] * 20 + [0] * 20
    scores = list(np.linspace(0.6, 1.0, 20)) + list(np.linspace(0.1, 0.5, 20))
    frame = _frame({"a": (human, scores)})
    table = agreement_table(frame, SUBJECT_JUDGE, {})
    assert table.iloc[0].cut_source == FITTED and table.iloc[0].accuracy == 1.0
    assert fit_cut(np.array(scores), np.array(human)) == pytest.approx(0.6)
    # a validated cut that is too strict shows as a low judge rate, not as a refitted cut
    table = agreement_table(frame, SUBJECT_JUDGE, {"j": Cut({"s": 0.9}, "validation: here")})
    assert table.iloc[0].cut_source == "validation: here" and table.iloc[0].judge_rate == pytest.approx(5 / 40)
    # lower is better: "yes" below the cut
    low = {"j": {"kind": "subject", "higher_is_better": False}}
    frame = _frame({"a": (human, [1 - s for s in scores])})
    assert agreement_table(frame, low, {}).iloc[0].accuracy == 1.0


def test_report_folds_labels_into_judges_tables_and_a_people_panel(tiny_suite, tmp_path):
    from dcobench.cli import main
    from dcobench.labels.sample import load_or_draw
    from dcobench.labels.store import record

    out = tmp_path / "run"
    assert main(["run", "--methods", "dco", "--suite", "tiny", "subjects=[robot]", "train.steps=2",
                 "sample.steps=2", "sample.seeds=[0,1]", "methods.dco.sweep={sample.w_con: [1.0, 2.0]}",
                 "--quiet", "--out", str(out)]) == 0
    assert main(["report", str(out), "--out", str(tmp_path / "plain")]) == 0
    assert not (tmp_path / "plain" / "judges.csv").exists()  # no labels: the report is as before
    sample = load_or_draw(out, per_stratum=100, seed=0)
    for k, item in enumerate(sample["items"]):
        record(out, "ann", item, "subject", "yes" if k % 2 else "no")
        record(out, "ann", item, "prompt", "yes")
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    judges = pd.read_csv(tmp_path / "rep" / "judges.csv")
    assert {"dino", "clip_i", "clip_t"} <= set(judges["judge"])
    assert set(judges["stratum"]) == {"dco w_con=1.0", "dco w_con=2.0", "all"}
    people = pd.read_csv(tmp_path / "rep" / "people.csv")
    assert people["n"].sum() == len(sample["items"]) and (people["prompt_rate"] == 1.0).all()
    page = (tmp_path / "rep" / "index.html").read_text()
    assert "Judges against people" in page and "misses the rule" in page
    # the people panel: the Pareto figure is wider than the report's without labels
    from PIL import Image

    assert Image.open(tmp_path / "rep" / "pareto.png").width > Image.open(tmp_path / "plain" / "pareto.png").width
