"""Is DCO more than an early stop? The reference against the upper envelope of another method's
frontiers over its training lengths (an `envelope` claim).

DCO's per-sample weight σ(β·gap) fades as the LoRA fits, so it acts partly like an adaptive early
stop. A reviewer asks whether DCO beats DreamBooth at DreamBooth's *best* amount of training, not
at one fixed step count. The claim trains the other method at several lengths (its `arms`, e.g. ¼,
½, 1 and 2× the steps) and the reference once, all under each sampler, and reports per sampler:

- **envelope**: ΔHV of the reference against the union of the other method's points over every
  length, per unit: the envelope is the best frontier any of its lengths reaches (picking the best
  length per prompt-fidelity level, after the fact, which favours the baseline);
- **per length**: the reference against each length alone (not headline rows);
- **where the reference's points sit**: per knob value, the share of units in which some point of
  the envelope dominates the reference's point (at least as good on both axes, better on one).

The statistic, the anchor and the label correction are those of every frontier (`stats.py`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..metrics import metric_meta
from ..report.pareto import pareto_figure
from .calibration import verdict_row
from .intervals import oriented
from .samplers import SAMPLER_LABEL
from .spec import REFERENCE_ARM
from .stats import frontier_difference


def split(arm: str) -> tuple[str, str]:
    """"half@cfg" -> ("half", "cfg"); "half" -> ("half", "")."""
    name, _, sampler = arm.partition("@")
    return name, sampler


def envelope_section(name: str, claim: dict, df: pd.DataFrame, labels: dict, calibrated: dict | None = None):
    from .claims import Section, labeller, point_tables, relabelled
    from .verdicts import fmt, headline, verdict_table

    lab = labeller(labels)
    sec = Section(name, claim["kind"], claim["title"] or name)
    x, judges, ref = claim["prompt_metric"], claim["judges"], claim["reference"]
    heads = claim["headline"] or judges[:1]
    parts = [split(a) for a in df["arm"]]
    df = relabelled(df, length=[p[0] for p in parts], sampler=[p[1] for p in parts])
    shown = [f"{lab(m)} ({', '.join(filter(None, [lab(a) if a != REFERENCE_ARM else '', SAMPLER_LABEL.get(s, s)]))})"
             for m, a, s in zip(df["method"], df["length"], df["sampler"])]
    summary, sec.frames, sec.tables = point_tables(relabelled(df, method=shown), judges + [x],
                                                   "Points per method, length and sampler", "method (length, sampler)")
    summary.attrs["pareto_metrics"] = judges
    sec.figure = pareto_figure(summary, title=f"{sec.title}: fidelity vs {metric_meta(x)['label']}")
    lengths = list(dict.fromkeys(split(a)[0] for a in claim["arm_order"] if split(a)[0] != REFERENCE_ARM))
    samplers = list(dict.fromkeys(split(a)[1] for a in claim["arm_order"]))
    sits = []
    for s in samplers:
        under = f", both under {SAMPLER_LABEL[s]}" if s else ""
        for b in [m for m in claim["methods"] if m != ref]:
            part = df[(df["sampler"] == s) & df["method"].isin([ref, b])]
            part = relabelled(part, side=np.where(part["method"] == ref, "reference", "envelope"))
            for y in judges:
                res = frontier_difference(part, "reference", "envelope", x, y, group="side", label=lab(ref))
                sec.verdicts.append(verdict_row(name, f"{lab(ref)} vs {lab(b)}'s best length (envelope of "
                                                f"{', '.join(map(lab, lengths))}){under}", y, "ΔHV", res, y in heads,
                                                tested=ref, against=f"{b}:envelope", effect="envelope", sampler=s,
                                                calibrated=calibrated))
                for a in lengths:
                    one = part[(part["side"] == "reference") | (part["length"] == a)]
                    res = frontier_difference(one, "reference", "envelope", x, y, group="side", label=lab(ref))
                    sec.verdicts.append(verdict_row(name, f"{lab(ref)} vs {lab(b)} ({lab(a)}){under}", y, "ΔHV", res,
                                                    False, tested=ref, against=f"{b}:{a}", effect="per length",
                                                    sampler=s, calibrated=calibrated))
            for y in heads:
                sits += [[SAMPLER_LABEL.get(s, s) or "–", lab(b), metric_meta(y)["label"], knob, str(n), fmt(share)]
                         for knob, n, share in dominated(part, x, y)]
    sec.tables.append(verdict_table(sec.verdicts))
    if sits:
        sec.tables.append((f"Where {lab(ref)}'s points sit: the share of units in which a point of the envelope "
                           "dominates it (as good on both axes, better on one)",
                           ["sampler", "against", "judge", f"{lab(ref)} point", "units", "dominated"], sits))
    sec.line = headline([r for r in sec.verdicts if r.get("effect") == "envelope"], heads)
    return sec


def dominated(part: pd.DataFrame, x: str, y: str) -> list[tuple[str, int, float]]:
    """Per knob of the reference: (knob, units, share of units where an envelope point dominates it)."""
    d = part.assign(_x=oriented(part, x), _y=oriented(part, y))
    d = d[np.isfinite(d["_x"]) & np.isfinite(d["_y"])]
    out = []
    for knob, mine in d[d["side"] == "reference"].groupby("knob_label", sort=True):
        hits = []
        for _, p in mine.iterrows():
            env = d[(d["side"] == "envelope") & (d["subject"] == p["subject"]) & (d["seed"] == p["seed"])]
            if env.empty:
                continue
            ge = (env["_x"] >= p["_x"]) & (env["_y"] >= p["_y"])
            gt = (env["_x"] > p["_x"]) | (env["_y"] > p["_y"])
            hits.append(bool((ge & gt).any()))
        if hits:
            out.append((str(knob), len(hits), float(np.mean(hits))))
    return out
