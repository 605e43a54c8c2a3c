"""Per-cell image grids: the subject's references on top, then one row per prompt.

    [ label ][ref 0][ref 1]...
    [prompt0][s0 i0][s0 i1][s1 i0]...      one column per (sampling seed, image index)
    [prompt1][s0 i0]...

Looking at the images is the check no metric replaces: a high DINO with the identifier pasted
into every scene, or a high CLIP-T with the subject gone, shows at a glance. Tiles have a fixed
size so grids of different cells line up; tiny suites render 32x32 images, so they are upscaled
with NEAREST (no blur invented), and larger images are downscaled with LANCZOS.

Which image belongs to which prompt comes from scores.csv, else manifest.json (a malformed one is
an error naming it), else the file names (`p00_s0_i1.png`); a missing image file becomes a grey
"missing" tile rather than an error, since the report must still show everything else.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..errors import DcoError
from ..store import atomic_write_bytes, read_json

TILE = 96
GAP = 4
LABEL_W = 300
FONT_SIZE = 14
_NAME = re.compile(r"p(\d+)_s(\d+)_i(\d+)")


@functools.lru_cache(maxsize=4)
def label_font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def grid_size(n_cols: int, n_rows: int, tile: int = TILE) -> tuple[int, int]:
    """Pixel (width, height) of a grid with `n_rows` rows (references included) of `n_cols` tiles."""
    return LABEL_W + n_cols * (tile + GAP) + GAP, GAP + n_rows * (tile + GAP)


def image_records(cell_dir: Path, result: dict) -> list[dict]:
    """[{prompt, prompt_index, seed, index, image}] for the cell's images, from the best source."""
    scores = cell_dir / result["scores"] if result.get("scores") else None
    if scores is not None and scores.is_file():
        with open(scores, newline="") as f:
            rows = list(csv.DictReader(f))
        if rows and {"prompt", "prompt_index", "seed", "index", "image"} <= set(rows[0]):
            return [{"prompt": r["prompt"], "prompt_index": int(r["prompt_index"]), "seed": int(r["seed"]),
                     "index": int(r["index"]), "image": r["image"]} for r in rows]
    manifest = cell_dir / result.get("manifest", "manifest.json")
    if manifest.is_file():
        try:
            return [{"prompt": r["prompt"], "prompt_index": int(r["prompt_index"]), "seed": int(r["seed"]),
                     "index": int(r["index"]), "image": r["file"]} for r in read_json(manifest)["images"]]
        except (KeyError, TypeError, ValueError) as e:
            raise DcoError(f"{manifest}: malformed manifest ({type(e).__name__}: {e}); delete the cell folder and "
                           "rerun `dcobench run` to redo it")
    out = []
    for i, rel in enumerate(result.get("images", [])):
        m = _NAME.search(Path(rel).stem)
        p, s, k = (int(g) for g in m.groups()) if m else (0, 0, i)
        out.append({"prompt": f"prompt {p}", "prompt_index": p, "seed": s, "index": k, "image": rel})
    return out


def grid_layout(run_dir: str | Path, result: dict) -> tuple[list[Path], list[tuple[str, list[Path]]]]:
    """(reference paths, [(row label, image paths in (seed, index) order)] in prompt order)."""
    cell_dir = Path(run_dir) / "cells" / result["cell_id"]
    rows: dict[int, tuple[str, list]] = {}
    for r in sorted(image_records(cell_dir, result), key=lambda r: (r["prompt_index"], r["seed"], r["index"])):
        label, paths = rows.setdefault(r["prompt_index"], (f"#{r['prompt_index']}  {r['prompt']}", []))
        paths.append(cell_dir / r["image"])  # an absolute `image` stays absolute under `/`
    refs = [Path(p) for p in result.get("references", [])]
    return refs, [rows[k] for k in sorted(rows)]


def tile_image(path: Path, tile: int) -> Image.Image:
    out = Image.new("RGB", (tile, tile), (200, 200, 200))
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
    except OSError:
        ImageDraw.Draw(out).text((tile // 2, tile // 2), "missing", fill=(90, 90, 90), font=label_font(11), anchor="mm")
        return out
    scale = tile / max(im.size)
    size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
    im = im.resize(size, Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS)
    out.paste(im, ((tile - size[0]) // 2, (tile - size[1]) // 2))
    return out


def wrap_text(text: str, font, width: int, max_lines: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if font.getlength(trial) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip(".") + " …"
    return lines


def render_grid(run_dir: str | Path, result: dict, tile: int = TILE) -> Image.Image:
    """The grid of one cell as an RGB image (see the module docstring), without writing it."""
    refs, rows = grid_layout(run_dir, result)
    labelled = [(f"references: {result.get('subject', '')} ({len(refs)})", refs)] + rows
    n_cols = max([len(p) for _, p in labelled] + [1])
    canvas = Image.new("RGB", grid_size(n_cols, len(labelled), tile), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    font = label_font()
    line_h = FONT_SIZE + 4
    for r, (label, paths) in enumerate(labelled):
        y = GAP + r * (tile + GAP)
        if r == 0:  # set the references apart from the samples
            draw.rectangle([0, y - GAP // 2, canvas.width, y + tile + GAP // 2 - 1], fill=(238, 242, 248))
        lines = wrap_text(label, font, LABEL_W - 2 * GAP - 4, max(1, tile // line_h))
        top = y + (tile - len(lines) * line_h) // 2
        for i, text in enumerate(lines):
            draw.text((GAP + 2, top + i * line_h), text, fill=(20, 20, 20), font=font)
        for c, path in enumerate(paths):
            canvas.paste(tile_image(path, tile), (LABEL_W + GAP + c * (tile + GAP), y))
    return canvas


def grid_png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def cell_grid(run_dir: str | Path, result: dict, out_dir: str | Path | None = None, tile: int = TILE) -> Image.Image:
    """Render one cell's grid and write it to `<out_dir>/grids/<cell_id>.png` (default RUN/report)."""
    image = render_grid(run_dir, result, tile)
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir) / "report"
    atomic_write_bytes(out_dir / "grids" / f"{result['cell_id']}.png", grid_png(image))
    return image
