"""The verdict rule: paired differences over replication units, a 95% t-interval, three outcomes.

**Unit.** A unit is what a method is replicated over: one subject (or style) and one training
seed for a frontier; one subject, style and training seed for a merge pair. Every method (or arm)
compared is run on the same units, so the comparison is paired.

**Frontier statistic (claims 1, 2 and 4).** Within a unit, a method's points are its cells, one
per knob value (DCO's w_con, DreamBooth's CFG scale), each at (prompt fidelity x, subject or
style fidelity y). Its score is the *hypervolume* of those points: the area of the union of the
rectangles [r_x, x_i] x [r_y, y_i], i.e. the area of the (x, y) plane its Pareto frontier dominates
above a reference point r. Both axes are in each metric's better direction; over every cell of
the two compared methods (all units), r is the worst value of each axis less 10% of that axis's
range (so that a point at the worst prompt fidelity but the best subject fidelity still counts),
and the area is divided by the box from r to the best values, so it is in [0, 1]: 1 would be one
point at the best x and the best y at once. A method that is better at every matched prompt fidelity has the larger area;
one that only trades one axis for the other gains on one side and loses on the other. The
statistic is the per-unit difference ΔHV = HV(A) - HV(B).

**Merge statistic (claim 3).** Per pair, a merge's drop on a metric is the unmerged LoRA's score
minus the merge's (`report.merges.pair_drops`; positive = interference). The statistic is the
per-pair difference of drops, baseline merge minus reference merge, so positive means the
reference (DCO's direct merge) interferes less. ZipLoRA against the direct merge is the per-pair
score difference, ZipLoRA minus direct, in the metric's better direction.

**Clusters.** Units are nested in subjects: the training seeds of one subject give nearly the same
LoRA, so treating subject x seed units as independent would be pseudo-replication. The per-unit
differences are first averaged within each subject (the first element of a unit: the subject, or
the style of a style claim), and the interval is over the n subjects. Each row also carries the
number of units and seeds, the interval's half-width (its precision) and `bound` = max(|low|,
|high|): an interval that contains 0 rules out every effect larger than that, so such a row reads
"no difference larger than ±bound with n subjects". (A true effect as large as the half-width
would be detected only about half the time: the half-width is not a power statement.)

**Interval and verdict.** The per-subject differences give a mean and a 95% Student-t interval
over the n subjects. If the interval lies above 0 the
verdict is "<A> ahead", below 0 "<A> behind", and if it contains 0, or n < 2 gives no interval,
"no difference at this n". Nothing else enters: the verdict is computed, never written by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .intervals import MARGIN, NO_DIFFERENCE, hypervolume, oriented, summarize, verdict  # noqa: F401 (re-exported)
from .ppi import corrected_difference

JUDGE_ONLY = "judge only: not checked on these outputs"


def frontier_difference(df: pd.DataFrame, a: str, b: str, x: str, y: str, group: str = "method",
                        units=("subject", "seed"), label: str = "") -> dict:
    """ΔHV = HV(A) - HV(B) per unit, for the rows of `df` whose `group` is `a` or `b`, with the
    shared reference point and box of the module docstring; summarised with the verdict, which
    names A as `label` (default `a`). Where `df.attrs["corrections"]` holds blind labels of these
    outputs for judge `y` (`ppi.LabelSet`), the points are label-corrected first and the interval
    carries the labels' noise (`ppi.corrected_difference`); the judge-only result is kept under
    `judge_only`. Every result names its `basis`."""
    judge_only = _judge_difference(df, a, b, x, y, group, units, label or a)
    labels = (df.attrs.get("corrections") or {}).get(y)
    if labels is None or not len(labels):
        why = (df.attrs.get("basis_notes") or {}).get(y, JUDGE_ONLY)
        return {**judge_only, "basis": why, "labels": 0}
    arm = df["arm"].astype(str) if "arm" in df else ""
    strata = df.assign(stratum=arm + "|" + df["method"].astype(str) + "|" + df["knob_label"].astype(str))
    res = corrected_difference(strata, a, b, x, y, labels, group, units, label or a)
    return {**res, "judge_only": judge_only}


def _judge_difference(df: pd.DataFrame, a: str, b: str, x: str, y: str, group: str, units, label: str) -> dict:
    part = df[df[group].isin([a, b])].assign(_x=lambda d: oriented(d, x), _y=lambda d: oriented(d, y))
    part = part[np.isfinite(part["_x"]) & np.isfinite(part["_y"])]
    if part.empty:
        return {**summarize({}, label), "diffs": {}}
    lo, hi = part[["_x", "_y"]].min(), part[["_x", "_y"]].max()
    ref = tuple(lo - MARGIN * (hi - lo))
    box = tuple(hi)
    diffs = {}
    for unit, rows in part.groupby(list(units), sort=True):
        hv = {g: hypervolume(zip(r["_x"], r["_y"]), ref, box) for g, r in rows.groupby(group)}
        if a in hv and b in hv:
            diffs[unit] = hv[a] - hv[b]
    return {**summarize(diffs, label), "diffs": diffs}


def paired_difference(df: pd.DataFrame, a: dict, b: dict, column: str, label: str,
                      units=("subject", "style", "seed"), sign: float = 1.0) -> dict:
    """sign * (value of B - value of A) per unit, where `a` and `b` select rows by column values
    (e.g. {"method": "dco", "merge": "direct"}); summarised with the verdict for `label`."""
    def values(sel: dict) -> dict:
        rows = df
        for k, v in sel.items():
            rows = rows[rows[k] == v]
        return {u: float(r[column].mean()) for u, r in rows.groupby(list(units), sort=True)}

    va, vb = values(a), values(b)
    diffs = {u: sign * (vb[u] - va[u]) for u in va if u in vb and math.isfinite(va[u]) and math.isfinite(vb[u])}
    return {**summarize(diffs, label), "diffs": diffs}
