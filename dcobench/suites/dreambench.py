"""DreamBench (Ruiz et al. 2023): the google/dreambooth dataset layout and its prompt protocol.

    DATA/dataset/<subject>/*.jpg
    DATA/dataset/prompts_and_classes.txt      (DATA may also be the dataset folder itself)

`prompts_and_classes.txt` is written as Python, not as data: a `subject_name,class` table, then
two `prompt_list = [...]` blocks of `'a {0} {1} in the snow'.format(unique_token, class_token)`
lines, one for objects and one for live subjects. It is parsed as text, never executed. Live
subjects (the cats and dogs) get the live prompts, everything else the object prompts; the
paper's protocol is 25 prompts x 4 images per prompt per subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import DcoError
from ..models.pipeline import native_resolution
from ..registry import SUITES
from .base import Suite, load_subject

LIVE_CLASSES = {"cat", "dog"}
PROMPT = re.compile(r"""^\s*(['"])(.*?)\1\.format\(\s*unique_token\s*,\s*class_token\s*\)\s*,?\s*$""")


@dataclass
class PromptFile:
    classes: dict[str, str]  # subject folder name -> class noun
    object_prompts: list[str]  # with {identifier} and {class_noun} placeholders
    live_prompts: list[str]

    def prompts_for(self, class_noun: str) -> list[str]:
        return self.live_prompts if class_noun in LIVE_CLASSES else self.object_prompts


def parse_prompts_and_classes(path: str | Path) -> PromptFile:
    path = Path(path)
    if not path.is_file():
        raise DcoError(f"{path}: not found; DreamBench's dataset folder holds prompts_and_classes.txt")
    classes: dict[str, str] = {}
    lists: dict[str, list[str]] = {"object": [], "live": []}
    section = None
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        low = line.lower()
        if low == "classes":
            section = "classes"
        elif low == "object prompts":
            section = "object"
        elif low == "live subject prompts":
            section = "live"
        elif not line or low == "prompts" or line.startswith(("prompt_list", "]")) or low == "subject_name,class":
            continue
        elif section == "classes":
            name, sep, noun = line.partition(",")
            if not sep:
                raise DcoError(f"{path}:{n}: expected 'subject_name,class' (got {line!r})")
            classes[name.strip()] = noun.strip()
        elif section in lists:
            m = PROMPT.match(line)
            if not m:
                raise DcoError(f"{path}:{n}: expected 'a {{0}} {{1}} ...'.format(unique_token, class_token) (got {line!r})")
            lists[section].append(m.group(2).replace("{0}", "{identifier}").replace("{1}", "{class_noun}"))
    if not classes or not lists["object"] or not lists["live"]:
        raise DcoError(f"{path}: found no Classes table or no Object / Live Subject prompt lists; is it DreamBench's file?")
    return PromptFile(classes, lists["object"], lists["live"])


def dataset_root(data: str | Path) -> Path:
    data = Path(data)
    for root in (data / "dataset", data):
        if (root / "prompts_and_classes.txt").is_file():
            return root
    raise DcoError(f"{data}: no prompts_and_classes.txt in it or in its dataset/ folder; pass the google/dreambooth "
                   "checkout (or its dataset folder) with data=PATH")


@SUITES.register("dreambench", description="DreamBench (google/dreambooth layout); needs data=PATH and model=ID_OR_PATH")
def build(data: str = "", model: str = "", identifier: str = "sks", resolution: int = 0) -> Suite:
    if not data:
        raise DcoError("suite dreambench: no data folder; pass --data PATH (a google/dreambooth checkout)")
    if not model:
        raise DcoError("suite dreambench: no base model; pass --model ID_OR_PATH (e.g. a diffusers SD1.5, SDXL or SD3 folder)")
    root = dataset_root(data)
    spec = parse_prompts_and_classes(root / "prompts_and_classes.txt")
    subjects = []
    for name, noun in spec.classes.items():
        if (root / name).is_dir():
            subjects.append(load_subject(root / name, class_noun=noun, identifier=identifier,
                                         prompts=spec.prompts_for(noun), name=name))
    if not subjects:
        raise DcoError(f"{root}: none of the {len(spec.classes)} subjects listed in prompts_and_classes.txt has a folder")
    return Suite(
        name="dreambench",
        model=model,
        resolution=resolution or native_resolution(model),
        subjects=subjects,
        defaults={"sample": {"images_per_prompt": 4, "seeds": [0]}},
        description=f"DreamBench: {len(subjects)} subjects from {root}",
    )
