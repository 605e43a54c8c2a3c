"""Micro scoring encoders: a CLIP-style image/text model and a DINO-style image encoder.

Both are used exactly like the real backbones (``dcobench.metrics.base.Backbone``): uint8 images
and strings in, L2-normalised embeddings out, with a ``protocol()`` naming the weights file and
its hash. Their training lives in ``encoder_training.py``; this module holds the networks, their
weights files and the registry entries.

MicroClip never sees a held-out subject: it trains on pretraining renders plus the held-out
*styles* captioned with their plain style words ("in striped style"), so CLIP-T can check a
style and the identifiers (sks, kxv, ...) stay unknown tokens.  Its text tower is a small
transformer over the offline CLIP tokenizer's ids, remapped to the world's vocabulary (a
49408-row table would be 99% dead weight); unknown ids share one UNK row.  Captions bind colours
to nouns by word order ("a red circle on a blue background"), so the text tower uses positions
and attention, not a bag of words.  The image tower flattens its 4x4 map so position and size
survive.

MicroDino is trained the way DINO is: self-distillation with no labels, on pretraining renders
only (never a held-out subject or style), and scored like DINO, with the backbone's pooled
features (the projection head is a training device and is not saved).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..errors import DcoError
from ..metrics.base import Backbone, file_sha256, normalise, state_sha256
from .models import TEXT_LEN, default_micro_dir, tokenize
from .world import (BACKGROUNDS, COLORS, HELDOUT_STYLES, POSITIONS, SHAPES, SIZES, STYLES, Scene, base_caption)

CLIP_FILE, DINO_FILE = "micro-clip.safetensors", "micro-dino.safetensors"
PREPROCESS = {"size": 32, "resize": "bilinear if not 32x32", "scale": "x / 255",
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
_WORDS = (list(COLORS) + list(BACKGROUNDS) + list(SHAPES) + list(POSITIONS) + list(SIZES)
          + list(STYLES) + ["a", "an", "on", "background", "in", "style", ","])


def clip_caption(scene: Scene) -> str:
    """The base caption, keeping held-out styles by their plain word (``base_caption`` drops them)."""
    text = base_caption(scene)
    return text + f", in {scene.style} style" if scene.style in HELDOUT_STYLES else text


def world_vocab() -> list[int]:
    from .models import tokenizer

    return sorted({i for ids in tokenizer()(_WORDS).input_ids for i in ids})


def preprocess(images, device) -> torch.Tensor:
    out = []
    for im in images:
        im = np.asarray(im, dtype=np.uint8)
        if im.shape[:2] != (32, 32):
            from PIL import Image

            im = np.asarray(Image.fromarray(im).convert("RGB").resize((32, 32), Image.BILINEAR))
        out.append(im[..., :3])
    x = torch.as_tensor(np.stack(out)).permute(0, 3, 1, 2).float().to(device) / 255.0
    return (x - 0.5) / 0.5


def _conv(cin, cout, stride=1):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU())


class _Encoder(nn.Module, Backbone):
    kind = ""

    def __init__(self, **config):
        super().__init__()
        self.config = config
        self.weights_path: Path | None = None
        self.stats: dict = {}

    @property
    def device(self):
        return next(self.parameters()).device

    @torch.no_grad()
    def embed_images(self, images, batch_size: int = 256) -> torch.Tensor:
        self.eval()
        out = [normalise(self.image_features(preprocess(images[i:i + batch_size], self.device))).cpu()
               for i in range(0, len(images), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.config["dim"])

    def protocol(self) -> dict:
        path = self.weights_path
        return {"backbone": self.name, "arch": self.arch(),
                "weights": str(path) if path else "unsaved",
                "weights_sha256": file_sha256(path) if path else state_sha256(self),
                "preprocess": dict(PREPROCESS)}


class MicroClip(_Encoder):
    name, kind, has_text = "micro-clip", "micro-clip", True

    def __init__(self, vocab: list[int], dim: int = 64, width: int = 64):
        super().__init__(vocab=list(vocab), dim=dim, width=width)
        self.image = nn.Sequential(_conv(3, 32), _conv(32, 64, 2), _conv(64, 64), _conv(64, 128, 2),
                                   _conv(128, 128), _conv(128, 128, 2), nn.Flatten(),
                                   nn.Linear(128 * 16, 256), nn.SiLU(), nn.Linear(256, dim))
        lut = torch.zeros(49408, dtype=torch.long)  # CLIP id -> row; 0 is UNK
        lut[torch.tensor(vocab)] = torch.arange(1, len(vocab) + 1)
        self.register_buffer("lut", lut, persistent=False)
        self.tok = nn.Embedding(len(vocab) + 1, width)
        self.pos = nn.Parameter(torch.randn(TEXT_LEN, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, 4, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.text = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.text_out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def arch(self) -> str:
        c = self.config
        return (f"CNN 32-64-128 (3 stride-2 stages, flattened 4x4) + 2-layer transformer width "
                f"{c['width']} over {len(c['vocab'])} CLIP-BPE ids; dim {c['dim']}; max length {TEXT_LEN}")

    def image_features(self, x):
        return self.image(x)

    def text_features(self, ids):
        ids = ids.to(self.device)
        # Pool at the first EOS (CLIP's choice): it has attended to the whole caption.
        eos = (ids == 49407).int().argmax(1)
        pad = torch.arange(ids.shape[1], device=ids.device)[None] > eos[:, None]
        h = self.text(self.tok(self.lut[ids]) + self.pos[: ids.shape[1]], src_key_padding_mask=pad)
        return self.text_out(h[torch.arange(len(ids)), eos])

    @torch.no_grad()
    def embed_texts(self, texts, batch_size: int = 256) -> torch.Tensor:
        self.eval()
        out = [normalise(self.text_features(tokenize(texts[i:i + batch_size]))).cpu()
               for i in range(0, len(texts), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.config["dim"])


class MicroDino(_Encoder):
    name, kind = "micro-dino", "micro-dino"

    def __init__(self, width: int = 64, dim: int = 64):
        super().__init__(width=width, dim=dim)
        w = width
        self.backbone = nn.Sequential(_conv(3, w // 4), _conv(w // 4, w // 2, 2), _conv(w // 2, w // 2),
                                      _conv(w // 2, w, 2), _conv(w, w))

    def arch(self) -> str:
        return (f"CNN {self.config['width'] // 4}-{self.config['width'] // 2}-{self.config['width']} (2 stride-2 "
                f"stages), global max pool ({self.config['dim']}-d); DINO self-distillation on "
                "pretraining renders only")

    def image_features(self, x):
        # Max pooling: an object's strongest responses, wherever it stands; average pooling mixed in
        # the background's area and made the features follow the background (measured).
        return self.backbone(x).amax((2, 3))


def save_encoder(model: _Encoder, path) -> Path:
    """``path`` (.safetensors) plus the same name with .json: kind, config and stats.  The JSON is
    written first and the weights renamed into place last, so a weights file always has its config."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    meta = {"kind": model.kind, "config": model.config, "stats": model.stats}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    tmp.replace(path)
    model.weights_path = path.resolve()
    return path


