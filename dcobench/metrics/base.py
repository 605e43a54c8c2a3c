"""Backbones: image (and text) encoders that metrics embed with, and the protocol they record.

A backbone turns uint8 HxWx3 images (and, for CLIP-like ones, prompt strings) into L2-normalised
embeddings, in batches. `protocol()` says exactly what was used: architecture, where the weights
came from and their hash, and the preprocessing. Two results are comparable only when their
protocols are equal.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch


class Backbone:
    name = ""
    has_text = False

    def protocol(self) -> dict:
        """{'backbone': name, 'arch': ..., 'weights': source, 'weights_sha256': ..., 'preprocess': {...}}"""
        raise NotImplementedError

    def embed_images(self, images: list[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        """(N, D) float32, rows L2-normalised."""
        raise NotImplementedError

    def embed_texts(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        raise NotImplementedError(f"backbone {self.name} has no text tower")


def normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def state_sha256(module: torch.nn.Module) -> str:
    """Hash of a module's weights, for weights that do not come from one file."""
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
