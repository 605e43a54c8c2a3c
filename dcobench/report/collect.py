"""Reading a run folder into one table: one row per finished cell.

The report is a pure fold over what `dcobench run` and scoring stored. This module is the only
part of it that reads `result.json` files; everything downstream works on the DataFrame it
returns, so every number in a report can be traced back to a cell folder through `cell_dir`.

Columns:

    cell_id, train_id, method, subject, class_noun, seed   from result.json
    knob          the swept knob's dotted name(s) ("sample.w_con"), "" when nothing is swept
    knob_label    what a reader sees: "w_con=2.0", "default" when nothing is swept
    knob_value    the knob's value as a float when exactly one numeric knob is swept, else NaN;
                  it orders a method's points along its curve
    protocol_id   the scoring protocol's id, None for a cell that is not scored yet
    kind          subject, style, or merge (a `--merge` cell: see merging.py)
    style, merge  a merge cell's style and row ("subject", "style" or the merge method); "" otherwise
    <metric>      one column per metric: the cell's mean over its images
    cell_dir, result_path, scores_path

`df.attrs` carries what does not fit a row: `metrics` (metric names in display order),
`protocols` ({id: protocol dict}) and `run_dir` (the folder, or "a + b" for several).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..errors import DcoError
from ..metrics import metric_meta
from ..store import read_json

# Display order: subject fidelity first, then prompt fidelity, then style; known names before others.
_KIND_ORDER = {"subject": 0, "prompt": 1, "style": 2}
_PREFERRED = ("dino", "clip_i", "dinov2", "clip_t")


def metric_order(names) -> list[str]:
    def key(name):
        meta = metric_meta(name)
        pref = _PREFERRED.index(name) if name in _PREFERRED else len(_PREFERRED)
        return (_KIND_ORDER.get(meta["kind"], 3), pref, name)

    return sorted(set(names), key=key)


def format_value(value) -> str:
    """A knob value as a reader expects it: 2.0 stays "2.0", 500 stays "500"."""
    return str(value)


def knob_fields(knobs: dict) -> tuple[str, str, float]:
    """(dotted names, label, numeric value) for a cell's swept knobs."""
    if not knobs:
        return "", "default", math.nan
    names = sorted(knobs)
    label = ", ".join(f"{n.rsplit('.', 1)[-1]}={format_value(knobs[n])}" for n in names)
    value = math.nan
    if len(names) == 1:
        v = knobs[names[0]]
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            value = float(v)
    return ",".join(names), label, value


def _read_result(path: Path) -> dict:
    try:
        result = read_json(path)
    except (OSError, json.JSONDecodeError) as exc:
        raise DcoError(f"{path}: unreadable result ({exc}); delete that cell folder and rerun `dcobench run`")
    if not isinstance(result, dict) or "method" not in result:
        raise DcoError(f"{path}: not a dcobench result.json; delete that cell folder and rerun `dcobench run`")
    return result


def result_paths(run_dirs: list[Path]) -> list[Path]:
    """Every cells/<id>/result.json of the folders (e.g. one per shard); a cell found in several
    (two shards that both ran it) counts once, from the first folder that has it."""
    found: dict[str, Path] = {}
    for root in run_dirs:
        if not root.is_dir():
            raise DcoError(f"{root}: no such run folder; run `dcobench run --out {root}` first")
        paths = sorted((root / "cells").glob("*/result.json"))
        if not paths:
            raise DcoError(f"{root}: no finished cells (no cells/*/result.json); run `dcobench run --out {root}` first")
        for path in paths:
            found.setdefault(path.parent.name, path)
    return [found[k] for k in sorted(found)]


def load_cells(run_dir: str | Path | list) -> pd.DataFrame:
    """One row per finished cell of `run_dir`, or of several run folders (see the module docstring
    for the columns)."""
    roots = [Path(p) for p in run_dir] if isinstance(run_dir, (list, tuple)) else [Path(run_dir)]
    paths = result_paths(roots)
    rows, metrics, protocols = [], set(), {}
    for path in paths:
        result = _read_result(path)
        cell_dir = path.parent
        knob, label, value = knob_fields(result.get("knobs") or {})
        protocol = result.get("protocol")
        pid = None
        if isinstance(protocol, dict) and protocol.get("id") is not None:
            pid = str(protocol["id"])
            protocols.setdefault(pid, protocol)
        row = {
            "cell_id": result.get("cell_id", cell_dir.name),
            "train_id": result.get("train_id", ""),
            "method": result["method"],
            "subject": result.get("subject", ""),
            "class_noun": result.get("class_noun", ""),
            "seed": result.get("seed"),
            "knob": knob,
            "knob_label": label,
            "knob_value": value,
            "protocol_id": pid,
            "kind": result.get("kind", "subject"),
            "style": result.get("style", ""),
            "merge": result.get("merge", ""),
        }
        # A cell without a protocol id is not scored; its stale metrics (if any) are not trusted.
        for name, stats in (result.get("metrics") or {}).items() if pid else ():
            mean = stats.get("mean") if isinstance(stats, dict) else stats
            row[name] = float(mean) if mean is not None else math.nan
            metrics.add(name)
        scores = result.get("scores")
        row.update(cell_dir=str(cell_dir), result_path=str(path),
                   scores_path=str(cell_dir / scores) if scores else "")
        rows.append(row)

    order = metric_order(metrics)
    df = pd.DataFrame(rows)
    for name in order:
        if name not in df:
            df[name] = math.nan
    front = ["cell_id", "train_id", "method", "subject", "class_noun", "seed", "knob", "knob_label",
             "knob_value", "protocol_id", "kind", "style", "merge"]
    df = df[front + order + ["cell_dir", "result_path", "scores_path"]]
    df = df.sort_values(["method", "knob_value", "knob_label", "subject", "seed", "cell_id"],
                        na_position="last", kind="mergesort").reset_index(drop=True)
    run_name = str(roots[0]) if len(roots) == 1 else " + ".join(r.name for r in roots)
    df.attrs = {"metrics": order, "protocols": protocols, "run_dir": run_name}
    return df
