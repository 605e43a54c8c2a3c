"""Class images for DreamBooth's prior preservation, generated once and shared.

DreamBooth with prior preservation trains on the subject's references and, alongside, on images
of the bare class (`a photo of dog`) drawn from the base model, so the LoRA does not pull every
dog toward the subject. Those images depend only on the base model, the class prompt and the
sampler, never on the method, subject or run, so they live in a content-addressed folder of the
cache:

    <cache>/class_images/<sha1(key)[:16]>/0000.png ... manifest.json

where the key is `{model_id, class_prompt, count, seed, resolution, sampler: {scheduler, steps,
cfg_scale}}`. Every method, cell and run asking for the same images gets the same folder, and a
changed knob gets a new one instead of silently reusing stale images. The batch size is not part
of the key: each image's noise comes from its own generator (`noise_seed = 1000 * seed + k`), so
batching does not change the images.

A folder is built under a temporary name and renamed into place only once every image and the
manifest are written, so a folder under its final name is complete; one process at a time generates a
folder (a file lock in `<cache>/.locks/`), others wait and read it. Leftover temporary folders of
killed runs are never read; a final folder that is incomplete anyway (edited by hand, a disk
error) is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from .config import SampleConfig
from .errors import DcoError
from .locks import Locks
from .models.pipeline import Conditioner
from .sampling import GuidedSampler, ImageJob, lora_disabled
from .store import UMASK, atomic_save_image, atomic_write_json, read_json

MANIFEST = "manifest.json"


def class_prompt_for(class_noun: str, template: str = "a photo of {class_noun}") -> str:
    """The prompt of the class images: `a photo of dog` for class noun `dog`."""
    if not class_noun or not class_noun.strip():
        raise DcoError("class_noun: it is empty; set the subject's class_noun (e.g. 'dog') in subject.yaml")
    if "{class_noun}" not in template:
        raise DcoError(f"class prompt template '{template}': it lacks '{{class_noun}}'; "
                       "use e.g. 'a photo of {class_noun}'")
    try:
        prompt = template.format(class_noun=class_noun.strip())
    except (KeyError, IndexError, ValueError) as e:
        raise DcoError(f"class prompt template '{template}': {e!r} is not a field it may use; use only {{class_noun}}")
    return " ".join(prompt.split())


def class_image_key(pipe, model_id: str, class_prompt: str, count: int, seed: int, sample_cfg: SampleConfig,
                    resolution: int) -> dict:
    """Everything the images depend on; its hash names the folder."""
    return {
        "model_id": str(model_id),
        "class_prompt": class_prompt,
        "count": int(count),
        "seed": int(seed),
        "resolution": int(resolution),
        "sampler": {
            "scheduler": type(pipe.scheduler).__name__,
            "steps": int(sample_cfg.steps),
            "cfg_scale": float(sample_cfg.cfg_scale),
        },
    }


def key_digest(key: dict) -> str:
    return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def image_name(k: int) -> str:
    return f"{k:04d}.png"


def _complete(folder: Path, key: dict) -> list[Path] | None:
    """The image paths if `folder` holds every image of `key`, else None."""
    try:
        manifest = read_json(folder / MANIFEST)
    except (OSError, ValueError):
        return None
    if manifest.get("key") != key:
        return None
    paths = [folder / image_name(k) for k in range(key["count"])]
    return paths if all(p.is_file() for p in paths) else None


def class_images(
    pipe,
    model_id: str,
    class_prompt: str,
    count: int,
    seed: int,
    sample_cfg: SampleConfig,
    resolution: int,
    root: Path | None = None,
) -> list[Path]:
    """`count` images of `class_prompt` from the base model (plain CFG), generated once per key.

    Any LoRA attached to the denoiser is switched off while sampling: the prior is the base model's.
    """
    if count < 1:
        raise DcoError(f"class images: count must be at least 1 (got {count}); raise the number of class images")
    if not class_prompt.strip():
        raise DcoError("class images: the class prompt is empty; set the subject's class_noun")
    if root is None:
        from .models.tiny import cache_dir

        root = cache_dir()
    key = class_image_key(pipe, model_id, class_prompt, count, seed, sample_cfg, resolution)
    digest = key_digest(key)
    parent = Path(root) / "class_images"
    folder = parent / digest
    done = _complete(folder, key)
    if done is not None:
        return done

    # one process generates them; another that needs the same images waits, then reads them
    with Locks(root).hold("class-images", digest):
        done = _complete(folder, key)
        if done is None:
            _generate(pipe, folder, key, digest, class_prompt, count, seed, sample_cfg, resolution)
    done = _complete(folder, key)
    if done is None:  # pragma: no cover - only if the folder vanished between rename and check
        raise DcoError(f"{folder}: class images disappeared while being written; rerun")
    return done


def _generate(pipe, folder: Path, key: dict, digest: str, class_prompt: str, count: int, seed: int,
              sample_cfg: SampleConfig, resolution: int) -> None:
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    # a unique name per attempt: a killed run's leftover is never appended to or mistaken for ours
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=f".{digest}-"))
    try:
        jobs = [ImageJob(class_prompt, class_prompt, 0, seed, k) for k in range(count)]
        start = time.perf_counter()
        cond = Conditioner(pipe, resolution)
        sampler = GuidedSampler(pipe, cond, resolution)
        with lora_disabled(cond.denoiser):
            images = sampler.sample(jobs, sample_cfg, "cfg")
        for job, img in zip(jobs, images):
            atomic_save_image(tmp / image_name(job.index), img)
        atomic_write_json(tmp / MANIFEST, {
            "key": key,
            "digest": digest,
            "images": [{"file": image_name(j.index), "noise_seed": j.noise_seed} for j in jobs],
            "seconds": round(time.perf_counter() - start, 3),
        })
        os.chmod(tmp, 0o777 & ~UMASK)  # mkdtemp makes 0700; the cache is meant to be shared
        _install(tmp, folder, key)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, folder: Path, key: dict) -> None:
    """Rename the finished `tmp` to `folder`, replacing an incomplete folder of the same name."""
    try:
        os.rename(tmp, folder)
        return
    except OSError:
        if _complete(folder, key) is not None:  # another process finished the same images first
            return
    # an incomplete folder under the final name: move it aside (atomic) and delete it, then retry
    stale = folder.with_name(f".{folder.name}-stale-{os.getpid()}-{time.time_ns()}")
    try:
        os.rename(folder, stale)
    except OSError:
        pass  # someone else moved it first
    shutil.rmtree(stale, ignore_errors=True)
    try:
        os.rename(tmp, folder)
    except OSError:
        if _complete(folder, key) is None:
            raise

