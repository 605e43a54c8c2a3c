"""Fidelity/editability trade-offs: Pareto frontiers, dominance and the Pareto plot.

Personalization methods trade subject fidelity (DINO, CLIP-I: does it look like the subject?)
against prompt fidelity (CLIP-T: does it follow the prompt?), and each method's knob (DCO's w_con,
DreamBooth's CFG scale, ...) moves it along its own curve. A single-number comparison at one knob
value says little; the question is whether one method's curve lies above the other's.

`pareto_frontier` is the pure core. `dominated_table` asks, for every (method, knob) point, whether
some point of *another* method is at least as good on every plotted metric and strictly better on
one (on means; the plot's error bars show how far to trust that). Both honour each metric's
direction (`higher_is_better`) and never compare across scoring protocols.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..store import atomic_write_bytes
from ..metrics import metric_meta


def _dominates(a, b) -> bool:
    return all(p >= q for p, q in zip(a, b)) and any(p > q for p, q in zip(a, b))


def pareto_frontier(points, maximize=(True, True)) -> list[int]:
    """Indices of the non-dominated points, sorted by x (then by index).

    A point is dominated when another is at least as good on both axes and strictly better on
    one, so exact duplicates do not dominate each other and are all kept. Points with a
    non-finite coordinate are never on the frontier.
    """
    signs = [1.0 if m else -1.0 for m in maximize]
    finite = [(i, tuple(float(v) for v in p)) for i, p in enumerate(points)
              if all(v is not None and math.isfinite(float(v)) for v in p)]
    oriented = {i: tuple(s * v for s, v in zip(signs, p)) for i, p in finite}
    keep = [i for i, _ in finite if not any(_dominates(oriented[j], oriented[i]) for j in oriented if j != i)]
    coords = dict(finite)
    return sorted(keep, key=lambda i: (coords[i][0], i))


def pareto_axes(metrics, preferred=()) -> tuple[str | None, list[str]]:
    """(x metric, y metrics) to plot: CLIP-T against `preferred` (the run's report.pareto_metrics)
    or DINO and CLIP-I, with fallbacks by kind."""
    metrics = list(metrics)
    prompt = [m for m in metrics if metric_meta(m)["kind"] == "prompt"]
    x = "clip_t" if "clip_t" in metrics else (prompt[0] if prompt else None)
    ys = [m for m in preferred if m in metrics] or [m for m in ("dino", "clip_i") if m in metrics]
    if not ys:
        ys = [m for m in metrics if metric_meta(m)["kind"] == "subject" and m != x][:2]
    if not ys:
        ys = [m for m in metrics if m != x][:2]
    return x, ys


def _present(summary: pd.DataFrame) -> list[str]:
    return [m for m in summary.attrs.get("metrics", []) if f"{m}_n" in summary and summary[f"{m}_n"].sum() > 0]


def _dominators(part: pd.DataFrame, vals: np.ndarray, i: int) -> list[str]:
    """Points of other methods that dominate point i on the columns of ``vals`` (oriented)."""
    if not np.isfinite(vals[i]).all():
        return []
    return [f"{o['method']} {o['knob_label']}" for j, o in part.iterrows()
            if o["method"] != part.loc[i, "method"] and np.isfinite(vals[j]).all() and _dominates(vals[j], vals[i])]


def dominated_table(summary: pd.DataFrame) -> pd.DataFrame:
    """For each (protocol, method, knob) point: is it dominated, and by which other method's points,
    on all plotted metrics at once (``dominated``, ``dominated_by``) and on each plot's pair of
    axes, prompt fidelity against one subject judge (``dominated_by_<judge>``)."""
    x, ys = pareto_axes(_present(summary), summary.attrs.get("pareto_metrics", ()))
    criteria = [m for m in [x, *ys] if m]
    signs = np.array([1.0 if metric_meta(m)["higher_is_better"] else -1.0 for m in criteria])
    pairs = [y for y in ys if x and len(ys) > 1]  # with one judge the pair is the joint criterion
    rows = []
    for pid, part in summary.groupby("protocol_id", sort=True):
        part = part.reset_index(drop=True)
        vals = part[[f"{m}_mean" for m in criteria]].to_numpy(dtype=float) * signs if criteria else None
        for i, r in part.iterrows():
            by = _dominators(part, vals, i) if criteria else []
            row = {"protocol_id": pid, "method": r["method"], "knob_label": r["knob_label"],
                   "knob_value": r["knob_value"]}
            row.update({m: r[f"{m}_mean"] for m in criteria})
            row.update(dominated=bool(by), dominated_by="; ".join(by))
            for y in pairs:
                cols = [0, criteria.index(y)]
                row[f"dominated_by_{y}"] = "; ".join(_dominators(part, vals[:, cols], i))
            rows.append(row)
    table = pd.DataFrame(rows, columns=["protocol_id", "method", "knob_label", "knob_value", *criteria,
                                        "dominated", "dominated_by", *(f"dominated_by_{y}" for y in pairs)])
    table.attrs = {"criteria": criteria, "pairs": pairs}
    return table


def _colours(methods) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(sorted(methods))}


def _axis_label(m: str) -> str:
    meta = metric_meta(m)
    return f"{meta['label']} ({'higher' if meta['higher_is_better'] else 'lower'} is better)"


def _point_label(r) -> str:
    # The legend names the knob; next to a point its value alone stays short enough to read.
    label = str(r["knob_label"])
    return label if "," in label or "=" not in label else label.split("=", 1)[1]


def _draw_panel(ax, part: pd.DataFrame, x: str, y: str, colours: dict) -> None:
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D

    mx, my = metric_meta(x), metric_meta(y)
    for method, pts in part.groupby("method", sort=True):
        pts = pts.sort_values(["knob_value", "knob_label"], na_position="last", kind="mergesort")
        pts = pts[np.isfinite(pts[f"{x}_mean"]) & np.isfinite(pts[f"{y}_mean"])]
        if pts.empty:
            continue
        c = colours[method]
        knob = pts["knob"].iloc[0].rsplit(".", 1)[-1] or "no sweep"
        ax.errorbar(pts[f"{x}_mean"], pts[f"{y}_mean"], xerr=pts[f"{x}_ci"].fillna(0), yerr=pts[f"{y}_ci"].fillna(0),
                    fmt="-o", color=c, ms=5, lw=1.6, capsize=3, elinewidth=0.9, ecolor=to_rgba(c, 0.3),
                    label=f"{method} ({knob})")
        for _, r in pts.iterrows():
            ax.annotate(_point_label(r), (r[f"{x}_mean"], r[f"{y}_mean"]), xytext=(5, 5),
                        textcoords="offset points", fontsize=8, color=c)
        front = pareto_frontier(list(zip(pts[f"{x}_mean"], pts[f"{y}_mean"])),
                                maximize=(mx["higher_is_better"], my["higher_is_better"]))
        fx = pts[f"{x}_mean"].to_numpy()[front]
        fy = pts[f"{y}_mean"].to_numpy()[front]
        ax.plot(fx, fy, ls="--", lw=2.6, color=c, alpha=0.45)
        ax.plot(fx, fy, ls="none", marker="o", ms=11, mfc="none", mec=c, mew=1.2, alpha=0.7)
    _fit_to_points(ax, part, x, y)
    handles, labels = ax.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="--", lw=2.6, color="0.5", alpha=0.6, marker="o", mfc="none", ms=9))
    labels.append("Pareto frontier of the method")
    ax.legend(handles, labels, fontsize=8, loc="best", framealpha=0.85)
    ax.set_xlabel(_axis_label(x))
    ax.set_ylabel(_axis_label(y))
    ax.grid(True, alpha=0.3)


def _fit_to_points(ax, part: pd.DataFrame, x: str, y: str) -> None:
    # Few cells give wide t-intervals; scaling the axes to them would squash the curves into a dot.
    # The axes follow the points, and error bars may run past the edge.
    for col, setter in ((f"{x}_mean", ax.set_xlim), (f"{y}_mean", ax.set_ylim)):
        vals = part[col].to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            lo, hi = float(vals.min()), float(vals.max())
            pad = max(0.15 * (hi - lo), 0.02 * max(abs(lo), abs(hi)), 1e-3)
            setter(lo - pad, hi + pad)


def _people_panel(ax, people: pd.DataFrame, colours: dict) -> None:
    """Human subject rate against human prompt rate per point (95% Wilson intervals), by method."""
    for method, pts in people.groupby("method", sort=True):
        c = colours.get(method, "0.3")
        # matplotlib refuses a negative bar; an interval end a rounding error past its rate is no bar at all
        xerr = [(pts["prompt_rate"] - pts["prompt_lo"]).clip(lower=0),
                (pts["prompt_hi"] - pts["prompt_rate"]).clip(lower=0)]
        yerr = [(pts["subject_rate"] - pts["subject_lo"]).clip(lower=0),
                (pts["subject_hi"] - pts["subject_rate"]).clip(lower=0)]
        ax.errorbar(pts["prompt_rate"], pts["subject_rate"], xerr=xerr, yerr=yerr, fmt="o", color=c, ms=5,
                    capsize=3, elinewidth=0.9, label=method)
        for r in pts.itertuples():
            label = r.point[len(method):].strip()
            ax.annotate(label if "," in label or "=" not in label else label.split("=", 1)[1],
                        (r.prompt_rate, r.subject_rate), xytext=(5, 5), textcoords="offset points", fontsize=8,
                        color=c)
    ax.set_xlim(-0.05, 1.05)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("People: follows the prompt (share of labelled images)")
    ax.set_ylabel("People: is the subject (share of labelled images)")
    ax.set_title(f"People ({int(people['n'].sum())} labelled images, blind)", fontsize=11)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    ax.grid(True, alpha=0.3)


def pareto_figure(summary: pd.DataFrame, title: str = "Subject fidelity vs prompt fidelity",
                  people: pd.DataFrame | None = None):
    """A matplotlib Figure: one row of panels per protocol, one panel per subject metric; with
    `people` (`report.judges.people_table`) a last panel in the first row: the people's rates."""
    from matplotlib.figure import Figure

    x, ys = pareto_axes(_present(summary), summary.attrs.get("pareto_metrics", ()))
    protocols = sorted(summary["protocol_id"].unique()) if len(summary) else []
    with_people = people is not None and not people.empty
    ncols, nrows = max(1, len(ys)) + with_people, max(1, len(protocols))
    fig = Figure(figsize=(6.4 * ncols, 4.9 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    if with_people:
        _people_panel(axes[0][-1], people, _colours(set(summary.get("method", [])) | set(people["method"])))
        for row in range(1, nrows):
            axes[row][-1].set_axis_off()
    if not protocols or x is None or not ys:
        why = "no scored cells" if not protocols else "needs a prompt metric (CLIP-T) and a subject metric"
        axes[0][0].text(0.5, 0.5, f"Pareto plot: {why}", ha="center", va="center", transform=axes[0][0].transAxes)
        axes[0][0].set_axis_off()
        return fig
    colours = _colours(summary["method"].unique())
    for row, pid in enumerate(protocols):
        part = summary[summary["protocol_id"] == pid]
        for col, y in enumerate(ys):
            ax = axes[row][col]
            _draw_panel(ax, part, x, y, colours)
            panel = f"{metric_meta(y)['label']} vs {metric_meta(x)['label']}"
            ax.set_title(panel + (f"  [protocol {pid}]" if len(protocols) > 1 else ""), fontsize=11)
    fig.suptitle(f"{title}\n(mean ± 95% CI over cells; labels: knob value;\n"
                 "axes fit the means, CI bars may run past them)",
                 fontsize=11)
    return fig


def save_figure(fig, out_dir: str | Path, name: str, dpi: int = 130) -> dict[str, Path]:
    """Write `fig` as <name>.png and <name>.svg; returns {"<name>_png": path, "<name>_svg": path}.
    A fixed hash salt and no dates keep the files identical from one report to the next."""
    from matplotlib import rc_context

    paths = {}
    with rc_context({"svg.hashsalt": "dcobench", "svg.fonttype": "none"}):
        for fmt, meta in (("png", {"Software": None}), ("svg", {"Date": None})):
            buf = io.BytesIO()
            fig.savefig(buf, format=fmt, dpi=dpi, metadata=meta)
            paths[f"{name}_{fmt}"] = Path(out_dir) / f"{name}.{fmt}"
            atomic_write_bytes(paths[f"{name}_{fmt}"], buf.getvalue())
    return paths


def plot_pareto(summary: pd.DataFrame, out_dir: str | Path, people: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write pareto.png and pareto.svg under `out_dir`; returns their paths."""
    return save_figure(pareto_figure(summary, people=people), out_dir, "pareto")
