"""The judges against people: the agreement table and the people panel of a report, from RUN/labels/.

When a run folder holds labels (`dcobench label`), the report folds them in like everything else:
for every subject judge (oracle_subject, dino, clip_i, ...) and every prompt judge (oracle_background,
oracle_layout, clip_t) it measures agreement with the people's answers per point of the frontier
(method x knob), with the headline rule applied (`labels.agreement.RULE`), and the Pareto figure gains
a "people" panel: the human subject rate against the human prompt rate, per point. Without labels
nothing here runs and the report is as before.

    judges.csv   one row per judge and point (and "all"): n, abstentions, accuracy, kappa, human rate
                 and judge rate with 95% Wilson intervals, the cut and where it comes from, meets
    judges.md    the same as a table, each judge's rule verdict, inter-labeller agreement
    people.csv   per point: labelled images, human subject rate and prompt rate with intervals
"""

from __future__ import annotations

import io
from collections import Counter
from pathlib import Path

import pandas as pd

from ..labels.agreement import RULE, agreement_table, inter_rater, rule, wilson
from ..labels.collect import judge_cuts, run_frame
from ..metrics.definitions import metric_meta
from ..store import atomic_write_bytes

JUDGE_KINDS = ("subject", "style", "prompt")
MISSES = "misses the rule"


def labelled(run_dirs: list[Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(frame of labelled images, every label row, protocol of the labelled cells) over `run_dirs`."""
    from ..labels.store import read_labels

    frames, labels, seen, counts = [], [], {}, Counter()
    for run_dir in run_dirs:
        frame, protos = run_frame(run_dir)
        if not frame.empty:
            frames.append(frame)
            labels.append(read_labels(run_dir))
            for cell in frame["cell"]:
                proto = protos.get(cell) or {}
                seen[proto.get("id")] = proto
                counts[proto.get("id")] += 1
    if not frames:
        return pd.DataFrame(), pd.DataFrame(), {}
    # the protocol of most labelled images decides the cuts
    return pd.concat(frames, ignore_index=True), pd.concat(labels, ignore_index=True), seen[counts.most_common(1)[0][0]]


def judges_of(frame: pd.DataFrame) -> dict[str, dict]:
    """The judges scored on the labelled images, with their registered kind and direction."""
    out = {}
    for col in frame.columns:
        if col.startswith("human_") or frame[col].dtype == object:
            continue
        try:
            meta = metric_meta(col)
        except Exception:  # not a metric column (ids, seeds)
            continue
        if meta.get("kind") in JUDGE_KINDS:
            out[col] = meta
    return out


def people_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per point: labelled images and the human subject / prompt rates with 95% Wilson intervals."""
    rows = []
    for point, g in frame.groupby("point", sort=True):
        row = {"point": point, "method": g["method"].iloc[0], "n": len(g)}
        for q in ("subject", "prompt"):
            h = g[f"human_{q}"].dropna()
            rate = float(h.mean()) if len(h) else float("nan")
            lo, hi = wilson(float(h.sum()), len(h))
            # the panel draws rate - lo and hi - rate as error bars, which must not be negative
            row[f"{q}_n"], row[f"{q}_rate"] = len(h), rate
            row[f"{q}_lo"], row[f"{q}_hi"] = (min(lo, rate), max(hi, rate)) if len(h) else (lo, hi)
        rows.append(row)
    return pd.DataFrame(rows)


def _csv(df: pd.DataFrame) -> bytes:
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format="%.4f", lineterminator="\n")
    return buf.getvalue().encode()


def _fmt(x, digits: int = 2) -> str:
    return "–" if pd.isna(x) else f"{x:.{digits}f}"


def judges_markdown(table: pd.DataFrame, verdicts: dict, raters: pd.DataFrame) -> str:
    lines = ["# Judges against people", "",
             f"The headline rule, a diagnostic: {RULE}. It gates nothing: a study's verdicts are label-corrected "
             "where its outputs are labelled (docs/studies.md). Rates are over images with a yes or no answer "
             "that the judge did not abstain on, with 95% Wilson intervals; unsure answers are left out.", ""]
    for judge, (ok, why) in verdicts.items():
        lines.append(f"- **{judge}**: {'meets the rule' if ok else MISSES} ({why})")
    lines += ["", "| judge | point | n | abstained | accuracy | kappa | human rate | judge rate | cut | meets |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        meets = "–" if r.meets is None or pd.isna(r.meets) else ("yes" if r.meets else "**no**")
        lines.append(f"| {r.judge} | {r.stratum} | {r.n} | {r.abstained} | {_fmt(r.accuracy)} | {_fmt(r.kappa)} | "
                     f"{_fmt(r.human_rate)} [{_fmt(r.human_lo)}, {_fmt(r.human_hi)}] | "
                     f"{_fmt(r.judge_rate)} [{_fmt(r.judge_lo)}, {_fmt(r.judge_hi)}] | {r.cut} ({r.cut_source}) | {meets} |")
    if not raters.empty:
        lines += ["", "Agreement between labellers (items both answered yes or no):", "",
                  "| question | labellers | n | agreement | kappa |", "|---|---|---|---|---|"]
        lines += [f"| {r.question} | {r.a}, {r.b} | {r.n} | {_fmt(r.agreement)} | {_fmt(r.kappa)} |"
                  for r in raters.itertuples()]
    return "\n".join(lines) + "\n"


def write_judges(run_dirs: list[Path], out: Path) -> dict:
    """judges.csv, judges.md and people.csv under `out` when the runs hold labels; {} otherwise.
    Returns the paths plus the tables under "table", "verdicts" and "people"."""
    frame, labels, proto = labelled(run_dirs)
    if frame.empty:
        return {}
    judges = judges_of(frame)
    table = agreement_table(frame, judges, judge_cuts(list(judges), proto, frame["subject"].unique()))
    verdicts = rule(table) if not table.empty else {}
    people = people_table(frame)
    raters = inter_rater(labels)
    paths = {"judges_csv": out / "judges.csv", "judges_md": out / "judges.md", "people_csv": out / "people.csv"}
    atomic_write_bytes(paths["judges_csv"], _csv(table))
    atomic_write_bytes(paths["judges_md"], judges_markdown(table, verdicts, raters).encode())
    atomic_write_bytes(paths["people_csv"], _csv(people))
    return {**paths, "table": table, "verdicts": verdicts, "people": people}
