"""The envelope claim (dcobench/study/envelope.py): the reference against the upper envelope of
another method's frontiers over its training lengths."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from dcobench.errors import DcoError
from dcobench.study.envelope import dominated, envelope_section
from dcobench.study.run import plan_study
from dcobench.study.spec import load_study

CLAIM = {"kind": "envelope", "methods": ["dco", "dreambooth"], "judges": ["dino"],
         "arms": {"short": {"train": {"steps": 1}}, "full": {}},
         "samplers": {"cfg": {"sample.cfg_scale": [3.0]}, "consistency": {"sample.w_con": [1.0]}}}


def _study(tmp_path, claim=CLAIM):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "suite": "tiny", "config": {"subjects": ["robot"]},
                                    "claims": {"envelope": claim}}, sort_keys=False))
    return load_study(str(path))


def test_envelope_plans_the_reference_once_and_each_length_under_each_sampler(tmp_path, dcobench_cache):
    sp = plan_study(*_study(tmp_path))
    claim = sp.manifest["claims"]["envelope"]
    assert claim["arm_order"] == ["reference@cfg", "reference@consistency", "short@cfg", "short@consistency",
                                  "full@cfg", "full@consistency"]
    by_id = {c.cell_id: c for c in sp.plan.cells}
    trained = {a: {by_id[i].train_id for i in claim["arms"][a]["cells"]} for a in claim["arm_order"]}
    assert trained["reference@cfg"] == trained["reference@consistency"]  # samplers share the LoRAs
    assert {by_id[i].method for i in claim["arms"]["reference@cfg"]["cells"]} == {"dco"}
    assert {by_id[i].train.steps for i in claim["arms"]["short@cfg"]["cells"]} == {1}
    assert not trained["short@cfg"] & trained["full@cfg"]
    assert len(claim["anchor_cells"]["cells"]) == 1


@pytest.mark.parametrize("bad, says", [({"arms": {"only": {}}}, "two or more arms"),
                                       ({"arms": {"reference": {}, "x": {}}}, "names a claim's own cells"),
                                       ({"methods": ["dreambooth"], "reference": "dreambooth"}, "two or more arms")])
def test_envelope_claim_refuses_what_it_cannot_compare(tmp_path, bad, says):
    with pytest.raises(DcoError, match=says):
        _study(tmp_path, {**CLAIM, **bad})


def _cells(dco_shift: float) -> pd.DataFrame:
    """DreamBooth at two lengths per unit; DCO's points `dco_shift` above the better length's."""
    rows = []
    rng = np.random.default_rng(0)
    for i in range(6):
        for seed in (0, 1):
            lift = rng.uniform(-0.02, 0.02)
            for k, x in enumerate((0.6, 0.7, 0.8)):
                short = 0.5 - 0.2 * k + lift
                full = 0.7 - 0.2 * k + lift  # the full length dominates the short one
                for arm, m, y in (("short@cfg", "dreambooth", short), ("full@cfg", "dreambooth", full),
                                  ("reference@cfg", "dco", full + dco_shift)):
                    rows.append({"cell_id": f"{i}-{seed}-{arm}-{k}", "subject": f"s{i}", "seed": seed, "method": m,
                                 "arm": arm, "knob_label": f"k{k}", "knob": "sample.cfg_scale", "knob_value": float(k),
                                 "kind": "subject", "protocol_id": "p",
                                 "clip_t": x + 1e-4 * k, "dino": y})
    df = pd.DataFrame(rows)
    df.attrs["metrics"] = ["dino", "clip_t"]
    return df


def _claim():
    return {"kind": "envelope", "title": "", "prompt_metric": "clip_t", "judges": ["dino"], "headline": [],
            "reference": "dco", "methods": ["dco", "dreambooth"],
            "arm_order": ["reference@cfg", "short@cfg", "full@cfg"]}


@pytest.mark.parametrize("shift, verdict", [(-0.05, "DCO behind"), (0.05, "DCO ahead")])
def test_envelope_is_the_best_length_and_the_points_table_says_where_dco_sits(shift, verdict):
    df = _cells(shift)
    sec = envelope_section("envelope", _claim(), df, {"dco": "DCO"})
    env = [r for r in sec.verdicts if r["effect"] == "envelope"]
    per = {r["against"]: r for r in sec.verdicts if r["effect"] == "per length"}
    assert len(env) == 1 and env[0]["verdict"] == verdict
    assert per["dreambooth:short"]["verdict"] == "DCO ahead"  # beating a short length is not beating the envelope
    part = df.assign(side=np.where(df["method"] == "dco", "reference", "envelope"))
    shares = {knob: share for knob, _, share in dominated(part, "clip_t", "dino")}
    assert shares == {"k0": float(shift < 0), "k1": float(shift < 0), "k2": float(shift < 0)}