def _load(path, kind: str, cls, device="cpu"):
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        path = path / (CLIP_FILE if kind == "micro-clip" else DINO_FILE)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise DcoError(f"{kind} weights not found at {path} (or its .json); run `dcobench micro build` to train them")
    meta = json.loads(path.with_suffix(".json").read_text())
    if meta.get("kind") != kind:
        raise DcoError(f"{path} holds a {meta.get('kind')!r} encoder, not {kind}; check the weights path")
    model = cls(**meta["config"])
    model.load_state_dict(load_file(str(path)))
    model.weights_path, model.stats = path.resolve(), meta.get("stats", {})
    return model.to(device).eval()


def load_micro_clip(path, device="cpu") -> MicroClip:
    return _load(path, "micro-clip", MicroClip, device)


def load_micro_dino(path, device="cpu") -> MicroDino:
    return _load(path, "micro-dino", MicroDino, device)


def _default(name: str) -> Path:
    return default_micro_dir() / "encoders" / name


def micro_clip_backbone(arch: str = "", weights: str = "", device: str = "cpu", where: str = "score"):
    """Registry entry ("micro-clip[@PATH]"); without a path, the shipped data/micro weights."""
    return load_micro_clip(weights or _default(CLIP_FILE), device)


def micro_dino_backbone(arch: str = "", weights: str = "", device: str = "cpu", where: str = "score"):
    return load_micro_dino(weights or _default(DINO_FILE), device)
