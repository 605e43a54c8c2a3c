"""The objective × sampler interaction (`stats.interaction`): the objective effect under consistency
guidance less the one under CFG, per unit, as one comparison with its own interval."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dcobench.study.ppi import LabelSet
from dcobench.study.stats import frontier_difference, interaction


def _cells(lead_cons: float, lead_cfg: float, subjects: int = 8, seed: int = 0) -> pd.DataFrame:
    """Method a's points sit `lead` above b's (oracle rate), per sampler, with subject noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(subjects):
        s = f"s{i}"
        base = rng.uniform(0.3, 0.5)
        for arm, lead in (("consistency", lead_cons), ("cfg", lead_cfg)):
            for m, up in (("a", lead), ("b", 0.0)):
                for k, x in enumerate((0.6, 0.7, 0.8)):
                    y = min(1.0, base + 0.3 - 0.2 * k + up + rng.normal(0, 0.01))
                    rows.append({"cell_id": f"{s}-{arm}-{m}-{k}", "subject": s, "seed": 0, "method": m, "arm": arm,
                                 "knob_label": f"k{k}", "clip_t": x, "oracle_subject": y})
    return pd.DataFrame(rows)


def _both(df):
    return [frontier_difference(df[df["arm"] == s], "a", "b", "clip_t", "oracle_subject")
            for s in ("consistency", "cfg")]


def test_an_effect_under_one_sampler_only_is_an_interaction():
    cons, cfg = _both(_cells(0.08, 0.0))
    res = interaction(cons, cfg, "a")
    assert res["estimate"] == pytest.approx(cons["estimate"] - cfg["estimate"])
    assert res["ci_low"] > 0 and res["verdict"] == "a ahead"


def test_the_same_effect_under_both_samplers_is_no_interaction():
    res = interaction(*_both(_cells(0.08, 0.08)), "a")
    assert res["ci_low"] <= 0 <= res["ci_high"] and res["verdict"].startswith("no difference")


def test_label_corrected_interaction_pairs_the_bootstrap_draws():
    df = _cells(0.08, 0.0)
    rng = np.random.default_rng(1)
    picked = df.sample(n=60, random_state=3)
    f = (rng.uniform(size=len(picked)) < picked["oracle_subject"].to_numpy()).astype(float)
    labels = pd.DataFrame({"cell_id": picked["cell_id"], "subject": picked["subject"], "f": f, "y": f, "w": 1.0})
    df.attrs["corrections"] = {"oracle_subject": LabelSet(labels)}
    cons, cfg = _both(df)
    assert cons["basis"].startswith("label-corrected") and len(cons["replicates"]) == len(cfg["replicates"])
    res = interaction(cons, cfg, "a")
    assert res["estimate"] == pytest.approx(cons["estimate"] - cfg["estimate"])
    assert np.isfinite(res["half_width"]) and res["basis"].startswith("label-corrected")
    assert res["labels"] == cons["labels"] + cfg["labels"] and "judge_only" in res
