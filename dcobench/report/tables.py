"""The summary table: mean ± 95% CI per method and swept knob value, per scoring protocol.

The unit of replication is the cell (one subject × one training seed × one knob value): images of
one cell share a LoRA and are not independent, so averaging them first and then taking the CI over
cells is the honest interval. The CI is Student t with a hardcoded two-sided 95% table (no scipy);
beyond 30 degrees of freedom the normal 1.96 is close enough.

Cells scored under different protocols (other backbones, weights, preprocessing, prompt mode)
are never pooled or put in one table: the summary carries `protocol_id` as its first grouping
key, and every output says so in a "protocols differ: ..." line.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import atomic_write_bytes
from ..metrics import metric_meta

# Two-sided 95% critical values of Student's t, indexed by degrees of freedom 1..30.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)

KEYS = ["protocol_id", "method", "knob", "knob_label", "knob_value"]


def t_critical(dof: int) -> float:
    if dof < 1:
        return math.nan
    return _T95[dof - 1] if dof <= len(_T95) else 1.96


def mean_ci(values) -> tuple[float, float, int]:
    """(mean, 95% CI half-width, n) over the finite values; the half-width is NaN for n < 2."""
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    n = len(v)
    if n == 0:
        return math.nan, math.nan, 0
    if n == 1:
        return float(v[0]), math.nan, 1
    return float(v.mean()), float(t_critical(n - 1) * v.std(ddof=1) / math.sqrt(n)), n


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, method, knob value): n cells and `<m>_mean`, `<m>_ci`, `<m>_n` per metric.

    Unscored cells (protocol_id None) are left out; `protocol_warnings` reports them.
    """
    metrics = list(df.attrs.get("metrics", []))
    scored = df[df["protocol_id"].notna()]
    rows = []
    # groupby drops NaN keys (knob_value of a non-numeric knob), so group on the label and carry
    # the value along.
    for key, group in scored.groupby(["protocol_id", "method", "knob", "knob_label"], sort=False):
        row = dict(zip(KEYS[:4], key))
        row["knob_value"] = group["knob_value"].iloc[0]
        row.update(n=len(group), n_subjects=group["subject"].nunique(), n_seeds=group["seed"].nunique())
        for m in metrics:
            mean, ci, n = mean_ci(group[m].tolist())
            row.update({f"{m}_mean": mean, f"{m}_ci": ci, f"{m}_n": n})
        rows.append(row)
    columns = KEYS + ["n", "n_subjects", "n_seeds"] + [f"{m}_{s}" for m in metrics for s in ("mean", "ci", "n")]
    summary = pd.DataFrame(rows, columns=columns)
    summary = summary.sort_values(["protocol_id", "method", "knob_value", "knob_label"],
                                  na_position="last", kind="mergesort").reset_index(drop=True)
    summary.attrs = {"metrics": metrics, "protocols": dict(df.attrs.get("protocols", {})),
                     "run_dir": df.attrs.get("run_dir", "")}
    return summary


