"""Concrete backbones: open_clip (CLIP-I, CLIP-T), timm (DINO, DINOv2), and tiny random ones.

A backbone is named by a spec `NAME[:ARCH][@WEIGHTS]`:

    openclip:ViT-B-32@openai            open_clip's own loading path (HF cache / hub) for a tag
    openclip:ViT-L-14@/path/model.bin   a local checkpoint file
    timm:vit_small_patch16_224.dino     timm's pretrained weights (HF cache / hub)
    timm:vit_small_patch16_224.dino@/path/pytorch_model.bin
    tiny-clip, tiny-dino                random encoders built from tiny configs (tests, tiny suite)

`@random` gives random weights for any architecture. Weights that cannot be found fail with one
line naming what to provide; nothing is downloaded when HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import DcoError
from ..registry import BACKBONES
from .base import Backbone, file_sha256, normalise, state_sha256

TINY_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


def parse_spec(spec: str) -> tuple[str, str, str]:
    head, _, weights = spec.partition("@")
    name, _, arch = head.partition(":")
    return name, arch, weights


def get_backbone(spec: str, device: str = "cpu", where: str = "score") -> Backbone:
    name, arch, weights = parse_spec(spec)
    return BACKBONES.get(name)(arch=arch, weights=weights, device=device, where=where)


def _to_pil(images):
    from PIL import Image

    return [Image.fromarray(np.asarray(im, dtype=np.uint8)) for im in images]


def preprocess_threads(device: str) -> int:
    """Threads that preprocess images beside the encoder: on a GPU the encoder is fast and the PIL
    resize and crop on the CPU were most of the time (H200, RESULTS.md); PIL releases the GIL, so a
    pool runs them in parallel and the next batch is prepared while the GPU embeds this one. On the
    CPU, 0: the encoder already uses the thread count the run was given (one, in shards and Ray)."""
    import os

    return min(8, os.cpu_count() or 1) if str(device).startswith("cuda") else 0


class _TorchBackbone(Backbone):
    """Shared batching: preprocess PIL images with `self.transform`, embed with `self._image`."""

    device = "cpu"
    threads: int | None = None  # preprocessing threads; None: `preprocess_threads(self.device)`

    def _prepare(self, images, pool=None) -> torch.Tensor:
        pil = _to_pil(images)
        return torch.stack(list(pool.map(self.transform, pil)) if pool else [self.transform(im) for im in pil])

    @torch.no_grad()
    def embed_images(self, images, batch_size: int = 32) -> torch.Tensor:
        chunks = [images[start : start + batch_size] for start in range(0, len(images), batch_size)]
        threads = preprocess_threads(self.device) if self.threads is None else self.threads
        if not chunks:
            return torch.zeros(0, 1)
        if not threads:
            return torch.cat([normalise(self._image(self._prepare(c).to(self.device))).cpu() for c in chunks])
        from concurrent.futures import ThreadPoolExecutor

        out = []
        # the same transform on every image, in any order: the embeddings are those of the serial path
        with ThreadPoolExecutor(threads) as pool, ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(self._prepare, chunks[0], pool)
            for i in range(len(chunks)):
                batch = pending.result()
                if i + 1 < len(chunks):
                    pending = ahead.submit(self._prepare, chunks[i + 1], pool)
                out.append(normalise(self._image(batch.to(self.device, non_blocking=True))).cpu())
        return torch.cat(out)


@BACKBONES.register("openclip", description="open_clip CLIP; ARCH e.g. ViT-B-32, ViT-L-14; WEIGHTS a tag or file")
class OpenClipBackbone(_TorchBackbone):
    has_text = True

    def __init__(self, arch: str = "", weights: str = "", device: str = "cpu", where: str = "score", seed: int = 0):
        import open_clip

        self.arch, self.device = arch or "ViT-B-32", device
        self.name = f"openclip:{self.arch}"
        weights = weights or "openai"
        pretrained = None if weights == "random" else weights
        torch.manual_seed(seed)
        try:
            logging.disable(logging.WARNING)  # open_clip warns on purpose-random weights via the root logger
            model, _, preprocess = open_clip.create_model_and_transforms(self.arch, pretrained=pretrained)
            logging.disable(logging.NOTSET)
        except Exception as e:
            logging.disable(logging.NOTSET)
            raise DcoError(
                f"{where}: cannot load open_clip {self.arch} weights '{weights}' ({type(e).__name__}); put them in the "
                f"Hugging Face cache, pass a local file ({where}=openclip:{self.arch}@/path/to/open_clip_model.bin), "
                "or turn scoring off with score.enabled=false"
            )
        self.model = model.eval().to(device)
        self.transform = preprocess
        self.tokenizer = open_clip.get_tokenizer(self.arch)
        self.weights = weights if weights in ("random",) or not Path(weights).is_file() else str(Path(weights).resolve())
        self.weights_sha256 = file_sha256(weights) if Path(weights).is_file() else state_sha256(self.model)

    def _image(self, x):
        return self.model.encode_image(x)

    @torch.no_grad()
    def embed_texts(self, texts, batch_size: int = 64) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), batch_size):
            tokens = self.tokenizer(list(texts[start : start + batch_size])).to(self.device)
            out.append(normalise(self.model.encode_text(tokens)).cpu())
        return torch.cat(out)

    def protocol(self) -> dict:
        cfg = getattr(self.model.visual, "preprocess_cfg", {}) or {}
        return {"backbone": self.name, "weights": self.weights, "weights_sha256": self.weights_sha256,
                "preprocess": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
                "tokenizer": "open_clip"}


@BACKBONES.register("timm", description="timm image encoder (CLS features); ARCH e.g. vit_small_patch16_224.dino")
class TimmBackbone(_TorchBackbone):
    def __init__(self, arch: str = "", weights: str = "", device: str = "cpu", where: str = "score", seed: int = 0,
                 **model_kwargs):
        import timm
        from timm.data import create_transform, resolve_data_config

        self.arch, self.device = arch or "vit_small_patch16_224.dino", device
        self.name = f"timm:{self.arch}"
        torch.manual_seed(seed)
        local = bool(weights) and weights != "random" and Path(weights).is_file()
        if weights and weights != "random" and not local:
            raise DcoError(f"{where}: weights file '{weights}' not found; pass an existing file or leave it out to use timm's")
        kwargs = dict(num_classes=0, **model_kwargs)
        try:
            if weights == "random":
                model = timm.create_model(self.arch, pretrained=False, **kwargs)
            elif local:
                model = timm.create_model(self.arch, pretrained=True, pretrained_cfg_overlay={"file": weights}, **kwargs)
            else:
                model = timm.create_model(self.arch, pretrained=True, **kwargs)
        except Exception as e:
            raise DcoError(
                f"{where}: cannot load timm {self.arch} weights ({type(e).__name__}); put them in the Hugging Face "
                f"cache, pass a local file ({where}=timm:{self.arch}@/path/to/pytorch_model.bin), or turn scoring off "
                "with score.enabled=false"
            )
        self.model = model.eval().to(device)
        size = getattr(getattr(self.model, "patch_embed", None), "img_size", None)
        # a ViT built at another size than its pretrained config must be fed that size
        self.data_cfg = resolve_data_config({"input_size": (3, *size)} if size else {}, model=self.model)
        self.transform = create_transform(**self.data_cfg)
        self.weights = "random" if weights == "random" else (str(Path(weights).resolve()) if local else "timm-pretrained")
        self.weights_sha256 = file_sha256(weights) if local else state_sha256(self.model)

    def _image(self, x):
        return self.model(x)

    def protocol(self) -> dict:
        cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.data_cfg.items()}
        return {"backbone": self.name, "weights": self.weights, "weights_sha256": self.weights_sha256, "preprocess": cfg}


@BACKBONES.register("tiny-clip", description="random tiny open_clip model built from a config (tests only)")
def tiny_clip(arch: str = "", weights: str = "", device: str = "cpu", where: str = "score"):
    import open_clip

    if open_clip.get_model_config("dcobench-tiny-clip") is None:
        folder = Path(tempfile.mkdtemp(prefix="dcobench-openclip-"))
        (folder / "dcobench-tiny-clip.json").write_text(json.dumps(TINY_CLIP))
        open_clip.add_model_config(folder)
    return OpenClipBackbone("dcobench-tiny-clip", "random", device, where)


@BACKBONES.register("tiny-dino", description="random tiny ViT built from a config (tests only)")
def tiny_dino(arch: str = "", weights: str = "", device: str = "cpu", where: str = "score"):
    bb = TimmBackbone("vit_small_patch16_224", "random", device, where, img_size=32, patch_size=8, embed_dim=64,
                      depth=2, num_heads=2)
    bb.name = "tiny-dino"
    return bb
