"""The base-model anchor (dcobench/study/anchors.py): a point with no more fidelity than the base
model earns no area, whatever its prompt fidelity; without anchors the old frame is kept."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dcobench.study.anchors import anchor_values
from dcobench.study.ppi import LabelSet
from dcobench.study.stats import frontier_difference


def _frame(do_nothing: bool, subjects=("s0", "s1", "s2", "s3"), anchor: float = 0.1) -> pd.DataFrame:
    """Two methods with the same real frontier per subject (oracle rate against CLIP-T); method A
    adds, if asked, a point that draws the class prior (oracle = the anchor) at high prompt fidelity."""
    rng = np.random.default_rng(0)
    rows = []
    for s in subjects:
        noise = rng.normal(0, 1e-3, size=3)  # the same points for both methods
        for m in ("a", "b"):
            for k, (x, y) in enumerate([(0.60, 0.9), (0.70, 0.7), (0.75, 0.5)]):
                rows.append({"cell_id": f"{s}-{m}-{k}", "subject": s, "seed": 0, "method": m, "knob_label": f"k{k}",
                             "arm": "main", "clip_t": x + noise[k], "oracle_subject": y})
        if do_nothing:
            rows.append({"cell_id": f"{s}-a-off", "subject": s, "seed": 0, "method": "a", "knob_label": "off",
                         "arm": "main", "clip_t": 0.85, "oracle_subject": anchor})
    return pd.DataFrame(rows)


def _anchors(subjects=("s0", "s1", "s2", "s3"), value: float = 0.1) -> dict:
    return {"oracle_subject": {s: value for s in subjects}}


def test_do_nothing_point_earns_no_area_when_anchored():
    df = _frame(do_nothing=True)
    old = frontier_difference(df, "a", "b", "clip_t", "oracle_subject")
    assert old["estimate"] > 0.02 and old["ci_low"] > 0  # the worst-value frame pays for drawing nothing
    df.attrs["anchors"] = _anchors()
    new = frontier_difference(df, "a", "b", "clip_t", "oracle_subject")
    assert new["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert new["anchor"] == "base model" and new["unanchored"]["estimate"] == pytest.approx(old["estimate"])


def test_anchor_below_the_point_pays_again_and_a_real_gain_still_counts():
    df = _frame(do_nothing=True)
    df.attrs["anchors"] = _anchors(value=0.0)  # the do-nothing point now shows more than the base model
    assert frontier_difference(df, "a", "b", "clip_t", "oracle_subject")["estimate"] > 0
    better = _frame(do_nothing=False)
    better.loc[better["method"] == "a", "oracle_subject"] += 0.05
    better.attrs["anchors"] = _anchors()
    assert frontier_difference(better, "a", "b", "clip_t", "oracle_subject")["ci_low"] > 0


def test_subject_without_anchor_is_left_out_and_said():
    df = _frame(do_nothing=False)
    df.attrs["anchors"] = {"oracle_subject": {"s0": 0.1, "s1": 0.1}}
    res = frontier_difference(df, "a", "b", "clip_t", "oracle_subject")
    assert res["n"] == 2
    df.attrs["anchors"] = {}
    assert frontier_difference(df, "a", "b", "clip_t", "oracle_subject")["n"] == 0


def test_anchored_label_corrected_do_nothing_point_earns_no_area():
    df = _frame(do_nothing=True)
    labels = pd.DataFrame([{"cell_id": f"{s}-a-0", "subject": s, "f": 1.0, "y": 1.0, "w": 1.0}
                           for s in ("s0", "s1", "s2", "s3")])
    df.attrs["corrections"] = {"oracle_subject": LabelSet(labels)}
    df.attrs["anchors"] = _anchors()
    res = frontier_difference(df, "a", "b", "clip_t", "oracle_subject")
    assert res["basis"].startswith("label-corrected") and res["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert res["unanchored"]["estimate"] > 0.02


def test_anchor_values_are_label_corrected_per_judge():
    cells = pd.DataFrame([{"cell_id": f"c{i}", "subject": s, "oracle_subject": 0.25, "dino": 0.7}
                          for i, s in enumerate(["s0", "s0", "s1"])])
    claim = {"anchor_cells": {"cells": ["c0", "c1", "c2"]}}
    labels = LabelSet(pd.DataFrame({"cell_id": ["c0", "c2"], "subject": ["s0", "s1"], "f": [0.0, 0.0],
                                    "y": [1.0, 0.0], "w": [1.0, 1.0]}))
    out = anchor_values(cells, claim, ["oracle_subject", "dino"], {"oracle_subject": labels})
    assert out["oracle_subject"] == {"s0": pytest.approx(0.75), "s1": pytest.approx(0.75)}
    assert out["dino"] == {"s0": pytest.approx(0.7), "s1": pytest.approx(0.7)}
    assert anchor_values(cells, {}, ["dino"]) is None