def _flatten(obj, prefix="") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k in sorted(obj, key=str):
            out.update(_flatten(obj[k], f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(obj, sort_keys=True, default=str) if isinstance(obj, list) else obj}


def protocol_lines(protocol: dict) -> list[str]:
    """A protocol dict as 'dotted.key: value' lines, id first."""
    flat = _flatten(protocol)
    return [f"{k}: {flat[k]}" for k in sorted(flat, key=lambda k: (k != "id", k))]


def protocol_warnings(df: pd.DataFrame) -> list[str]:
    """Lines a reader must see before trusting any comparison in the report."""
    out = []
    protocols = df.attrs.get("protocols", {})
    if len(protocols) > 1:
        flats = [_flatten(p) for p in protocols.values()]
        keys = sorted({k for f in flats for k in f} - {"id"})
        differ = [k for k in keys if len({json.dumps(f.get(k), default=str) for f in flats}) > 1]
        counts = df["protocol_id"].value_counts()
        ids = ", ".join(f"{pid} ({counts.get(pid, 0)} cells)" for pid in sorted(protocols))
        detail = f"; they differ in {', '.join(differ[:8])}{' ...' if len(differ) > 8 else ''}" if differ else ""
        out.append(f"protocols differ: {ids}{detail}. Results are split per protocol and must not be "
                   "compared across protocols; rescore every cell under one protocol to compare them.")
    unscored = df[df["protocol_id"].isna()]
    if len(unscored):
        out.append(f"{len(unscored)} of {len(df)} cells are not scored yet and are left out of the "
                   "tables (" + ", ".join(unscored["cell_id"].head(5)) + (" ..." if len(unscored) > 5 else "")
                   + "); score the run to include them.")
    return out


def format_pm(mean: float, ci: float, digits: int = 3) -> str:
    if not np.isfinite(mean):
        return "–"
    if not np.isfinite(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def metric_header(name: str) -> str:
    meta = metric_meta(name)
    return f"{meta['label']} {'↑' if meta['higher_is_better'] else '↓'}"


def present_metrics(summary: pd.DataFrame, protocol_id: str) -> list[str]:
    """The metrics at least one cell of the protocol has, in display order."""
    part = summary[summary["protocol_id"] == protocol_id]
    return [m for m in summary.attrs.get("metrics", []) if part[f"{m}_n"].sum() > 0]


def display_rows(summary: pd.DataFrame, protocol_id: str,
                 columns: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of one protocol's table, as strings; shared by markdown and HTML. `columns`
    picks and orders the metrics (default: every metric the protocol has)."""
    part = summary[summary["protocol_id"] == protocol_id]
    present = present_metrics(summary, protocol_id)
    metrics = present if columns is None else [m for m in columns if m in present]
    header = ["method", "knob", "n"] + [metric_header(m) for m in metrics]
    rows = []
    for _, r in part.iterrows():
        cells = [str(r["method"]), str(r["knob_label"]), str(int(r["n"]))]
        for m in metrics:
            text = format_pm(r[f"{m}_mean"], r[f"{m}_ci"])
            # Flag a metric averaged over fewer cells than the row claims (some cells lack it).
            cells.append(text + (f" (n={int(r[f'{m}_n'])})" if r[f"{m}_n"] != r["n"] else ""))
        rows.append(cells)
    return header, rows


CI_NOTE = "Mean ± 95% CI (Student t) over cells: each cell is one subject × one training seed, averaged over its images."


def summary_markdown(summary: pd.DataFrame, warnings: list[str]) -> str:
    run = Path(summary.attrs.get("run_dir", "")).name or "run"
    lines = [f"# dcobench report: {run}", ""]
    for w in warnings:
        lines += [f"> **warning:** {w}", ""]
    protocols = summary.attrs.get("protocols", {})
    for pid in sorted(summary["protocol_id"].unique()):
        header, rows = display_rows(summary, pid)
        lines += [f"## Protocol `{pid}`", "", "| " + " | ".join(header) + " |",
                  "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        lines += ["", CI_NOTE, "", f"Protocol `{pid}`:", ""]
        lines += [f"- {line}" for line in protocol_lines(protocols.get(pid, {"id": pid}))]
        lines.append("")
    if summary.empty:
        lines += ["No scored cells.", ""]
    return "\n".join(lines)


def write_summary(summary: pd.DataFrame, out_dir: Path, warnings: list[str]) -> dict[str, Path]:
    out_dir = Path(out_dir)
    buf = io.StringIO()
    # Ten significant digits: far beyond any metric's precision, and free of float-repr noise.
    summary.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    paths = {"summary_csv": out_dir / "summary.csv", "summary_md": out_dir / "summary.md"}
    atomic_write_bytes(paths["summary_csv"], buf.getvalue().encode())
    atomic_write_bytes(paths["summary_md"], summary_markdown(summary, warnings).encode())
    return paths
