"""One report section per claim kind: its table(s), figure, verdict rows and one-line verdict.

Each builder takes the claim's entry of study.json and the loaded cells (`report.collect`), and
returns a `Section`. The numbers come from `stats.py` (the verdict rule) and from the report's own
folds (`report.tables.summarise`, `report.merges.pair_drops` / `interference_table`), so a study
table and a run report of the same cells agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..metrics import metric_meta
from ..report.merges import ALONE_LABEL, display, interference_table, pair_drops
from ..report.pareto import pareto_figure
from ..report.tables import display_rows, summarise
from ..store import read_json
from .calibration import verdict_row
from .recipes import DEFAULT_RULE, arm_names, recipe_curves, recipe_verdicts, sampler_order, shown_methods, split_arm
from .samplers import SAMPLER_LABEL, sampler_verdicts
from .stats import frontier_difference, paired_difference
from .verdicts import fmt, headline, interval, rules_out, sample_size, verdict_table  # noqa: F401 (re-exported)


@dataclass
class Section:
    name: str
    kind: str
    title: str
    line: str = ""  # the one-line verdict
    verdicts: list[dict] = field(default_factory=list)
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (caption, header, rows)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # CSV name -> table
    figure: object = None
    notes: list[str] = field(default_factory=list)
    extra_figures: dict[str, object] = field(default_factory=dict)  # "<claim>-<name>" -> figure (e.g. curves)


def labeller(labels: dict):
    """name -> display name from the study's `labels`; "ziplora (public)" -> "ZipLoRA (public)"."""
    def lab(name: str) -> str:
        if name in labels:
            return labels[name]
        m = re.fullmatch(r"(.+) \((.+)\)", name)
        return f"{lab(m[1])} ({lab(m[2])})" if m else name
    return lab


def relabelled(df: pd.DataFrame, **columns) -> pd.DataFrame:
    """A copy of `df` for tables and figures, with some columns replaced (display names)."""
    out = df.assign(**columns)
    out.attrs = df.attrs
    return out


def _diversity(df: pd.DataFrame) -> list[str]:
    """The diversity metrics the cells were scored with (DIV: `div_dino`), shown in the points tables."""
    return [m for m in df.attrs.get("metrics", []) if metric_meta(m)["kind"] == "diversity"]


def point_tables(df: pd.DataFrame, columns: list[str], caption: str, label: str):
    summary = summarise(df)
    frames, tables = {}, []
    for pid in sorted(summary["protocol_id"].unique()):
        header, rows = display_rows(summary, pid, columns)
        header[0] = label
        tables.append((caption, header, rows))
    keep = ["method", "knob", "knob_label", "knob_value", "n"] + [f"{m}_{s}" for m in summary.attrs["metrics"]
                                                                    for s in ("mean", "ci", "n")]
    frames["points"] = summary[keep]
    return summary, frames, tables


def _target_rows(claim: dict, values: dict, lab, parts: dict | None = None) -> list[dict]:
    """One row per target: `values[(name, metric)]` is the measured figure (NaN when missing);
    `parts[(name, metric)]`, where given, the same figure per subject ("striped 0.83, dotted 0.38")."""
    rows = []
    for name, wanted in claim.get("targets", {}).items():
        for metric, minimum in wanted.items():
            got = values.get((name, metric), math.nan)
            rows.append({"name": name, "metric": metric, "minimum": minimum, "value": got,
                         "met": bool(math.isfinite(got) and got >= minimum),
                         "by_subject": (parts or {}).get((name, metric), "")})
    return rows


def _add_targets(sec: Section, rows: list[dict], lab, what: str) -> None:
    if not rows:
        return
    sec.frames["targets"] = pd.DataFrame(rows)
    sec.tables.append((f"Targets ({what})", ["target", "measured", "per subject", "met"],
                       [[f"{lab(r['name'])}: {r['metric']} ≥ {r['minimum']:g}", fmt(r["value"]),
                         r["by_subject"] or "—", "yes" if r["met"] else "NOT met"] for r in rows]))


