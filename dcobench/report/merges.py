"""The merge-interference table and figure, folded from a run's `--merge` cells (kind "merge").

For each training method, subject, style and training seed (a "pair"), every row was sampled on
the same combined prompts: the subject LoRA alone, the style LoRA alone, and each merge. The
interference of a merge is how much it loses against the unmerged LoRAs on those prompts:

    subject-fidelity metrics   drop = subject LoRA alone - merged
    style-fidelity metrics     drop = style LoRA alone - merged
    prompt-fidelity metrics    drop = mean of the two alone - merged

(signs flip for a lower-is-better metric), so a positive drop is interference. Drops are taken
per pair and then averaged: mean ± 95% t-CI over pairs, the cell being the unit of replication as
in the summary. A metric counts as subject, style or prompt fidelity by its registered `kind`, or
`merge_kind` where a merged prompt changes what it measures (a judge of the prompted style judges
the style LoRA there).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from ..store import atomic_write_bytes, read_json
from ..metrics import metric_meta
from .grids import GAP, LABEL_W, TILE, label_font, image_records, tile_image, wrap_text, grid_png
from .tables import format_pm, mean_ci, metric_header

ALONE_LABEL = {"subject": "subject LoRA alone", "style": "style LoRA alone"}
_KEYS = ["protocol_id", "method", "merge"]


def merge_kind(metric: str) -> str:
    meta = metric_meta(metric)
    return meta.get("merge_kind") or meta["kind"]


def row_label(merge: str) -> str:
    return ALONE_LABEL.get(merge, f"merge: {merge}")


def _row_key(merge: str, method: str) -> tuple:
    """The unmerged rows first (subject, then style, each method's), then each method's merges."""
    if merge in ALONE_LABEL:
        return (0 if merge == "subject" else 1, method)
    return (2, method, merge)


def merge_metrics(df: pd.DataFrame) -> list[str]:
    merged = df[df["kind"] == "merge"]
    metrics = [m for m in df.attrs.get("metrics", []) if m in merged and merged[m].notna().any()]
    order = {"subject": 0, "style": 1, "prompt": 2}
    return sorted(metrics, key=lambda m: (order.get(merge_kind(m), 3), metrics.index(m)))


def pair_drops(df: pd.DataFrame) -> pd.DataFrame:
    """One row per merge cell, with `drop_<metric>` against its pair's unmerged rows."""
    merged = df[(df["kind"] == "merge") & df["protocol_id"].notna()]
    metrics = merge_metrics(df)
    out = []
    for _, group in merged.groupby(["protocol_id", "method", "subject", "style", "seed"], sort=False):
        alone = {k: group[group["merge"] == k] for k in ("subject", "style")}
        for _, row in group.iterrows():
            rec = row.to_dict()
            for m in metrics:
                refs = {k: float(a[m].iloc[0]) if len(a) else math.nan for k, a in alone.items()}
                kind = merge_kind(m)
                ref = refs.get(kind, (refs["subject"] + refs["style"]) / 2)
                drop = ref - row[m] if metric_meta(m)["higher_is_better"] else row[m] - ref
                rec[f"drop_{m}"] = math.nan if row["merge"] in ALONE_LABEL else drop
            out.append(rec)
    return pd.DataFrame(out)


def interference_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per (protocol, method, row): n pairs, `<m>_mean/_ci` and `drop_<m>_mean/_ci` per metric."""
    metrics = merge_metrics(df)
    pairs = pair_drops(df)
    rows = []
    if not pairs.empty:
        for key, group in pairs.groupby(_KEYS, sort=False):
            row = dict(zip(_KEYS, key))
            row.update(label=row_label(row["merge"]), n=len(group))
            for m in metrics:
                for col in (m, f"drop_{m}"):
                    mean, ci, _ = mean_ci(group[col].tolist())
                    row.update({f"{col}_mean": mean, f"{col}_ci": ci})
            rows.append(row)
    cols = _KEYS + ["label", "n"] + [f"{c}_{s}" for m in metrics for c in (m, f"drop_{m}") for s in ("mean", "ci")]
    table = pd.DataFrame(rows, columns=cols)
    if not table.empty:
        order = [_row_key(g, m) for g, m in zip(table["merge"], table["method"])]
        table = table.assign(_o=order).sort_values(["protocol_id", "_o"], kind="mergesort").drop(columns="_o")
        table = table.reset_index(drop=True)
    table.attrs = {"metrics": metrics}
    return table


def key_metrics(metrics: list[str], preferred=()) -> list[str]:
    """One metric per fidelity kind (subject, style, prompt): the first of `preferred` of that kind
    (the run's Pareto metrics, CLIP-T), else the first of that kind."""
    out = []
    for kind in ("subject", "style", "prompt"):
        of_kind = [m for m in metrics if merge_kind(m) == kind]
        out += ([m for m in preferred if m in of_kind] + of_kind)[:1]
    return out


def display(table: pd.DataFrame, protocol_id: str, drops: bool,
            columns: list[str] | None = None) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the score table (`drops=False`) or the drop table, as strings; `columns`
    picks and orders the metrics (default: all)."""
    part = table[table["protocol_id"] == protocol_id]
    metrics = table.attrs.get("metrics", [])
    metrics = metrics if columns is None else [m for m in columns if m in metrics]
    if drops:
        part = part[~part["merge"].isin(list(ALONE_LABEL))]
    header = ["method", "row", "n pairs"] + [(f"drop of {metric_meta(m)['label']}" if drops else metric_header(m))
                                            + f" [{merge_kind(m)}]" for m in metrics]
    col = (lambda m: f"drop_{m}") if drops else (lambda m: m)
    rows = [[str(r["method"]), str(r["label"]), str(int(r["n"]))] +
            [format_pm(r[f"{col(m)}_mean"], r[f"{col(m)}_ci"]) for m in metrics] for _, r in part.iterrows()]
    return header, rows


NOTE = ("Every row is sampled on the same combined prompts ('<subject prompt>, in <style> style'). Drop = the "
        "unmerged LoRA's score minus the merge's, per subject × style × seed pair, then mean ± 95% CI over pairs: "
        "subject metrics against the subject LoRA alone, style metrics against the style LoRA alone, prompt "
        "metrics against the mean of the two. A positive drop is interference.")


def merge_markdown(table: pd.DataFrame) -> str:
    lines = ["# Merge interference", "", NOTE, ""]
    for pid in sorted(table["protocol_id"].unique()):
        for title, drops in (("Scores", False), ("Drop vs the unmerged LoRAs (interference)", True)):
            header, rows = display(table, pid, drops)
            lines += [f"## {title} (protocol `{pid}`)", "", "| " + " | ".join(header) + " |",
                      "|" + "|".join("---" for _ in header) + "|"]
            lines += ["| " + " | ".join(rows_) + " |" for rows_ in rows] + [""]
    return "\n".join(lines)


def write_merge_table(table: pd.DataFrame, out_dir) -> dict:
    buf = io.StringIO()
    table.to_csv(buf, index=False, float_format="%.10g", lineterminator="\n")
    out_dir = Path(out_dir)
    paths = {"merge_csv": out_dir / "merge.csv", "merge_md": out_dir / "merge.md"}
    atomic_write_bytes(paths["merge_csv"], buf.getvalue().encode())
    atomic_write_bytes(paths["merge_md"], merge_markdown(table).encode())
    return paths


def merge_figure(df: pd.DataFrame, subject: str, style: str, tile: int = TILE) -> Image.Image:
    """Subject × style samples per row of the table: one row per (method, row), one column per
    combined prompt (first sampling seed and image of the first training seed)."""
    cells = df[(df["kind"] == "merge") & (df["subject"] == subject) & (df["style"] == style)]
    cells = cells[cells["seed"] == cells["seed"].min()]
    cells = cells.assign(_o=[_row_key(g, m) for g, m in zip(cells["merge"], cells["method"])])
    cells = cells.sort_values("_o", kind="mergesort")
    labelled = []
    refs = None
    for _, row in cells.iterrows():
        result = read_json(row["result_path"])
        if refs is None:
            refs = [p for p in result.get("references", [])[:2]] + [p for p in result.get("style_references", [])[:2]]
            labelled.append((f"references: {subject} (2), {style} (2)", refs))
        cell_dir = Path(row["cell_dir"])
        first = {}
        for r in sorted(image_records(cell_dir, result), key=lambda r: (r["prompt_index"], r["seed"], r["index"])):
            first.setdefault(r["prompt_index"], cell_dir / r["image"])
        labelled.append((f"{row['method']}: {row_label(row['merge'])}", [first[k] for k in sorted(first)]))
    n_cols = max([len(p) for _, p in labelled] + [1])
    canvas = Image.new("RGB", (LABEL_W + n_cols * (tile + GAP) + GAP, GAP + len(labelled) * (tile + GAP)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, paths) in enumerate(labelled):
        y = GAP + r * (tile + GAP)
        for i, text in enumerate(wrap_text(label, label_font(), LABEL_W - 12, 4)):
            draw.text((GAP + 2, y + tile // 2 - 9 + 18 * i), text, fill=(20, 20, 20), font=label_font())
        for c, path in enumerate(paths):
            canvas.paste(tile_image(Path(path), tile), (LABEL_W + GAP + c * (tile + GAP), y))
    return canvas


def write_merge_figures(df: pd.DataFrame, out_dir) -> dict:
    merged = df[df["kind"] == "merge"]
    paths = {}
    for subject, style in sorted(set(zip(merged["subject"], merged["style"]))):
        path = Path(out_dir) / "merges" / f"{subject}+{style}.png"
        atomic_write_bytes(path, grid_png(merge_figure(df, subject, style)))
        paths[f"merge_figure:{subject}+{style}"] = path
    return paths
