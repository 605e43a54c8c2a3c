"""A labelled sample out of its run folder, small enough to commit.

    DIR/images/<item>.png               each sampled image, a byte copy
    DIR/references/<subject>/<name>     the references of each subject in the sample, byte copies
    DIR/items.csv                       every item field but the references (knobs as compact JSON)
    DIR/labels-<labeller>.csv           each labeller's CSV, as stored
    DIR/sample.json                     the sample as drawn (seed, size, date, version, items)

Byte copies, not re-encoded images: an agreement computed later on the export must see the pixels
the labellers saw and the judges scored.

`attach_export` is the way back: it puts an exported set's sample and labels into a run folder that
holds the same cells (a rerun of the same study), so that the run's study report is label-corrected
by them (`dcobench label RUN --attach DIR`).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from ..errors import DcoError
from ..store import atomic_write_bytes, check_writable, read_json, to_json
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


def _sample_name(sample: dict, folder: Path) -> str:
    """The file name `stored_items` reads the sample under, from what the draw recorded."""
    if "budget" in sample and "pass" in sample:
        return f"sample-s{sample['seed']}-b{sample['budget']}-p{sample['pass']}.json"
    if "seed" in sample and "per_stratum" in sample:
        return f"sample-s{sample['seed']}-n{sample['per_stratum']}.json"
    raise DcoError(f"{folder / 'sample.json'}: records neither seed and per_stratum nor budget and pass; it is not "
                   "a sample written by `dcobench label --export`")


def attach_export(run_dir: Path, folder: Path) -> dict:
    """Put an exported label set (`export_sample`'s folder) into RUN/labels/: its sample under the
    name it was drawn with, and each labeller's rows not already there. Every item must name an image
    of this run (the same cells: a rerun of the same study); items whose bytes differ from the
    exported copy are counted (another CPU model or thread count draws other bits)."""
    run_dir, folder = Path(run_dir), Path(folder)
    if not (folder / "sample.json").is_file():
        raise DcoError(f"--attach {folder}: no sample.json; give a folder written by `dcobench label RUN --export DIR`")
    sample = read_json(folder / "sample.json")
    missing = [it for it in sample["items"] if not (run_dir / it["image"]).is_file()]
    if missing:
        raise DcoError(f"--attach {folder}: {len(missing)} of its {len(sample['items'])} images are not in {run_dir} "
                       f"(e.g. {missing[0]['image']}); its labels are of another run: attach them to a run of the "
                       "same study, with the same seeds")
    differ = 0
    for it in sample["items"]:
        copy = folder / "images" / f"{it['item']}{Path(it['image']).suffix}"
        differ += copy.is_file() and copy.read_bytes() != (run_dir / it["image"]).read_bytes()
    target = run_dir / "labels" / _sample_name(sample, folder)
    if target.is_file() and read_json(target)["items"] != sample["items"]:
        raise DcoError(f"--attach {folder}: {target} holds another draw under the same name; move it away first")
    atomic_write_bytes(target, to_json(sample).encode())
    added = 0
    for path in sorted(folder.glob("labels-*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if not rows or rows[0] != store.COLUMNS:
            raise DcoError(f"--attach {path}: not a label file (its header is not {','.join(store.COLUMNS)})")
        dest = run_dir / "labels" / f"{path.name[len('labels-'):]}"
        have = []
        if dest.is_file():
            with open(dest, newline="", encoding="utf-8") as f:
                have = list(csv.reader(f))[1:]
        seen = {tuple(r) for r in have}
        new = [r for r in rows[1:] if tuple(r) not in seen]
        added += len(new)
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([store.COLUMNS, *have, *new])
        atomic_write_bytes(dest, buf.getvalue().encode("utf-8"))
    return {"items": len(sample["items"]), "sample": target, "rows": added, "differ": differ}
