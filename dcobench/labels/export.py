"""A labelled sample out of its run folder, small enough to commit.

    DIR/images/<item>.png               each sampled image, a byte copy
    DIR/references/<subject>/<name>     the references of each subject in the sample, byte copies
    DIR/items.csv                       every item field but the references (knobs as compact JSON)
    DIR/labels-<labeller>.csv           each labeller's CSV, as stored
    DIR/sample.json                     the sample as drawn (seed, size, date, version, items)

Byte copies, not re-encoded images: an agreement computed later on the export must see the pixels
the labellers saw and the judges scored.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..store import atomic_write_bytes, check_writable, to_json
from . import store
from .sample import FIELDS

ITEM_COLUMNS = [f for f in FIELDS if f != "references"]


def _copy(src: Path, dst: Path) -> None:
    atomic_write_bytes(dst, Path(src).read_bytes())


def items_csv(items: list[dict]) -> bytes:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=ITEM_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for it in items:
        writer.writerow({**it, "knobs": json.dumps(it["knobs"], sort_keys=True, separators=(",", ":"))})
    return buf.getvalue().encode("utf-8")


def export_sample(run_dir: Path, sample: dict, out_dir: Path) -> dict:
    """Copy the sample, its references and every label file into `out_dir`; returns the counts."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_writable(out_dir)
    refs: dict[Path, Path] = {}
    for it in sample["items"]:
        src = run_dir / it["image"]
        _copy(src, out_dir / "images" / f"{it['item']}{src.suffix}")
        for ref in it["references"]:
            path = Path(ref) if Path(ref).is_absolute() else run_dir / ref
            refs[path] = out_dir / "references" / it["subject"] / path.name
    for src, dst in sorted(refs.items()):
        _copy(src, dst)
    atomic_write_bytes(out_dir / "items.csv", items_csv(sample["items"]))
    atomic_write_bytes(out_dir / "sample.json", to_json(sample).encode())
    labellers = []
    for path in sorted((run_dir / "labels").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            if next(csv.reader(f), None) != store.COLUMNS:
                continue  # not a label file (a copied sheet form)
        _copy(path, out_dir / f"labels-{path.stem}.csv")
        labellers.append(path.stem)
    return {"images": len(sample["items"]), "references": len(refs), "labellers": labellers}
