"""`dcobench report RUN_DIR [--out DIR]`: every table, plot and page, folded from stored results.

The report is a pure function of the run folder: it reads `cells/*/result.json`, the images and
scores they point to and the references, and writes only under the output folder (default
`RUN/report`). Nothing is recomputed or cached between reports, so rerunning it gives identical
summary files, and a report can be rebuilt anywhere the run folder is copied.

    collect.py  load_cells: result.json files -> one row per cell
    tables.py   summarise: mean ± 95% t-CI per protocol × method × knob; summary.csv / summary.md
    pareto.py   pareto_frontier, dominated_table, plot_pareto (pareto.png / pareto.svg)
    curves.py   training curves from each LoRA's train.json (curves.png / curves.svg)
    grids.py    cell_grid: references + one row per prompt -> grids/<cell_id>.png
    merges.py   the merge-interference table (merge.csv / merge.md) and subject × style figures
    judges.py   with labels in RUN/labels/: the judges against people (judges.csv / judges.md /
                people.csv) and the people panel of the Pareto figure
    html.py     index.html: all of the above in one self-contained page

Merge cells (`dcobench run --merge`, kind "merge") feed only the merge-interference outputs; the
summary, the Pareto plot and the dominance table are folded from the other cells.

Cells scored under different protocols are never pooled: tables and plots are split per protocol
and every output carries a "protocols differ: ..." warning.
"""

from __future__ import annotations

import io
from pathlib import Path

from ..errors import DcoError
from ..failures import scan as scan_failures
from ..store import atomic_write_bytes, check_writable, read_json
from .collect import load_cells
from .curves import plot_curves
from .grids import cell_grid
from ..labels.agreement import RULE
from .judges import write_judges
from .html import render_html
from .merges import interference_table, write_merge_figures, write_merge_table
from .pareto import dominated_table, pareto_frontier, plot_pareto
from .tables import protocol_warnings, summarise, write_summary

__all__ = ["write_report", "load_cells", "summarise", "pareto_frontier", "dominated_table", "plot_pareto",
           "cell_grid", "protocol_warnings"]


def write_report(run_dir: str | Path | list, out_dir: str | Path | None = None,
                 pareto_metrics: list[str] | None = None) -> dict[str, Path]:
    """Write the report of `run_dir` under `out_dir` (default RUN/report); returns name -> path.

    `run_dir` may be a list of folders (e.g. one per `--shard`): their cells are folded together,
    as if one folder held them all; `out_dir` is then required.

    `pareto_metrics` overrides the run's `report.pareto_metrics` (the Pareto plot's subject axes).
    Keys: summary_csv, summary_md, dominance_csv, pareto_png, pareto_svg, index_html, failed_csv when
    cells failed (`failures.py`: one row per failed cell, its error and traceback file), curves_png and
    curves_svg when the LoRAs' train.json files are there, and
    `grid:<cell_id>` for each cell; with merge cells also merge_csv, merge_md and
    `merge_figure:<subject>+<style>`. Raises DcoError when the run folder has no finished cells.
    """
    run_dirs = [Path(p) for p in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    if out_dir is None and len(run_dirs) > 1:
        raise DcoError("report: several run folders need an output folder (--out DIR)")
    every = load_cells(run_dirs)
    out = Path(out_dir) if out_dir is not None else run_dirs[0] / "report"
    check_writable(out)

    warnings = protocol_warnings(every)
    failed = [{**r, "run_dir": str(d)} for d in run_dirs for r in scan_failures(d)]
    if failed:  # listed, never silently dropped: a method whose cells fail must not just vanish from the plot
        warnings.append(f"{len(failed)} cell{'s' if len(failed) != 1 else ''} failed and are left out of every table "
                        "and plot (failed.csv lists them, with their errors and tracebacks); fix the cause and rerun "
                        "`dcobench run` to retry only those")
    df = every[every["kind"] != "merge"]
    df.attrs = every.attrs
    summary = summarise(df)
    if pareto_metrics is None:  # what the run asked for (report.pareto_metrics in run.json); a metric
        # not scored yet is skipped, as the plot skips every unscored metric
        run_json = run_dirs[0] / "run.json"
        config = read_json(run_json).get("config", {}) if run_json.is_file() else {}
        pareto_metrics = (config.get("report") or {}).get("pareto_metrics") or []
    elif missing := [m for m in pareto_metrics if m not in df.attrs.get("metrics", [])]:
        raise DcoError(f"--pareto: '{missing[0]}' is not a score of this run (it has "
                       f"{', '.join(df.attrs.get('metrics', []))}); pick one of those")
    summary.attrs["pareto_metrics"] = list(pareto_metrics)
    paths = write_summary(summary, out, warnings)

    dominance = dominated_table(summary)
    buf = io.StringIO()
    dominance.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    paths["dominance_csv"] = out / "dominance.csv"
    atomic_write_bytes(paths["dominance_csv"], buf.getvalue().encode())

    if failed:
        paths["failed_csv"] = out / "failed.csv"
        atomic_write_bytes(paths["failed_csv"], failed_csv(failed))

    judged = write_judges(run_dirs, out)  # {} without labels in RUN/labels/
    paths.update({k: v for k, v in judged.items() if k.endswith(("_csv", "_md"))})
    paths.update(plot_pareto(summary, out, judged.get("people")))
    curve_paths, curves_missing = plot_curves(df, out)
    paths.update(curve_paths)

    results = [read_json(p) for p in df["result_path"]]
    grids = {}
    for result, cell_dir in zip(results, df["cell_dir"]):
        cell_grid(Path(cell_dir).parents[1], result, out)
        path = out / "grids" / f"{result['cell_id']}.png"
        paths[f"grid:{result['cell_id']}"] = path
        grids[result["cell_id"]] = path.read_bytes()

    merge_table, merge_figures = None, {}
    if (every["kind"] == "merge").any():
        merge_table = interference_table(every)
        paths.update(write_merge_table(merge_table, out))
        figs = write_merge_figures(every, out)
        paths.update(figs)
        merge_figures = {k.split(":", 1)[1]: p.read_bytes() for k, p in figs.items()}

    curves_png = paths["curves_png"].read_bytes() if "curves_png" in paths else None
    page = render_html(df, summary, dominance, warnings, paths["pareto_png"].read_bytes(), grids, results,
                       merge_table, merge_figures, curves_png, curves_missing,
                       (judged["table"], judged["verdicts"], RULE) if judged else None, failed)
    paths["index_html"] = out / "index.html"
    atomic_write_bytes(paths["index_html"], page.encode())
    return paths


FAILED_COLUMNS = ["cell_id", "method", "subject", "seed", "knobs", "stage", "error", "traceback"]


def failed_csv(records: list[dict]) -> bytes:
    """failed.csv: one row per failed cell; `traceback` relative to its run folder."""
    import pandas as pd

    rows = [{**{k: r.get(k, "") for k in FAILED_COLUMNS},
             "knobs": ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(r.get("knobs", {}).items())),
             "traceback": str(Path(r["run_dir"]) / r["traceback"])} for r in records]
    buf = io.StringIO()
    pd.DataFrame(rows, columns=FAILED_COLUMNS).to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue().encode()