def frontier_section(name: str, claim: dict, df: pd.DataFrame, labels: dict, calibrated: dict | None = None) -> Section:
    lab = labeller(labels)
    sec = Section(name, claim["kind"], claim["title"] or name)
    x, judges, ref = claim["prompt_metric"], claim["judges"], claim["reference"]
    samplers, recipes = claim.get("samplers") or {}, claim.get("recipes") or {}
    shown = df["method"].map(lab) if not samplers else shown_methods(df, lab) if recipes else \
        [f"{lab(m)} ({SAMPLER_LABEL[a]})" for m, a in zip(df["method"], df["arm"])]
    summary, sec.frames, sec.tables = point_tables(relabelled(df, method=shown), judges + [x] + _diversity(df),
                                                   "Points: mean ± 95% CI over units", "method")
    summary.attrs["pareto_metrics"] = judges
    sec.figure = pareto_figure(summary, title=f"{sec.title}: fidelity vs {metric_meta(x)['label']}")
    heads = claim["headline"] or judges[:1]
    if recipes:
        sec.verdicts = recipe_verdicts(name, claim, df, lab, heads, calibrated)
        figure, sec.frames["recipes"], body = recipe_curves(claim, df, lab)
        if figure is not None and body:  # the rule reads β·gap: only for a reference that logs it
            sec.extra_figures[f"{name}-curves"] = figure
            sec.tables.append((f"The reference's training curves per recipe: mean |β·gap| over training, β·gap and "
                               f"implicit accuracy over its last quarter. Default-β rule: {DEFAULT_RULE}",
                               ["recipe", "LoRAs", "mean |β·gap|", "β·gap, last quarter",
                                "implicit accuracy, last quarter", "the rule picks"], body))
    elif samplers:
        sec.verdicts = sampler_verdicts(name, claim, df, lab, heads, calibrated)
    for b in [m for m in claim["methods"] if m != ref] if not samplers else []:
        for y in judges:
            res = frontier_difference(df, ref, b, x, y, label=lab(ref))
            sec.verdicts.append(verdict_row(name, f"{lab(ref)} vs {lab(b)}", y, "ΔHV", res, y in heads,
                                     tested=ref, against=b, calibrated=calibrated))
    if sec.verdicts:
        sec.tables.append(verdict_table(sec.verdicts))
    sec.line = headline(sec.verdicts, heads)
    best, parts = {}, {}
    for m, part in df.groupby("method"):  # a method's best point: the best mean over its knob values
        for metric in judges + [x]:
            sign = 1 if metric_meta(metric)["higher_is_better"] else -1
            means = part.groupby("knob_label")[metric].mean() * sign
            if not means.notna().any():
                best[(m, metric)] = math.nan
                continue
            knob = means.idxmax()
            best[(m, metric)] = float(means[knob]) * sign
            at = part[part["knob_label"] == knob].groupby("subject", sort=False)[metric].mean()
            parts[(m, metric)] = f"{knob}: " + ", ".join(f"{s} {fmt(v)}" for s, v in at.items())
    targets = _target_rows(claim, best, lab, parts)
    _add_targets(sec, targets, lab, "a method's best point, mean over units")
    if not sec.verdicts and targets:  # one method alone (a recipe search): the targets are the line
        sec.line = "; ".join(f"{lab(r['name'])} {r['metric']} at its best point {fmt(r['value'])} "
                             f"({r['by_subject']}): **{'met' if r['met'] else 'NOT met'}** (≥ {r['minimum']:g})"
                             for r in targets)
    return sec


def captions_section(name: str, claim: dict, df: pd.DataFrame, labels: dict, calibrated: dict | None = None) -> Section:
    """A captions or arms claim: per method and judge, the first arm's frontier against the second's
    (under each sampler, for a claim with `samplers:`: its arms are then "<arm>@<sampler>")."""
    lab = labeller(labels)
    sec = Section(name, claim["kind"], claim["title"] or name)
    x, judges = claim["prompt_metric"], claim["judges"]
    a, b = arm_names(claim)
    parts = [split_arm(arm) for arm in df["arm"]] if claim.get("samplers") else [(arm, "") for arm in df["arm"]]
    df = relabelled(df, arm=[p[0] or p[1] for p in parts], sampler=[p[1] if p[0] else "" for p in parts])
    shown = relabelled(df, method=[f"{lab(m)} ({lab(arm)}{', ' + SAMPLER_LABEL[s] if s else ''})"
                               for m, arm, s in zip(df["method"], df["arm"], df["sampler"])])
    what = "caption arm" if claim["kind"] == "captions" else "arm"
    summary, sec.frames, sec.tables = point_tables(shown, judges + [x] + _diversity(df),
                                                   f"Points per method and {what}",
                                                   f"method ({'captions' if claim['kind'] == 'captions' else 'arm'})")
    summary.attrs["pareto_metrics"] = judges
    sec.figure = pareto_figure(summary, title=f"{sec.title}: two frontiers per method")
    heads = claim["headline"] or judges[:1]
    for s in sampler_order(claim) if claim.get("samplers") else [""]:  # every sampler, finished or not
        under = f", under {SAMPLER_LABEL[s]}" if s else ""
        for m in claim["methods"]:
            for y in judges:
                res = frontier_difference(df[(df["method"] == m) & (df["sampler"] == s)], a, b, x, y, group="arm",
                                          label=lab(a), units=tuple(claim.get("units") or ("subject", "seed")))
                sec.verdicts.append(verdict_row(name, f"{lab(m)}: {lab(a)} vs {lab(b)}{under}", y, "ΔHV", res,
                                                y in heads, tested=f"{m}:{a}", against=f"{m}:{b}",
                                                calibrated=calibrated, **({"sampler": s} if s else {})))
    sec.tables.append(verdict_table(sec.verdicts))
    sec.line = headline(sec.verdicts, heads)
    return sec


