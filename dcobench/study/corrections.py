"""What a study's own blind labels correct: one `ppi.LabelSet` per judge that reads the labelled rate.

Labels correct a study only when they are labels of *its* outputs: `dcobench label RUN` on the
study's run folder (or an import of labelled sheets into RUN/labels/). The same recipe, strata and
scoring protocol from another seed are the same population, so labels of one run may correct another
run of the same study file (copy RUN/labels/ and the sample files); labels of another recipe, another
judge version or another model may not (docs/studies.md).

A judge is corrected when its cell value is the share of images that show the subject (or style),
the question the labels answer: a binary `Judge` of kind subject or style (`oracle_subject`,
`oracle_style`). A similarity (DINO, CLIP-I) is not that rate, so labels cannot correct it; its rows
stay judge only, and the diagnostics table shows how it agrees with the labels once cut.
"""

from __future__ import annotations

import pandas as pd

from .ppi import LabelSet

CORRECTABLE_KINDS = ("subject", "style")
SIMILARITY = "judge only: a similarity, not the rate the labels answer, so they cannot correct it"


def correctable(judge: str) -> bool:
    from ..metrics import Judge, metric_meta
    from ..registry import METRICS

    try:
        return isinstance(METRICS.get(judge), Judge) and metric_meta(judge)["kind"] in CORRECTABLE_KINDS
    except Exception:  # not a registered metric
        return False


def weights(frame: pd.DataFrame) -> pd.Series:
    """1 / inclusion probability: recorded per item by a budgeted draw (`pi`), else 1 (a draw of
    equal probability within each stratum, as `--per-stratum` makes)."""
    if "pi" in frame:
        pi = pd.to_numeric(frame["pi"], errors="coerce")
        return (1.0 / pi).where(pi > 0, 1.0).fillna(1.0)
    return pd.Series(1.0, index=frame.index)


def study_labels(frame: pd.DataFrame) -> tuple[dict[str, LabelSet], dict[str, str], int]:
    """(judge -> its labels, judge -> why it stays judge only, labelled images), from the labelled
    frame of the study folder (`report.judges.labelled`)."""
    from ..report.judges import judges_of

    if frame.empty or "human_subject" not in frame:
        return {}, {}, 0
    out, notes = {}, {}
    w = weights(frame)
    for judge, meta in judges_of(frame).items():
        if meta.get("kind") not in CORRECTABLE_KINDS:
            continue
        if correctable(judge):
            lab = pd.DataFrame({"cell_id": frame["cell"], "subject": frame["subject"], "f": frame[judge],
                                "y": frame["human_subject"], "w": w})
            out[judge] = LabelSet(lab.dropna(subset=["f", "y"]).reset_index(drop=True))
        else:
            notes[judge] = SIMILARITY
    return out, notes, int(frame["human_subject"].notna().sum())
