"""Objective x sampler: the verdict rows of a frontier claim swept under both samplers (`samplers:`).

DCO's consistency guidance works on any adapter, so a frontier difference between DCO on consistency
guidance and DreamBooth on CFG mixes two causes. With `samplers:` every method is sampled under both,
on the same LoRAs, and each kind of row varies one factor: the objective (the methods under one
sampler), the sampler (one method's LoRAs under both), or, labelled confounded, both at once (each
method on its own default sampler, as papers compare them).
"""

from __future__ import annotations

import pandas as pd

from .calibration import verdict_row
from .stats import frontier_difference, interaction

SAMPLER_LABEL = {"cfg": "CFG", "consistency": "consistency guidance"}


def sampler_verdicts(name: str, claim: dict, df: pd.DataFrame, lab, heads: list[str], calibrated,
                     samplers: list[str] | None = None, recipe: str = "", baseline_sampler_rows: bool = True) -> list[dict]:
    """A claim swept under both samplers (`samplers:`): four kinds of rows, one factor varied in each.
    - objective effect: the reference against each other method under the same sampler (one row
      per sampler); the claim's one-line verdict is made of these;
    - interaction: the objective effect under consistency guidance less the one under CFG, per unit
      (`stats.interaction`): whether the objective helps only under one sampler is one comparison with
      its own interval, not two rows read side by side; it leads the claim when its interval excludes 0;
    - sampler effect: consistency guidance against CFG on the same LoRAs, one row per method;
    - as published: each method on its own default sampler, labelled confounded.
    `df["arm"]` is each cell's sampler. With `recipe` (a recipes claim: this is one of the reference's
    training recipes) the reference is labelled "DCO (recipe)" and every row records the recipe;
    `baseline_sampler_rows=False` leaves out the other methods' sampler rows (the first recipe has them)."""
    from ..registry import METHODS

    x, judges, ref = claim["prompt_metric"], claim["judges"], claim["reference"]
    others = [m for m in claim["methods"] if m != ref]
    me = f"{lab(ref)} ({lab(recipe)})" if recipe else lab(ref)
    extra = {"recipe": recipe} if recipe else {}
    rows, objective = [], {}
    for s in samplers or claim["arm_order"]:
        for b in others:
            for y in judges:
                res = objective[(s, b, y)] = frontier_difference(df[df["arm"] == s], ref, b, x, y, label=me)
                rows.append(verdict_row(name, f"{me} vs {lab(b)}, both under {SAMPLER_LABEL[s]}", y, "ΔHV", res,
                                 y in heads, tested=ref, against=b, effect="objective", sampler=s,
                                 calibrated=calibrated, **extra))
    crossed = []  # objective × sampler: does the objective effect depend on the sampler? one comparison
    for b in others:
        for y in judges:
            if ("consistency", b, y) in objective and ("cfg", b, y) in objective:
                res = _worded(interaction(objective[("consistency", b, y)], objective[("cfg", b, y)], me))
                crossed.append(verdict_row(name, f"{me} vs {lab(b)}: the objective effect under consistency guidance "
                                           "less under CFG", y, "ΔΔHV", res, y in heads, tested=ref, against=b,
                                           effect="interaction", calibrated=calibrated, **extra))
    resolved = any(r["headline"] and not r["verdict"].startswith("no difference") for r in crossed)
    rows = crossed + rows if resolved else rows + crossed  # a resolved interaction leads the claim
    for m in claim["methods"]:
        if m != ref and not baseline_sampler_rows:
            continue
        for y in judges:
            res = frontier_difference(df[df["method"] == m], "consistency", "cfg", x, y, group="arm",
                                      label="consistency guidance")
            rows.append(verdict_row(name, f"{me if m == ref else lab(m)}: consistency guidance vs CFG, same LoRAs", y,
                             "ΔHV", res, False, tested=f"{m}:consistency", against=f"{m}:cfg", effect="sampler",
                             calibrated=calibrated, **(extra if m == ref else {})))
    own = {m: METHODS.get(m).default_guidance for m in claim["methods"]}
    mask = [arm == own.get(m) for m, arm in zip(df["method"], df["arm"])]
    published = df[pd.Series(mask, index=df.index, dtype=bool)]  # an empty list would drop the columns
    for b in others:
        for y in judges:
            res = frontier_difference(published, ref, b, x, y, label=me)
            mine = f"{lab(ref)} ({lab(recipe) + ', ' if recipe else ''}{SAMPLER_LABEL[own[ref]]})"
            rows.append(verdict_row(name, f"{mine} vs {lab(b)} ({SAMPLER_LABEL[own[b]]}): "
                             "as published, CONFOUNDED with the sampler", y, "ΔHV", res, False, tested=ref,
                             against=b, effect="as published (confounded)", calibrated=calibrated, **extra))
    return rows


def _worded(res: dict) -> dict:
    """An interaction's verdict in words: where the objective effect is the larger (the reference's
    lead, or the smaller deficit), or no difference; the judge-only reading likewise."""
    for r in [res] + ([res["judge_only"]] if "judge_only" in res else []):
        if r["verdict"].endswith(" ahead"):
            r["verdict"] = INTERACTION["consistency"]
        elif r["verdict"].endswith(" behind"):
            r["verdict"] = INTERACTION["cfg"]
    return res


INTERACTION = {s: f"the objective effect is larger under {SAMPLER_LABEL[s]}" for s in ("consistency", "cfg")}