def _merger_cos(run_dir: Path, df: pd.DataFrame) -> pd.DataFrame:
    """Per (method, merge row): ZipLoRA's mean |cos(m1, m2)| before and after, from merge.json."""
    rows = []
    for _, r in df[~df["merge"].isin(list(ALONE_LABEL))].iterrows():
        result = read_json(r["result_path"])
        info = Path(r["cell_dir"]) / Path(result.get("lora", "")).parent / "merge.json"
        cos = read_json(info).get("merger_cos") if info.is_file() else None
        if cos:
            rows.append({"method": r["method"], "merge": r["merge"], "before": cos["before"], "after": cos["after"]})
    if not rows:
        return pd.DataFrame(columns=["method", "merge", "n", "before", "after", "fall"])
    out = pd.DataFrame(rows).groupby(["method", "merge"], sort=True).agg(
        n=("after", "size"), before=("before", "mean"), after=("after", "mean")).reset_index()
    return out.assign(fall=1 - out["after"] / out["before"])


def merge_section(name: str, claim: dict, df: pd.DataFrame, labels: dict, run_dir: Path,
                  calibrated: dict | None = None) -> Section:
    from .figures import drop_figure

    lab = labeller(labels)
    sec = Section(name, claim["kind"], claim["title"] or name)
    metrics = [m for m in claim["judges"] + [claim["prompt_metric"]] if m in df.attrs["metrics"]]
    merged = ~df["merge"].isin(list(ALONE_LABEL))
    table = interference_table(relabelled(df, method=df["method"].map(lab),
                                      merge=[lab(g) if is_m else g for g, is_m in zip(df["merge"], merged)]))
    drops = pair_drops(df)
    for pid in sorted(table["protocol_id"].unique()):
        for caption, is_drop in (("Scores (mean ± 95% CI over pairs)", False),
                                 ("Drop against the unmerged LoRAs (positive = interference)", True)):
            sec.tables.append((caption, *display(table, pid, is_drop, metrics)))
    sec.frames["merge"] = table.drop(columns=["protocol_id"])
    ref, ref_merge, heads = claim["reference"], claim["reference_merge"], claim["headline"] or claim["judges"][:1]
    if drops.empty:
        sec.line = headline([], heads)
        return sec
    rows_of = drops[~drops["merge"].isin(list(ALONE_LABEL))]
    for j in metrics:
        for b, merge in sorted({(b, g) for b, g in zip(rows_of["method"], rows_of["merge"]) if b != ref}):
            res = paired_difference(drops, {"method": ref, "merge": ref_merge}, {"method": b, "merge": merge},
                                    f"drop_{j}", lab(ref))
            sec.verdicts.append(verdict_row(name, f"{lab(ref)} {lab(ref_merge)} vs {lab(b)} {lab(merge)}", j, "Δdrop", res,
                                     j in heads, tested=f"{ref}:{ref_merge}", against=f"{b}:{merge}", calibrated=calibrated))
    sec.tables.append(verdict_table(sec.verdicts))
    sec.line = headline(sec.verdicts, heads)
    zip_rows = []
    for m, merge in sorted({(m, g) for m, g in zip(rows_of["method"], rows_of["merge"]) if g != ref_merge}):
        for j in metrics:
            sign = 1.0 if metric_meta(j)["higher_is_better"] else -1.0
            res = paired_difference(drops, {"method": m, "merge": ref_merge}, {"method": m, "merge": merge}, j,
                                    lab(merge), sign=sign)
            zip_rows.append(verdict_row(name, f"{lab(m)}: {lab(merge)} vs {lab(ref_merge)}", j, "Δscore", res, False,
                                 tested=f"{m}:{merge}", against=f"{m}:{ref_merge}", calibrated=calibrated))
    if zip_rows:
        caption, header, body = verdict_table(zip_rows)
        sec.tables.append((f"Each merge against the {lab(ref_merge)} merge of the same LoRAs (score difference "
                           "in the metric's better direction)", header, body))
        sec.frames["vs_" + ref_merge] = pd.DataFrame(zip_rows)
    mergers = _merger_cos(run_dir, df)
    if len(mergers):
        sec.frames["mergers"] = mergers
        sec.tables.append(("Merger vectors: mean |cos(m1, m2)| over layers, before and after training "
                           "(merge.json)", ["method", "merge", "merges", "before", "after", "fall"],
                           [[lab(r.method), lab(r.merge), str(r.n), fmt(r.before), fmt(r.after), f"{r.fall:.0%}"]
                            for r in mergers.itertuples()]))
    falls = {(g, "merger_cos_fall"): float(r["fall"].min()) for g, r in mergers.groupby("merge")} if len(mergers) else {}
    _add_targets(sec, _target_rows(claim, falls, lab), lab, "the smallest fall of any method's merges")
    sec.figure = drop_figure(drops, metrics, lab)
    return sec
