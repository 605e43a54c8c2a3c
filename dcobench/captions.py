"""`dcobench caption`: comprehensive per-image captions for a subject folder.

The paper trains on one caption per reference image that describes the subject, its attributes,
the background and the style. An image-to-text model (anything transformers'
AutoModelForImageTextToText loads that captions from pixels alone: BLIP, BLIP-2, GIT, a
VisionEncoderDecoder...) describes the image; the identifier is then put in
front of the class noun ("a dog on the grass" -> "a sks dog on the grass"), or the caption is
prefixed with "a photo of sks dog, " when the model did not name the class. Without a model the
template "a photo of {identifier} {class_noun}" is written. Existing caption files are never
overwritten without --force.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import DcoError
from .store import atomic_write_bytes
from .suites.base import IMAGE_EXTS, check_image

TEMPLATE = "a photo of {identifier} {class_noun}"


def insert_identifier(text: str, identifier: str, class_noun: str) -> str:
    text = " ".join(text.strip().split())
    if re.search(rf"\b{re.escape(identifier)}\b", text):
        return text
    pattern = re.compile(rf"\b{re.escape(class_noun)}\b", re.IGNORECASE)
    if pattern.search(text):
        return pattern.sub(lambda m: f"{identifier} {m.group(0)}", text, count=1)
    return f"a photo of {identifier} {class_noun}, {text}" if text else TEMPLATE.format(identifier=identifier,
                                                                                           class_noun=class_noun)


def _captioner(model: str, device: str, max_new_tokens: int):
    """Load any image-to-text model through transformers' auto classes (BLIP, BLIP-2, GIT,
    VisionEncoderDecoder...), as `from_pretrained` on a folder or cached hub id."""
    import torch
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer

    try:
        net = AutoModelForImageTextToText.from_pretrained(model).to(device).eval()
        processor = AutoImageProcessor.from_pretrained(model)
        tokenizer = AutoTokenizer.from_pretrained(model)
    except Exception as e:
        raise DcoError(f"--model '{model}': cannot load an image-to-text model ({type(e).__name__}); pass a local "
                       "folder or cached hub id of a captioning model (e.g. BLIP), or leave --model out for the template")

    @torch.no_grad()
    def run(images):
        pixels = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        ids = net.generate(pixel_values=pixels, max_new_tokens=max_new_tokens)
        return tokenizer.batch_decode(ids, skip_special_tokens=True)

    return run


def caption_folder(folder: str | Path, class_noun: str, identifier: str, model: str | None = None,
                   force: bool = False, device: str = "cpu", max_new_tokens: int = 30) -> dict[str, list[Path]]:
    """Write `<image>.txt` beside each image; returns {'written': [...], 'kept': [...]}."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise DcoError(f"{folder}: subject folder not found; pass the folder that holds the reference images")
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not images:
        raise DcoError(f"{folder}: no images ({', '.join(IMAGE_EXTS)}) to caption")
    for p in images:
        check_image(p)
    todo = [p for p in images if force or not p.with_suffix(".txt").is_file()]
    kept = [p.with_suffix(".txt") for p in images if p not in todo]
    if model:
        run = _captioner(model, device, max_new_tokens)
        texts = run([Image.open(p).convert("RGB") for p in todo]) if todo else []
    else:
        texts = [""] * len(todo)
    written = []
    for path, text in zip(todo, texts):
        caption = insert_identifier(text, identifier, class_noun)
        atomic_write_bytes(path.with_suffix(".txt"), (caption + "\n").encode())
        written.append(path.with_suffix(".txt"))
    return {"written": written, "kept": kept}
