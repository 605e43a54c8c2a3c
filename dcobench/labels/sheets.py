"""The blind sample on paper: numbered contact sheets, a CSV to fill in, and its import.

    DIR/sheet-01.png ...  12 tiles a page (4 x 3): each image enlarged to 256 px with whole pixels,
                          its number, and its prompt below; a page holds one subject's items, with that
                          subject's reference images in a header row
    DIR/labels.csv        sheet,number,item,subject,prompt,subject_answer,prompt_answer (answers empty)
    DIR/README.txt        how to fill it in

Tiles are 256 px (8x a 32 px image): at 160 px a small quilt's quarters could not be told apart
by eye on a screen (found while labelling data/micro/labels). A page holds one subject so its
references sit above every tile they are compared with. Sorting by
subject hides nothing more than the page does anyway (the references show the subject); within a
subject the sample's shuffled order is kept. `import_sheet` reads a filled CSV back into the label
store as the rows the page would have written; importing the same file twice adds nothing.
"""

from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path

from ..errors import DcoError
from ..store import atomic_write_bytes, check_writable
from . import store
from .sample import stored_items

COLS, ROWS, TILE, PAD, REF = 4, 3, 256, 16, 80
TEXT_LINES, LINE = 4, 15
SHEET_COLUMNS = ["sheet", "number", "item", "subject", "prompt", "subject_answer", "prompt_answer"]
README = """\
Blind labelling sheets ({n} images on {pages} sheets)

Each sheet shows the images of one subject: its reference images in the top row, then numbered
tiles, each with the prompt it was made from. For every number, fill in two columns of labels.csv:

  subject_answer  is this the subject of the reference images?           yes / no / unsure
  prompt_answer   does it follow the prompt (the background, placement
                  and style asked for)?                                   yes / no / unsure

y / n / u are accepted too. Leave both empty for an image you did not look at. Do not change the
item column. Then read the answers back into the run:

  dcobench label RUN --import labels.csv --labeller YOUR_NAME

Importing the file again (filled further) adds only the answers that are new.
"""


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one small bitmap font
        return ImageFont.load_default()


def _fit(image, size: int):
    """`image` as a size x size square: whole-pixel enlargement when small, a smooth reduction when large."""
    from PIL import Image

    image = image.convert("RGB")
    method = Image.NEAREST if max(image.size) <= size else Image.LANCZOS
    return image.resize((size, size), method)


def pages(items: list[dict]) -> list[tuple[str, list[dict]]]:
    """(subject, items) per sheet: subjects in name order, COLS x ROWS items a sheet, the sample's order kept."""
    by_subject: dict[str, list[dict]] = {}
    for it in items:
        by_subject.setdefault(it["subject"], []).append(it)
    per = COLS * ROWS
    return [(subject, group[i:i + per]) for subject in sorted(by_subject)
            for group in [by_subject[subject]] for i in range(0, len(group), per)]


def _reference(path: str, run_dir: Path) -> Path:
    return Path(path) if Path(path).is_absolute() else Path(run_dir) / path


