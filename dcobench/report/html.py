"""`index.html`: the whole report as one self-contained page.

Every image (the Pareto plot and each cell's grid) is embedded as a base64 data URI and the style
and script are inline, so the page can be mailed, attached to a CI run or opened offline and it
never fetches anything. The page mirrors summary.md (same rows, same warnings, via
`tables.display_rows`) and adds the dominance table, the plot and the grids.

The page fits a 1400-px window: each table shows its key columns (the Pareto plot's metrics; for
merges one metric per fidelity kind) and keeps the full table, key columns first, in a collapsed
<details> that scrolls sideways inside the page rather than widening it.

The inline script writes `data-images-loaded="<loaded>/<total>"` and `data-page-width` (the page's
scroll width in CSS px) on <body> once the window has loaded; a headless browser test reads them
to prove every embedded image decodes and that nothing runs past the window.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from ..metrics import metric_meta
from .merges import NOTE, display, key_metrics
from .pareto import pareto_axes
from .tables import CI_NOTE, display_rows, present_metrics, protocol_lines

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1400px;
padding:0 16px;color:#1a1a1a;line-height:1.4}
h1{font-size:1.5em;margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:3px 9px;text-align:left;white-space:nowrap}
th{background:#f2f4f7;white-space:normal;max-width:12em} td.num{text-align:right;font-variant-numeric:tabular-nums}
td.wrap{white-space:normal;max-width:32em} .scroll{overflow-x:auto;max-width:100%}
details{margin:.4em 0 1em} summary{cursor:pointer;color:#245;font-size:.92em}
tr.dominated td{color:#8a8a8a} .warn{background:#fff4d6;border:1px solid #e0b84c;padding:8px 12px;margin:8px 0}
pre{background:#f6f8fa;padding:8px 12px;font-size:.85em;overflow-x:auto}
figure{margin:18px 0} figcaption{font-size:.92em;margin-bottom:4px}
img{max-width:100%;height:auto} img.grid{image-rendering:pixelated}
.meta{color:#555;font-size:.9em} code{font-size:.9em}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.getElementsByTagName('img'), loaded = 0;
  for (var i = 0; i < imgs.length; i++) { if (imgs[i].complete && imgs[i].naturalWidth > 0) loaded++; }
  document.body.setAttribute('data-images-loaded', loaded + '/' + imgs.length);
  document.body.setAttribute('data-page-width', document.documentElement.scrollWidth);
});
"""


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _table(header: list[str], rows: list[list[str]], numeric: range, row_classes: list[str] | None = None,
           wrap: tuple[int, ...] = ()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        kinds = ["num" if j in numeric else "wrap" if j in wrap else "" for j in range(len(row))]
        tds = "".join(f'<td class="{k}">{escape(c)}</td>' if k else f"<td>{escape(c)}</td>" for k, c in zip(kinds, row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _key_and_full(make, key: list[str], every: list[str]) -> str:
    """The table of the key metrics, then the full one (key metrics first) collapsed below it;
    `make(columns)` renders a table of those metric columns."""
    full = key + [m for m in every if m not in key]
    if len(full) == len(key):
        return make(full)
    return (make(key) + f"<details><summary>Full table: all {len(full)} metrics</summary>{make(full)}</details>")


def _summary_section(summary: pd.DataFrame) -> str:
    if summary.empty:
        return "<h2>Summary</h2><p>No scored cells.</p>"
    protocols = summary.attrs.get("protocols", {})
    parts = ["<h2>Summary</h2>", f'<p class="meta">{escape(CI_NOTE)}</p>']
    for pid in sorted(summary["protocol_id"].unique()):
        every = present_metrics(summary, pid)
        x, ys = pareto_axes(every, summary.attrs.get("pareto_metrics", ()))
        parts.append(f"<h3>Protocol <code>{escape(str(pid))}</code></h3>")
        parts.append(_key_and_full(lambda cols: _table(*_numeric(display_rows(summary, pid, cols))),
                                   [m for m in (x, *ys) if m], every))
        lines = protocol_lines(protocols.get(pid, {"id": pid}))
        parts.append(f"<pre>{escape(chr(10).join(lines))}</pre>")
    return "".join(parts)


def _dominance_section(dominance: pd.DataFrame) -> str:
    criteria = dominance.attrs.get("criteria", [])
    pairs = dominance.attrs.get("pairs", [])
    if dominance.empty or not criteria:
        return "<h2>Dominance</h2><p>Not enough scored metrics to compare methods.</p>"
    labels = [metric_meta(m)["label"] for m in criteria]
    header = (["protocol", "method / knob"] + labels + ["dominated on all of them by"]
              + [f"dominated on {labels[0]} and {metric_meta(y)['label']} by" for y in pairs])
    rows, classes = [], []
    for _, r in dominance.iterrows():
        vals = [f"{r[m]:.3f}" if np.isfinite(r[m]) else "–" for m in criteria]
        rows.append([str(r["protocol_id"]), f"{r['method']} {r['knob_label']}", *vals,
                     r["dominated_by"] or "no", *(r[f"dominated_by_{y}"] or "no" for y in pairs)])
        classes.append("dominated" if r["dominated"] else "")
    note = ("A point is dominated when a point of another method is at least as good on every metric compared "
            "(means, each in its better direction) and strictly better on one: on all of "
            f"{', '.join(labels)} at once, then on each plot's pair of axes. Points are compared only within one "
            "protocol.")
    table = _table(header, rows, range(2, 2 + len(criteria)), classes,
                   wrap=tuple(range(2 + len(criteria), len(header))))
    return f'<h2>Dominance</h2><p class="meta">{escape(note)}</p>{table}'


def _overview(df: pd.DataFrame, results: list[dict]) -> str:
    gits = sorted({str((r.get("provenance") or {}).get("git", "unknown")) for r in results})
    dates = sorted(str((r.get("provenance") or {}).get("date", "")) for r in results if r.get("provenance"))
    suites = sorted({str(r.get("suite", "")) for r in results})
    items = [
        f"{len(df)} cells: methods {', '.join(sorted(df['method'].unique()))}; "
        f"subjects {', '.join(sorted(map(str, df['subject'].unique())))}; "
        f"training seeds {', '.join(map(str, sorted(df['seed'].dropna().unique())))}",
        f"suite {', '.join(suites)}; git {', '.join(gits)}"
        + (f"; sampled {dates[0]}" + (f" … {dates[-1]}" if dates[-1] != dates[0] else "") if dates else ""),
    ]
    return "<ul class=\"meta\">" + "".join(f"<li>{escape(i)}</li>" for i in items) + "</ul>"


def _grid_caption(row: pd.Series, metrics: list[str]) -> str:
    scores = [f"{metric_meta(m)['label']} {row[m]:.3f}" for m in metrics if np.isfinite(row[m])]
    text = (f"<b>{escape(str(row['method']))}</b> · {escape(str(row['subject']))} · "
            f"{escape(str(row['knob_label']))} · training seed {escape(str(row['seed']))}")
    if scores:
        text += " · " + escape(", ".join(scores))
    return text + f' <span class="meta">(cell <code>{escape(str(row["cell_id"]))}</code>)</span>'


def _judges_section(table: pd.DataFrame, verdicts: dict, rule_text: str) -> str:
    """The judges against people (`report/judges.py`): each judge's rule verdict, then its table."""
    fmt = lambda x: "–" if pd.isna(x) else f"{x:.2f}"  # noqa: E731
    items = "".join(f"<li><b>{escape(j)}</b>: {'meets the rule' if ok else 'misses the rule'} "
                    f"({escape(why)})</li>" for j, (ok, why) in verdicts.items())
    header = ["judge", "point", "n", "accuracy", "kappa", "human rate [95% CI]", "judge rate [95% CI]", "meets", "cut"]
    rows = [[r.judge, r.stratum, str(r.n), fmt(r.accuracy), fmt(r.kappa),
             f"{fmt(r.human_rate)} [{fmt(r.human_lo)}, {fmt(r.human_hi)}]",
             f"{fmt(r.judge_rate)} [{fmt(r.judge_lo)}, {fmt(r.judge_hi)}]",
             "–" if r.meets is None or pd.isna(r.meets) else ("yes" if r.meets else "no"), f"{r.cut} ({r.cut_source})"]
            for r in table.itertuples()]
    return (f'<h2>Judges against people</h2><p class="meta">{escape(rule_text)}</p><ul>{items}</ul>'
            f'<details><summary>Agreement per judge and point ({len(rows)} rows; judges.csv)</summary>'
            f'<div class="scroll">{_table(header, rows, range(2, 5), wrap=(1, 8))}</div></details>')


def _numeric(header_rows) -> tuple:
    """(header, rows, numeric columns) of a table whose first three columns are labels."""
    header, rows = header_rows
    return header, rows, range(2, len(header))


def _merge_section(table: pd.DataFrame, figures: dict[str, bytes], preferred=()) -> str:
    parts = [f'<h2>Merge interference</h2><p class="meta">{escape(NOTE)}</p>']
    every = list(table.attrs.get("metrics", []))
    key = key_metrics(every, [*preferred, "clip_t"])
    for pid in sorted(table["protocol_id"].unique()):
        for title, drops in (("Scores", False), ("Drop vs the unmerged LoRAs", True)):
            parts.append(f"<h3>{title} (protocol <code>{escape(str(pid))}</code>)</h3>" + _key_and_full(
                lambda cols: _table(*_numeric(display(table, pid, drops, cols))), key, every))
    for pair, png in sorted(figures.items()):
        parts.append(f"<figure><figcaption>{escape(pair)}: one row per LoRA or merge, one column per combined "
                     f'prompt</figcaption><img class="grid" alt="merge grid {escape(pair)}" src="{data_uri(png)}"></figure>')
    return "".join(parts)


def _curves_section(curves_png: bytes | None, missing: list[str]) -> str:
    parts = ["<h2>Training curves</h2>"]
    if curves_png:
        parts.append('<p class="meta">Loss of every method and, for DCO, the implicit accuracy (the fraction of '
                     "samples where the LoRA fits the target better than the base model) and β · gap (the argument "
                     "of its sigmoid), per optimizer step; mean ± 95% CI over each method's trained LoRAs.</p>"
                     f'<img alt="training curves" src="{data_uri(curves_png)}">')
    else:
        parts.append("<p>No training logs found.</p>")
    if missing:
        parts.append(f'<p class="meta">{len(missing)} LoRA(s) have no train.json (not copied with the run?): '
                     f"{escape(', '.join(missing[:5]))}{' ...' if len(missing) > 5 else ''}</p>")
    return "".join(parts)


def _failed_section(failed: list[dict]) -> str:
    rows = "".join(f"<tr><td>{escape(str(r.get('method')))}</td><td>{escape(str(r.get('subject')))}</td>"
                   f"<td>{escape(str(r.get('seed')))}</td><td>{escape(str(r.get('stage')))}</td>"
                   f"<td>{escape(str(r.get('error')))}</td><td><code>{escape(str(r.get('traceback')))}</code></td></tr>"
                   for r in failed)
    return ("<h2>Failed cells</h2><p class=\"meta\">Left out of every table and plot below; rerunning `dcobench run` "
            "retries only these.</p><table><tr><th>method</th><th>subject</th><th>seed</th><th>stage</th>"
            f"<th>error</th><th>traceback</th></tr>{rows}</table>")


def render_html(df: pd.DataFrame, summary: pd.DataFrame, dominance: pd.DataFrame, warnings: list[str],
                pareto_png: bytes, grids: dict[str, bytes], results: list[dict],
                merge_table: pd.DataFrame | None = None, merge_figures: dict[str, bytes] | None = None,
                curves_png: bytes | None = None, curves_missing: list[str] = (), judges: tuple | None = None,
                failed: list[dict] = ()) -> str:
    """The page as a string; `grids` maps cell_id -> PNG bytes, shown in `df` order; `failed` lists
    the cells that failed (`failures.py`), shown right after the warnings."""
    run = Path(df.attrs.get("run_dir", "")).name or "run"
    metrics = list(df.attrs.get("metrics", []))
    parts = [f"<h1>dcobench report: {escape(run)}</h1>", _overview(df, results)]
    parts += [f'<div class="warn"><b>warning:</b> {escape(w)}</div>' for w in warnings]
    if failed:
        parts.append(_failed_section(failed))
    parts.append(_summary_section(summary))
    parts.append(_dominance_section(dominance))
    parts.append("<h2>Pareto plot</h2>"
                 f'<img alt="Pareto plot: subject fidelity vs prompt fidelity" src="{data_uri(pareto_png)}">')
    parts.append(_curves_section(curves_png, list(curves_missing)))
    if judges is not None:
        parts.append(_judges_section(*judges))
    if merge_table is not None:
        parts.append(_merge_section(merge_table, merge_figures or {}, summary.attrs.get("pareto_metrics", ())))
    parts.append('<h2>Grids</h2><p class="meta">Top row: the subject\'s reference images. Then one row per '
                 "prompt; columns are the sampling seeds × images per prompt.</p>")
    # Subjects together, so the methods' grids of one subject can be compared by scrolling.
    order = df.sort_values(["subject", "method", "knob_value", "knob_label", "seed", "cell_id"],
                           na_position="last", kind="mergesort")
    for _, row in order.iterrows():
        png = grids.get(row["cell_id"])
        if png is None:
            continue
        parts.append(f"<figure><figcaption>{_grid_caption(row, metrics)}</figcaption>"
                     f'<img class="grid" alt="grid of cell {escape(str(row["cell_id"]))}" src="{data_uri(png)}">'
                     "</figure>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>dcobench report: {escape(run)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + f"\n<script>{_SCRIPT}</script>\n</body></html>\n")
