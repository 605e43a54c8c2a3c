"""The label store: one append-only CSV per labeller, `RUN/labels/<labeller>.csv`.

    item,cell,image,question,answer,time,labeller

`question` is `subject` (is this the subject?) or `prompt` (does it follow the prompt: the
background, placement and style asked for); `answer` is `yes`, `no` or `unsure`; `time` is ISO-8601
UTC. A changed answer is a new row, never an edit, so the file is also the history of a labeller's
mind; `answers` keeps the latest row of each (item, question).

Each write reads the file, appends and renames a complete new file into place (`store.atomic_write_bytes`)
under a file lock, so a killed server or two pages open at once never leave a torn or lost row.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import re
from pathlib import Path

from ..errors import DcoError
from ..store import atomic_write_bytes

COLUMNS = ["item", "cell", "image", "question", "answer", "time", "labeller"]
QUESTIONS = {
    "subject": "Is this the subject?",
    "prompt": "Does it follow the prompt (the background, placement and style asked for)?",
}
ANSWERS = ("yes", "no", "unsure")
SHORT = {"y": "yes", "n": "no", "u": "unsure"}  # the keys of the page; also accepted in a filled sheet
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def valid_labeller(name: str) -> bool:
    """A labeller name is also a file name: letters, digits, - and _ only."""
    return isinstance(name, str) and bool(_NAME.match(name))


def check_labeller(name: str) -> str:
    if not valid_labeller(name):
        raise DcoError(f"--labeller {name!r}: use letters, digits, - and _ only (it names RUN/labels/<labeller>.csv)")
    return name


def check_question(question: str) -> str:
    if not isinstance(question, str) or question not in QUESTIONS:
        raise DcoError(f"question {question!r}: expected one of {', '.join(QUESTIONS)}")
    return question


def normal_answer(text: str, where: str = "answer") -> str | None:
    """'yes' / 'no' / 'unsure' from any of those or y / n / u (any case); None for an empty cell."""
    value = str(text).strip().lower()
    if not value:
        return None
    value = SHORT.get(value, value)
    if value not in ANSWERS:
        raise DcoError(f"{where}: {str(text).strip()!r} is not an answer; write yes, no or unsure (or y, n, u)")
    return value


def labels_path(run_dir: Path, labeller: str) -> Path:
    return Path(run_dir) / "labels" / f"{check_labeller(labeller)}.csv"


def read_rows(path: Path) -> list[dict]:
    """The rows of one labeller's CSV; a file with other columns is not a label file and is refused."""
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != COLUMNS:
            raise DcoError(f"{path}: not a label file (columns {reader.fieldnames}, expected {','.join(COLUMNS)}); "
                           "move it out of the labels folder")
        return list(reader)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def record_many(run_dir: Path, labeller: str, entries) -> list[dict]:
    """Append one row per (item, question, answer) in one atomic rewrite; all are checked first, so
    a bad answer writes nothing. Returns the rows written."""
    from filelock import FileLock

    path = labels_path(run_dir, labeller)
    rows = []
    for item, question, answer in entries:
        value = SHORT.get(answer, answer) if isinstance(answer, str) else None
        if value not in ANSWERS:
            raise DcoError(f"answer {answer!r}: expected one of {', '.join(ANSWERS)}")
        rows.append({"item": item["item"], "cell": item["cell"], "image": item["image"],
                     "question": check_question(question), "answer": value, "time": _now(), "labeller": labeller})
    if not rows:
        return rows
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.parent / f".{labeller}.lock")):
        old = read_rows(path)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(old + rows)
        atomic_write_bytes(path, buf.getvalue().encode("utf-8"))
    return rows


def record(run_dir: Path, labeller: str, item: dict, question: str, answer: str) -> dict:
    """Append one answer (a changed answer is a new row) and return the row as saved."""
    return record_many(run_dir, labeller, [(item, question, answer)])[0]


def answers(run_dir: Path, labeller: str) -> dict[tuple[str, str], str]:
    """(item, question) -> the labeller's latest answer."""
    return {(r["item"], r["question"]): r["answer"] for r in read_rows(labels_path(run_dir, labeller))}


def read_labels(run_dir: Path):
    """Every labeller's rows as one DataFrame (the columns above, as text). CSVs in the labels folder
    with other columns (a copied sheet form, a note) are not label files and are left out."""
    import pandas as pd

    frames = []
    for path in sorted((Path(run_dir) / "labels").glob("*.csv")):
        with open(path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if header == COLUMNS:
            frames.append(pd.read_csv(path, dtype=str, keep_default_na=False))
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]
