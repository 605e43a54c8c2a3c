"""Suites and subjects.

A suite names a base model (a diffusers folder or hub id), its subjects and their evaluation
prompts. A subject is a folder of reference images, a class noun and an identifier token, with
optional per-image captions (`<image>.txt`, which must contain the identifier) and an optional
`subject.yaml` (keys: name, class_noun, identifier, kind, prompts).

The base prompt, which DCO's reference pass and consistency guidance see, is the caption with the
class noun in place of the identifier; "sks dog" collapses to "dog" rather than "dog dog".
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import load_yaml
from ..errors import DcoError, did_you_mean
from ..models.pipeline import native_resolution

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
MIN_SIDE = 16  # pixels: a reference smaller than this holds no subject
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
DEFAULT_CAPTION = {"subject": "a photo of {identifier} {class_noun}", "style": "a picture in {identifier} style"}


def base_prompt(text: str, identifier: str, class_noun: str) -> str:
    """The caption with the class noun in place of the identifier."""
    if not identifier:
        return text
    ident = re.escape(identifier)
    out = re.sub(rf"\b{ident}\s+{re.escape(class_noun)}\b", class_noun, text) if class_noun else text
    out = re.sub(rf"\b{ident}\b", class_noun, out)
    if class_noun[:1].lower() in tuple("aeiou"):  # "a sks orange square" -> "an orange square", as captioned
        out = re.sub(rf"\b([Aa]) (?={re.escape(class_noun)}\b)", r"\1n ", out)
    return " ".join(out.split())


@dataclass
class Subject:
    name: str
    root: Path
    class_noun: str
    identifier: str
    images: list[Path]
    captions: list[str]
    prompts: list[str]
    kind: str = "subject"
    base_captions: list[str] = field(default_factory=list)

    def base(self, prompt: str) -> str:
        return base_prompt(prompt, self.identifier, self.class_noun)

    def with_template_captions(self, template: str = "") -> "Subject":
        """This subject with one template caption for every image (default: its kind's template)."""
        text = (template or DEFAULT_CAPTION.get(self.kind, DEFAULT_CAPTION["subject"])).format(
            identifier=self.identifier, class_noun=self.class_noun)
        if self.identifier not in text:
            raise DcoError(f"train.caption_template '{template}': it lacks {{identifier}}; e.g. 'a {{identifier}} "
                           "{class_noun}'")
        n = len(self.images)
        return dataclasses.replace(self, captions=[text] * n,
                                   base_captions=[base_prompt(text, self.identifier, self.class_noun)] * n)

    @functools.cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        for img, cap in zip(self.images, self.captions):
            h.update(img.name.encode())
            h.update(img.read_bytes())
            h.update(cap.encode())
        return h.hexdigest()[:16]

    def fingerprint(self) -> str:
        """Content hash of the images and captions: a changed reference invalidates its cells.
        Read once per loaded subject: cell and train ids ask for it many times."""
        return self._fingerprint


@dataclass
class Suite:
    name: str
    model: str
    resolution: int
    subjects: list[Subject]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    # Style references that are only trained to be merged with a subject (`dcobench run --merge`);
    # entries of `subjects` with kind "style" are styles too, and also get their own cells.
    styles: list[Subject] = field(default_factory=list)
    # Subjects a run trains only when `subjects=` names them (a study's extra subjects): the
    # default run keeps its subjects, and naming one of these is no error.
    reserve: list[Subject] = field(default_factory=list)

    def select(self, names: list[str]) -> list[Subject]:
        """The named subjects (all when `names` is empty). A style of `styles` may be named too: it
        is then a personalization target of its own (kind style, scored against its references)."""
        if not names:
            return list(self.subjects)
        by_name = {s.name: s for s in self.styles + self.reserve + self.subjects}
        for n in names:
            if n not in by_name:
                raise DcoError(f"subjects: suite '{self.name}' has no subject '{n}'; {did_you_mean(n, by_name)}")
        return [by_name[n] for n in names]

    def merge_styles(self, names: list[str]) -> list[Subject]:
        """The styles `--merge` pairs with each subject: `styles` plus kind-style subjects."""
        every = {s.name: s for s in self.styles + [s for s in self.subjects if s.kind == "style"]}
        if not names:
            return list(every.values())
        for n in names:
            if n not in every:
                raise DcoError(f"styles: suite '{self.name}' has no style '{n}'; {did_you_mean(n, every) if every else 'it has none'}")
        return [every[n] for n in names]


def check_image(path: Path) -> None:
    """Decode a reference image once, refusing what training would silently get wrong: a truncated
    file, CMYK (no colour management here), 16-bit or float channels (clipped by RGB conversion),
    animations (only the first frame would train), a tiny image, and one too large to decode safely
    (checked from the header, before any pixel is decoded)."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # refused below, by size
            with Image.open(path) as im:
                w, h = im.size
                problem = None
                if w * h > Image.MAX_IMAGE_PIXELS:
                    problem = (f"is {w}x{h} pixels, over the {Image.MAX_IMAGE_PIXELS // 10**6} MP that are decoded "
                               "safely; downscale it (training resizes it to the suite's resolution anyway)")
                elif min(w, h) < MIN_SIDE:
                    problem = f"is {w}x{h} pixels; use a reference image at least {MIN_SIDE} px on each side"
                elif getattr(im, "n_frames", 1) > 1:
                    problem = f"is animated ({im.n_frames} frames); save the frame you mean as a PNG or JPEG"
                elif im.mode == "CMYK":
                    problem = "is CMYK; convert it to RGB (sRGB), e.g. `convert in.jpg -colorspace sRGB out.png`"
                elif im.mode in HIGH_BIT_MODES:
                    problem = (f"has {im.mode} pixels (16-bit or float), which RGB conversion clips; save it "
                               "as an 8-bit RGB PNG or JPEG")
                if problem:
                    raise DcoError(f"{path}: {problem}")
                im.load()  # a truncated file fails here, not in the middle of a run
    except DcoError:
        raise
    except Image.DecompressionBombError:
        raise DcoError(f"{path}: the image is too large to decode safely; downscale it")
    except Image.UnidentifiedImageError:
        what = "an empty file (0 bytes)" if path.stat().st_size == 0 else "not an image format Pillow can read"
        raise DcoError(f"{path}: cannot read image ({what}); replace or delete the file")
    except Exception as e:
        raise DcoError(f"{path}: cannot read image ({type(e).__name__}: {' '.join(str(e).split())[:80]}); "
                       "replace or delete the file")


def load_subject(
    folder: str | Path,
    class_noun: str | None = None,
    identifier: str | None = None,
    prompts: list[str] | None = None,
    name: str | None = None,
    kind: str | None = None,
) -> Subject:
    folder = Path(folder)
    if not folder.is_dir():
        raise DcoError(f"{folder}: subject folder not found; create it with the reference images or fix the path")
    meta = {}
    meta_file = folder / "subject.yaml"
    if meta_file.is_file():
        meta = load_yaml(meta_file)
        unknown = set(meta) - {"name", "class_noun", "identifier", "kind", "prompts"}
        if unknown:
            raise DcoError(f"{meta_file}: unknown key '{sorted(unknown)[0]}'; allowed: name, class_noun, identifier, kind, prompts")
    class_noun = class_noun or meta.get("class_noun")
    identifier = identifier or meta.get("identifier") or "sks"
    kind = kind or meta.get("kind", "subject")
    if not class_noun:
        raise DcoError(f"{folder}: no class noun; add `class_noun: dog` to {meta_file} or give it in the suite")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DcoError(f"{folder}: no reference images ({', '.join(IMAGE_EXTS)}); add 3 to 6 images of the subject")
    captions, bases = [], []
    default = DEFAULT_CAPTION.get(kind, DEFAULT_CAPTION["subject"])
    for img in images:
        check_image(img)
        cap_file = img.with_suffix(".txt")
        cap = cap_file.read_text().strip() if cap_file.is_file() else default.format(identifier=identifier, class_noun=class_noun)
        if identifier not in cap:
            raise DcoError(f"{cap_file}: caption does not contain the identifier '{identifier}'; add it")
        base_file = img.with_suffix(".base.txt")
        captions.append(cap)
        bases.append(base_file.read_text().strip() if base_file.is_file() else base_prompt(cap, identifier, class_noun))
    prompts = prompts or meta.get("prompts") or []
    prompts = [p.format(identifier=identifier, class_noun=class_noun) for p in prompts]
    return Subject(
        name=name or meta.get("name") or folder.name,
        root=folder,
        class_noun=class_noun,
        identifier=identifier,
        images=images,
        captions=captions,
        prompts=prompts,
        kind=kind,
        base_captions=bases,
    )


SUITE_KEYS = {"name", "model", "resolution", "subjects", "subjects_dir", "styles", "prompts", "defaults", "description"}


def load_suite_file(path: str | Path) -> Suite:
    """A suite described by a YAML file; relative paths are relative to the file."""
    path = Path(path)
    if not path.is_file():
        raise DcoError(f"suite '{path}': not a registered suite name nor a YAML file; see `dcobench ls`")
    spec = load_yaml(path)
    unknown = set(spec) - SUITE_KEYS
    if unknown:
        raise DcoError(f"{path}: unknown key '{sorted(unknown)[0]}'; allowed: {', '.join(sorted(SUITE_KEYS))}")
    if "model" not in spec:
        raise DcoError(f"{path}: no `model`; give a diffusers folder or hub id")
    here = path.parent
    model = str(spec["model"])
    if (here / model).exists():
        model = str(here / model)
    prompts = spec.get("prompts") or []

    def entries(key: str, kind: str | None = None) -> list[Subject]:
        out = []
        for entry in spec.get(key) or []:
            entry = dict(entry) if isinstance(entry, dict) else {"path": entry}
            folder = here / entry.pop("path", entry.get("name", ""))
            if kind:
                entry["kind"] = kind
            out.append(load_subject(folder, **{k: entry.get(k) for k in ("class_noun", "identifier", "name", "kind")},
                                    prompts=entry.get("prompts") or (prompts if kind is None else None)))
        return out

    subjects = entries("subjects")
    styles = entries("styles", kind="style")
    if spec.get("subjects_dir"):
        root = here / spec["subjects_dir"]
        if not root.is_dir():
            raise DcoError(f"{path}: subjects_dir '{root}' not found; fix the path")
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            subjects.append(load_subject(folder, prompts=prompts or None))
    if not subjects:
        raise DcoError(f"{path}: no subjects; add `subjects:` or `subjects_dir:`")
    for s in subjects:
        if not s.prompts:
            raise DcoError(f"{s.root}: no evaluation prompts; add `prompts:` to the suite or the subject.yaml")
    return Suite(
        name=str(spec.get("name", path.stem)),
        model=model,
        resolution=int(spec.get("resolution") or native_resolution(model)),
        subjects=subjects,
        defaults=spec.get("defaults") or {},
        description=str(spec.get("description", "")),
        styles=styles,
    )
