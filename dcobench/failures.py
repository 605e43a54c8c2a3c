"""Failed units: a training or a cell that raised is recorded in its own folder, and the run goes on.

In a study of thousands of cells one bad unit (a plugin's bug, a loss that goes NaN, an
out-of-memory on one recipe) must cost that unit, not the night. So `units.run_unit` catches
what a training or a cell raises (`belongs_to_unit`: not bad input, not a full disk, which stop the
command with one line as before) and writes, beside where its output would have gone:

    loras/<train_id>/failed.json, traceback.txt   a training that raised (or whose loss was not finite)
    cells/<cell_id>/failed.json, traceback.txt    a cell that raised while sampling or scoring
    cells/<cell_id>/failed.json                   a cell whose LoRA failed to train: it points at the
                                                  training's traceback.txt instead of repeating it

failed.json holds what the end-of-run summary prints: method, subject, seed, the stage, the error's
last line and the traceback file. A cell is still done only when its result.json exists, so a rerun
retries exactly the cells that failed (and the trainings they need) and skips the rest; a retried
unit's failed.json is removed when it starts, so what is left after a run is what failed in it.
`--fail-fast` (`executor.fail_fast`) keeps the old behaviour: the first error stops the run.
"""

from __future__ import annotations

import os
import traceback as tb
from pathlib import Path

from .errors import DcoError
from .store import DISK_ERRORS, FOLDER_ERRORS, atomic_write_bytes, atomic_write_json, read_json

FAILED = "failed.json"
TRACEBACK = "traceback.txt"


def belongs_to_unit(exc: BaseException) -> bool:
    """Whether `exc` is one unit's failure, which the run records and goes past: any exception but
    a DcoError (bad input, a truncated file in the run folder, an unreadable resume state: one line
    and exit 2, as everywhere) other than a `UnitFailure` (a diverged training), and but a file
    system refusing writes (a full or read-only disk fails every unit alike)."""
    if isinstance(exc, DcoError):
        return exc.unit_failure
    if isinstance(exc, OSError) and (exc.errno in DISK_ERRORS or exc.errno in FOLDER_ERRORS):
        return False
    return isinstance(exc, Exception)


class TrainingFailed(Exception):
    """Raised for a cell whose LoRA failed to train in this unit: `record` is the training's."""

    def __init__(self, record: dict):
        super().__init__(record["error"])
        self.record = record


def last_line(exc: BaseException) -> str:
    """The error as one line: a DcoError's message as it is (it names its fix), else 'Type: message'."""
    if isinstance(exc, DcoError):
        return str(exc)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _who(cell) -> dict:
    return {"method": cell.method, "subject": cell.subject.name, "seed": cell.seed, "knobs": dict(cell.knobs),
            "train_id": cell.train_id}


def clear(folder: Path) -> None:
    """Forget an earlier attempt's failure before the unit is tried again."""
    for name in (FAILED, TRACEBACK):
        try:
            os.remove(folder / name)
        except FileNotFoundError:
            pass


def _write(folder: Path, record: dict, exc: BaseException | None) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    if exc is not None:
        text = "".join(tb.format_exception(type(exc), exc, exc.__traceback__))
        atomic_write_bytes(folder / TRACEBACK, text.encode())
    atomic_write_json(folder / FAILED, record)
    return record


def training_failed(root: Path, folder: Path, cell, exc: BaseException) -> dict:
    """Record a training that raised in `folder` (loras/<train_id>/); returns the record."""
    record = {**_who(cell), "unit": "training", "stage": "train", "error": last_line(exc),
              "traceback": str((folder / TRACEBACK).relative_to(root))}
    return _write(folder, record, exc)


def cell_failed(root: Path, folder: Path, cell, exc: BaseException, stage: str) -> dict:
    """Record a cell that raised in `folder` (cells/<cell_id>/): its own traceback, or, when its
    LoRA failed to train, a pointer to the training's."""
    if isinstance(exc, TrainingFailed):
        record = {**_who(cell), "unit": "cell", "cell_id": cell.cell_id, "stage": "train",
                  "error": exc.record["error"], "traceback": exc.record["traceback"]}
        return _write(folder, record, None)
    record = {**_who(cell), "unit": "cell", "cell_id": cell.cell_id, "stage": stage, "error": last_line(exc),
              "traceback": str((folder / TRACEBACK).relative_to(root))}
    return _write(folder, record, exc)


def read(folder: Path) -> dict | None:
    path = folder / FAILED
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def failed_cells(store, cells) -> list[dict]:
    """The records of `cells` that are not done and hold a failure, in the cells' order."""
    out = []
    for cell in cells:
        if store.is_done(cell.cell_id):
            continue
        rec = read(store.cell(cell.cell_id))
        if rec is not None:
            out.append({**rec, "cell_id": cell.cell_id})
    return out


def scan(run_dir: Path) -> list[dict]:
    """Every failed cell of a run folder that has no result.json (what the report lists)."""
    out = []
    for path in sorted((Path(run_dir) / "cells").glob(f"*/{FAILED}")):
        if (path.parent / "result.json").is_file():
            continue
        try:
            out.append({**read_json(path), "cell_id": path.parent.name})
        except (OSError, ValueError):
            continue
    return out


def summary_lines(records: list[dict], root: Path) -> list[str]:
    """One line per failed unit: a training that failed (with how many cells it cost), or a cell
    that failed on its own; each names method, subject, seed, the error's last line and the file
    holding the traceback."""
    groups: dict[str, list[dict]] = {}
    for rec in records:
        groups.setdefault(rec["traceback"], []).append(rec)
    lines = []
    for where, recs in groups.items():
        r = recs[0]
        knobs = "".join(f" {k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(r.get("knobs", {}).items()))
        unit = (f"training {r['train_id']} ({len(recs)} cell{'s' if len(recs) != 1 else ''})" if r["stage"] == "train"
                else f"cell {r['cell_id']} ({r['stage']}{',' if knobs else ''}{knobs})")
        lines.append(f"failed: {r['method']} subject={r['subject']} seed={r['seed']} {unit}: {r['error']} "
                     f"[traceback: {Path(root) / where}]")
    return lines


def exit_on_failures(records: list[dict], out: Path) -> None:
    """For the commands: one line per failed unit on stderr, then exit 1. The finished cells are
    kept, and rerunning the same command retries only the failed ones."""
    if not records:
        return
    import sys

    import typer

    for line in summary_lines(records, out):
        print(line, file=sys.stderr)
    print(f"{len(records)} cell{'s' if len(records) != 1 else ''} failed; finished cells are kept: fix the cause "
          "and rerun the same command to retry only the failed ones", file=sys.stderr)
    raise typer.Exit(1)