def render_sheet(run_dir: Path, title: str, subject: str, items: list[dict], first: int):
    """One sheet as a PIL image; tiles numbered from `first`."""
    from PIL import Image, ImageDraw

    run_dir = Path(run_dir)
    cell_h = TILE + PAD + TEXT_LINES * LINE + PAD
    header_h = 40 + REF + PAD
    width = COLS * (TILE + PAD) + PAD
    rows = -(-len(items) // COLS)  # a last, partly filled sheet is cut to its rows
    sheet = Image.new("RGB", (width, header_h + rows * cell_h), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 10), f"{title}: subject {subject} (reference images)", fill="black", font=_font(18))
    x = PAD
    for ref in items[0]["references"]:
        if x + REF > width:
            break
        with Image.open(_reference(ref, run_dir)) as im:
            sheet.paste(_fit(im, REF), (x, 40))
        draw.rectangle((x - 1, 39, x + REF, 40 + REF), outline="gray")  # a white image on white paper
        x += REF + PAD // 2
    draw.line((0, header_h - PAD // 2, width, header_h - PAD // 2), fill="gray", width=2)
    number_font, text_font = _font(30), _font(12)
    for k, it in enumerate(items):
        x0 = PAD + (k % COLS) * (TILE + PAD)
        y0 = header_h + (k // COLS) * cell_h
        with Image.open(run_dir / it["image"]) as im:
            sheet.paste(_fit(im, TILE), (x0, y0))
        draw.rectangle((x0 - 1, y0 - 1, x0 + TILE, y0 + TILE), outline="gray")
        label = str(first + k)
        box = draw.textbbox((x0 + 4, y0 + 2), label, font=number_font)
        draw.rectangle((box[0] - 4, box[1] - 2, box[2] + 4, box[3] + 2), fill="white", outline="black")
        draw.text((x0 + 4, y0 + 2), label, fill="black", font=number_font)
        lines = textwrap.wrap(it["prompt"], 26)[:TEXT_LINES]
        for j, line in enumerate(lines):
            draw.text((x0, y0 + TILE + 4 + j * LINE), line, fill="black", font=text_font)
    return sheet


def write_sheets(run_dir: Path, sample: dict, out_dir: Path) -> dict:
    """Write the sheets, labels.csv and README.txt into `out_dir`; returns their counts and paths."""
    out_dir = Path(out_dir)
    check_writable(out_dir)
    rows, number = [], 1
    groups = pages(sample["items"])
    for n, (subject, items) in enumerate(groups, start=1):
        name = f"sheet-{n:02d}"
        buf = io.BytesIO()
        render_sheet(run_dir, f"Sheet {n}", subject, items, number).save(buf, format="PNG")
        atomic_write_bytes(out_dir / f"{name}.png", buf.getvalue())
        for it in items:
            rows.append({"sheet": name, "number": number, "item": it["item"], "subject": subject,
                         "prompt": it["prompt"], "subject_answer": "", "prompt_answer": ""})
            number += 1
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=SHEET_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(out_dir / "labels.csv", text.getvalue().encode("utf-8"))
    atomic_write_bytes(out_dir / "README.txt", README.format(n=len(rows), pages=len(groups)).encode())
    return {"sheets": len(groups), "items": len(rows), "csv": out_dir / "labels.csv"}


def import_sheet(run_dir: Path, path: Path, labeller: str, sample: dict | None = None) -> tuple[int, int]:
    """Append a filled labels.csv to RUN/labels/<labeller>.csv; returns (answers appended, answers
    already there). Importing a file again appends nothing new: an answer equal to the labeller's
    latest is skipped, one that differs is a conflict (an import never changes an answer behind the
    labeller's back). Everything is checked before anything is written, so a bad row or a conflict
    leaves the store as it was."""
    path = Path(path)
    known = stored_items(run_dir)
    known.update({it["item"]: it for it in (sample or {}).get("items", [])})
    if not path.is_file():
        raise DcoError(f"{path}: file not found; give the labels.csv written by --sheets")
    wanted: dict[tuple[str, str], tuple[dict, str, int]] = {}  # (item, question) -> (item, answer, line)
    with open(path, newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet may save a BOM
        reader = csv.DictReader(f)
        missing = [c for c in ("item", "subject_answer", "prompt_answer") if c not in (reader.fieldnames or [])]
        if missing:
            raise DcoError(f"{path}: missing column(s) {', '.join(missing)}; fill in the labels.csv written by --sheets")
        for row in reader:
            where = f"{path}: row {reader.line_num}"
            values = {q: store.normal_answer(row.get(f"{q}_answer") or "", f"{where}: {q}_answer")
                      for q in store.QUESTIONS}
            if not any(values.values()):
                continue
            item = known.get((row.get("item") or "").strip())
            if item is None:
                raise DcoError(f"{where}: item {row.get('item')!r} is not in this run's sample; import the sheet "
                               "into the run it was drawn from, with the item column unchanged")
            for q, a in values.items():
                seen = wanted.get((item["item"], q))
                if a and seen and seen[1] != a:
                    raise DcoError(f"{where}: item {item['item']!r} is answered twice ({q}_answer {a!r} here, "
                                   f"{seen[1]!r} in row {seen[2]}); keep one row per item")
                if a:
                    wanted.setdefault((item["item"], q), (item, a, reader.line_num))
    latest = store.answers(run_dir, labeller)
    new = []
    for (item_id, q), (item, a, line) in wanted.items():
        old = latest.get((item_id, q))
        if old is None:
            new.append((item, q, a))
        elif old != a:
            raise DcoError(f"{path}: row {line}: item {item_id!r}: {q}_answer {a!r}, but {labeller} already "
                           f"answered {old!r} in {store.labels_path(run_dir, labeller)}; an import never changes an "
                           "answer: correct the row, change it on the labelling page, or import under another "
                           "--labeller")
    store.record_many(run_dir, labeller, new)
    return len(new), len(wanted) - len(new)
