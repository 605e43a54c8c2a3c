"""The sample people label: a stratified random draw of a run's images, stored once.

A stratum is method x knobs x subject (a merge cell's method is `<method>+<merge row>`, its subject
`<subject>+<style>`), keyed by a stable string such as `dco|sample.w_con=2.0|tent` (`-` for no knob).
`draw` takes `per_stratum` images from each stratum, so a method with many cells (a wide sweep) does
not crowd out the others, then shuffles the whole list, so that the order gives nothing away.
Everything is sorted before the generator is used: the same run and seed give the same sample.

`load_or_draw` stores the sample at `RUN/labels/sample-s<seed>-n<per_stratum>.json` and reads it
back on a later visit: cells that finish after the draw do not reshuffle what is half labelled.
`--budget` draws in two passes instead (`budget.py`), stored beside it as `sample-s<seed>-b<N>-p<pass>.json`.
`blind` is what the labeller may see of an item: the image, the prompt and the references, under
opaque names (a cell folder is named after its method, an image file after its seed).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
from pathlib import Path

from .. import __version__
from ..errors import DcoError
from ..store import atomic_write_json, read_json

FIELDS = ("item", "cell", "image", "prompt", "base_prompt", "subject", "references", "method", "knobs", "stratum",
          "training_seed", "sampling_seed")


def short_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def sample_path(run_dir: Path, per_stratum: int, seed: int) -> Path:
    return Path(run_dir) / "labels" / f"sample-s{seed}-n{per_stratum}.json"


def finished_cells(run_dir: Path) -> list[Path]:
    """The result.json of every finished cell; a folder that holds none is the user's to fix."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DcoError(f"{run_dir}: run folder not found; give a folder written by `dcobench run`")
    found = sorted((run_dir / "cells").glob("*/result.json"))
    if not found:
        raise DcoError(f"{run_dir}: no finished cells (no cells/*/result.json); label a run folder once "
                       "`dcobench run` has finished some cells")
    return found


def stratum_of(result: dict) -> tuple[str, str, str]:
    """(method, subject, key): a merge row is its own method, a subject+style pair its own subject."""
    method, subject = result["method"], result["subject"]
    if result.get("kind") == "merge":
        method, subject = f"{method}+{result.get('merge', 'merge')}", f"{subject}+{result.get('style', '')}"
    knobs = ",".join(f"{k}={v}" for k, v in sorted((result.get("knobs") or {}).items())) or "-"
    return method, subject, f"{method}|{knobs}|{subject}"


def _portable(path: str, run_dir: Path) -> str:
    """A reference path relative to the run when it lies inside it (the run folder can move), else absolute."""
    full = Path(os.path.abspath(path))  # as recorded, made absolute; symlinks kept (resolve would rename them)
    try:
        return full.relative_to(os.path.abspath(run_dir)).as_posix()
    except ValueError:
        return str(full)


def cell_items(result_path: Path, run_dir: Path) -> list[dict]:
    """One item per stored image of a finished cell, from its manifest (what produced each image)."""
    cell_dir = result_path.parent
    cell_id = cell_dir.name  # the folder, not result["cell_id"]: older results lack it
    result = read_json(result_path)
    manifest_path = cell_dir / result.get("manifest", "manifest.json")
    entries = read_json(manifest_path)["images"] if manifest_path.is_file() else \
        [{"file": f} for f in result.get("images", [])]
    method, subject, key = stratum_of(result)
    refs = [_portable(p, run_dir) for p in result.get("references", [])]
    out = []
    for entry in entries:
        if not (cell_dir / entry["file"]).is_file():
            continue
        out.append({
            "item": short_id(f"{cell_id}/{entry['file']}"), "cell": cell_id,
            "image": f"cells/{cell_id}/{entry['file']}", "prompt": entry.get("prompt", ""),
            "base_prompt": entry.get("base_prompt", ""), "subject": subject, "references": refs,
            "method": method, "knobs": result.get("knobs") or {}, "stratum": key,
            "training_seed": result.get("seed"), "sampling_seed": entry.get("seed"),
        })
    return out


def strata(run_dir: Path) -> dict[str, list[dict]]:
    """stratum key -> its items, keys and items sorted (the generator must see them in a fixed order)."""
    run_dir = Path(run_dir)
    out: dict[str, list[dict]] = {}
    for path in finished_cells(run_dir):
        for item in cell_items(path, run_dir):
            out.setdefault(item["stratum"], []).append(item)
    if not out:
        raise DcoError(f"{run_dir}: its finished cells hold no images (cells/*/images/); nothing to label")
    return {key: sorted(out[key], key=lambda it: (it["cell"], it["image"])) for key in sorted(out)}


def draw(run_dir: Path, per_stratum: int = 8, seed: int = 0) -> dict:
    """Draw `per_stratum` images (all when fewer) from every stratum of the run, then shuffle."""
    import numpy as np

    run_dir = Path(run_dir)
    if per_stratum < 1:
        raise DcoError(f"--per-stratum {per_stratum}: must be at least 1")
    pools = strata(run_dir)
    rng = np.random.default_rng(seed)
    items = []
    for key, pool in pools.items():
        picked = rng.choice(len(pool), size=min(per_stratum, len(pool)), replace=False)
        items += [pool[i] for i in sorted(picked)]
    items = [items[i] for i in rng.permutation(len(items))]
    return {"seed": seed, "per_stratum": per_stratum, "run": str(run_dir), "version": __version__,
            "drawn": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "items": items}


def load_or_draw(run_dir: Path, per_stratum: int = 8, seed: int = 0) -> dict:
    """The stored sample of this seed and size, drawn and stored (atomically) on the first visit."""
    path = sample_path(run_dir, per_stratum, seed)
    if path.is_file():
        return read_json(path)
    finished_cells(run_dir)  # a missing run is named as such before anything is written into it
    sample = draw(run_dir, per_stratum, seed)
    atomic_write_json(path, sample)
    return sample


def sample_files(run_dir: Path) -> list[Path]:
    """Every stored sample: the per-stratum ones, then the budgeted passes (`budget.py`) in name
    order, so a pass-2 file, which holds every item of both passes with its final inclusion
    probability `pi`, is read after its pass 1 and its `pi` is the one that stays."""
    folder = Path(run_dir) / "labels"
    return sorted(folder.glob("sample-s*-n*.json")) + sorted(folder.glob("sample-s*-b*-p*.json"))


def stored_items(run_dir: Path) -> dict[str, dict]:
    """item id -> item over every sample stored in the run (any seed, size or budget): what an import
    may name, and what the estimator reads `pi` from (a later file's copy of an item wins)."""
    out = {}
    for path in sample_files(run_dir):
        out.update({it["item"]: it for it in read_json(path)["items"]})
    return out


def reference_url(path: str) -> str:
    """A reference image's opaque address on the page (its path may name the subject's folder, no more)."""
    return f"img/ref/{short_id(path)}{Path(path).suffix.lower()}"


def blind(item: dict) -> dict:
    """What a labeller sees: the image and the prompt and the subject's references. Not the method,
    knobs, stratum, seeds or cell: the image is addressed by the item id, not by its file name."""
    return {"item": item["item"], "image": f"img/item/{item['item']}{Path(item['image']).suffix.lower()}",
            "prompt": item["prompt"], "references": [reference_url(p) for p in item["references"]]}
