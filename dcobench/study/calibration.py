"""The headline rule as a diagnostic: which judges meet it on labels of the methods' outputs.

A judge is known only on what it judges. The rule (`labels.agreement.RULE`) is reported beside every
verdict row (`calibrated`), never as a gate: a verdict does not need a judge without error, it
needs an estimate whose error is accounted for, which `ppi.py` gives where the study's own outputs
are labelled (`corrections.py`); elsewhere a row is judge only and says so. The labels the rule is
checked on come, in this order, from:

1. the study folder itself (`dcobench label RUN` on the study's run folder writes RUN/labels/), or
2. the suite's own labels, through the `calibration` entry of its registration (the micro world:
   `data/micro/labels/`, as measured by `dcobench micro validate` into validation.json), or
3. nowhere: then the report says how to label.
"""

from __future__ import annotations

import importlib
from pathlib import Path

NO_LABELS = "no blind labels of this study's outputs (label them: `dcobench label RUN_DIR`)"


def _provider(suite: str):
    from ..registry import SUITES

    if suite not in SUITES:
        return None
    provider = SUITES.meta(suite).get("calibration")
    if isinstance(provider, str):  # "module:function", imported only when a study report needs it
        module, _, attr = provider.partition(":")
        provider = getattr(importlib.import_module(module), attr)
    return provider


def calibration(run_dir: Path, suite: str, read=None) -> tuple[dict[str, tuple[bool, str]], str]:
    """({judge: (meets the rule, why)}, where the labels came from). `read`: what
    `report.judges.labelled([run_dir])` returned, when the caller has read it already."""
    from ..labels.agreement import agreement_table, rule
    from ..labels.collect import judge_cuts
    from ..report.judges import judges_of, labelled

    frame, _, proto = read if read is not None else labelled([Path(run_dir)])
    if not frame.empty:
        judges = judges_of(frame)
        table = agreement_table(frame, judges, judge_cuts(list(judges), proto, frame["subject"].unique()))
        return rule(table), f"{len(frame)} labelled images in {Path(run_dir) / 'labels'}"
    provider = _provider(suite)
    if provider is not None:
        return provider()
    return {}, NO_LABELS


def gate(rows: list[dict], calibrated: dict[str, tuple[bool, str]]) -> list[dict]:
    """The headline rule is a diagnostic, not a gate: each row keeps its interval's verdict and
    records whether its judge meets the rule on labels of the outputs (`calibrated`)."""
    for row in rows:
        row.setdefault("interval_verdict", row["verdict"])
        row["calibrated"] = calibrated.get(row["judge"], (False, ""))[0]
    return rows


def verdict_row(section: str, comparison: str, judge: str, statistic: str, result: dict, head: bool,
         calibrated: dict | None = None, **extra) -> dict:
    """One verdict row: the interval's verdict, its basis (label-corrected or judge only), whether its
    judge meets the headline rule, and for a corrected row the judge-only reading beside it."""
    from ..metrics import metric_meta
    from .stats import JUDGE_ONLY  # Δdrop and paired scores are not label-corrected (only ΔHV is)

    row = {"claim": section, "comparison": comparison, "judge": judge, "judge_label": metric_meta(judge)["label"],
           "statistic": statistic, **{k: result[k] for k in ("estimate", "ci_low", "ci_high", "n", "verdict")},
           **{k: result[k] for k in ("units", "seeds", "half_width", "bound") if k in result},
           "headline": head, "basis": result.get("basis") or JUDGE_ONLY, "labels": result.get("labels", 0), **extra}
    if "anchor" in result:
        row["anchor"] = result["anchor"]
    old = result.get("unanchored")
    if old is not None:  # the same comparison with the reference at the worst values (before the base-model anchor)
        row.update(unanchored_estimate=old["estimate"], unanchored_ci_low=old["ci_low"],
                   unanchored_ci_high=old["ci_high"], unanchored_verdict=old["verdict"])
    only = result.get("judge_only")
    if only is not None:  # a label-corrected row: the judge's own reading beside it, flagged where they part
        row.update(judge_only_estimate=only["estimate"], judge_only_ci_low=only["ci_low"],
                   judge_only_ci_high=only["ci_high"], judge_only_verdict=only["verdict"],
                   labels_changed=only["verdict"] != result["verdict"])
    return gate([row], calibrated or {})[0]
