"""Labelled images as one table: the people's answers beside the judges' scores of the same image.

Two sources give the same frame. A run folder (`run_frame`): the labels in `RUN/labels/*.csv`, the
items of the samples stored there (method, knobs, subject), and each cell's own scores file, so a
report shows how its judges fared on its own images. An exported label set (`export_frame`, e.g.
`data/micro/labels/dev/`): its `items.csv` and `labels-*.csv`, with the scores given by the
caller, who re-judges the exported images (so a reworked judge is measured on the same images).

A point is what a frontier plots: a method at one knob setting (`point`, e.g. "dco w_con=2.0"),
pooled over subjects and seeds; it is the stratum of the agreement table.
"""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pandas as pd

from ..store import read_json
from .agreement import BINARY, Cut, consensus

HUMAN = ("human_subject", "human_prompt")


def knob_text(knobs: dict) -> str:
    """"w_con=2.0" (the report's knob label); "default" when nothing is swept."""
    if not knobs:
        return "default"
    return ", ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(knobs.items()))


def point_of(method: str, knobs: dict) -> str:
    return f"{method} {knob_text(knobs)}"


def human_columns(labels: pd.DataFrame) -> pd.DataFrame:
    """item -> human_subject, human_prompt (1 yes, 0 no, NaN unsure or not asked), by consensus."""
    agreed = consensus(labels)
    if agreed.empty:
        return pd.DataFrame(columns=list(HUMAN)).rename_axis("item")
    wide = agreed.pivot_table(index="item", columns="question", values="human", aggfunc="first", dropna=False)
    return pd.DataFrame({h: wide[h.split("_", 1)[1]] if h.split("_", 1)[1] in wide else math.nan for h in HUMAN},
                        index=wide.index)


def build_frame(items: pd.DataFrame, labels: pd.DataFrame, scores: pd.DataFrame) -> pd.DataFrame:
    """Labelled items (`items`: item, method, knobs, subject, ...) with their human answers and the
    judges' per-image `scores` (item + one column per judge); unlabelled items are dropped."""
    human = human_columns(labels)
    frame = items.merge(human, left_on="item", right_index=True, how="inner")
    frame = frame.merge(scores, on="item", how="left")
    frame["point"] = [point_of(m, k if isinstance(k, dict) else json.loads(k or "{}"))
                      for m, k in zip(frame["method"], frame["knobs"])]
    return frame.sort_values(["point", "subject", "item"], kind="mergesort").reset_index(drop=True)


def _cell_scores(run_dir: Path, cell: str) -> tuple[pd.DataFrame, dict]:
    """(per-image scores, protocol) of a finished cell under its current protocol."""
    result = read_json(run_dir / "cells" / cell / "result.json")
    path = run_dir / "cells" / cell / result.get("scores", "")
    if not result.get("scores") or not path.is_file():
        return pd.DataFrame(), result.get("protocol", {})
    df = pd.read_csv(path)
    df["image"] = [f"cells/{cell}/{p}" for p in df["image"]]
    return df, result.get("protocol", {})


def run_frame(run_dir: str | Path) -> tuple[pd.DataFrame, dict]:
    """(frame, protocols by cell) of a run folder's labelled images; an empty frame without labels."""
    from .sample import stored_items
    from .store import read_labels

    run_dir = Path(run_dir)
    labels = read_labels(run_dir)
    if labels.empty:
        return pd.DataFrame(), {}
    items = pd.DataFrame(list(stored_items(run_dir).values()))
    labels = labels[labels["item"].isin(set(items["item"]))] if len(items) else labels.iloc[:0]
    if labels.empty:
        return pd.DataFrame(), {}
    items = items[items["item"].isin(set(labels["item"]))]
    parts, protocols = [], {}
    for cell in sorted(items["cell"].unique()):
        df, protocols[cell] = _cell_scores(run_dir, cell)
        if not df.empty:
            parts.append(df.drop(columns=[c for c in ("cell_id", "prompt", "scored_prompt", "prompt_index", "seed",
                                                      "index") if c in df]))
    scores = pd.concat(parts) if parts else pd.DataFrame(columns=["image"])
    scores = items[["item", "image"]].merge(scores, on="image", how="left").drop(columns="image")
    return build_frame(items, labels, scores), protocols


def export_frame(folder: str | Path, scores: pd.DataFrame) -> pd.DataFrame:
    """The frame of an exported label set (`dcobench label --export`), with `scores` by item."""
    from .store import COLUMNS

    folder = Path(folder)
    items = pd.read_csv(folder / "items.csv", dtype=str, keep_default_na=False)
    labels = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in sorted(folder.glob("labels-*.csv"))]
    labels = pd.concat(labels) if labels else pd.DataFrame(columns=list(COLUMNS))
    return build_frame(items, labels, scores)


def judge_cuts(metrics: list[str], protocol: dict, subjects) -> dict[str, Cut]:
    """The cut of each judge that has one without looking at labels: 0.5 for a binary judge (a
    `Judge`), its backbone's validated cut per subject where the backbone's registration names a
    `cuts` provider (the micro encoders: data/micro/validation.json); others are fitted later."""
    from ..metrics import Judge
    from ..registry import BACKBONES, METRICS

    out = {}
    for m in metrics:
        metric = METRICS.get(m)
        if isinstance(metric, Judge):
            out[m] = Cut(0.5, BINARY)
            continue
        name = (protocol.get("backbones", {}).get(getattr(metric, "role", ""), {}) or {}).get("backbone")
        provider = BACKBONES.meta(name).get("cuts") if name in BACKBONES else None
        if provider is None:
            continue
        if isinstance(provider, str):  # "module:function", imported only when a report needs it
            module, _, attr = provider.partition(":")
            provider = getattr(importlib.import_module(module), attr)
        cuts, source = provider(m)
        if cuts and all(s in cuts for s in subjects):
            out[m] = Cut(cuts, source)
    return out
