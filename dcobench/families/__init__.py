"""Model families: the one place that knows how SD1.5, SDXL and SD3 differ.

`family_of(pipe)` and `family_of_model(path)` pick the family from the pipeline class (the
`_class_name` of model_index.json), falling back to its components for other pipeline classes.
A model no family supports fails with one line that says why.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DcoError
from . import sd15, sd3, sdxl  # noqa: F401  (each registers its family)
from .base import FAMILIES, Family, Noising  # noqa: F401

# pipelines that look close enough to be tried, and why they cannot be
UNSUPPORTED = {
    "FluxPipeline": "FLUX.1 [dev]/[schnell] are guidance-distilled: the guidance scale is an input of the transformer "
                    "and there is no unconditional prediction, so CFG and DCO's consistency guidance, which subtract "
                    "one, are undefined",
    "LatentConsistencyModelPipeline": "a latent consistency model distils guidance into the UNet (guidance scale is "
                                      "an input), so there is no unconditional prediction for CFG or consistency "
                                      "guidance",
    "StableDiffusion3ControlNetPipeline": "a ControlNet pipeline needs a control image for every prompt; pass the "
                                          "base SD3 folder",
}


def families() -> list[Family]:
    return [FAMILIES.get(n) for n in FAMILIES.names()]


def _by_components(present) -> Family | None:
    # most specific first: SDXL and SD3 pipelines also have the components SD1.5 needs
    for fam in sorted(families(), key=lambda f: -len(f.components)):
        if fam.components and all(present(c) for c in fam.components):
            return fam
    return None


def _pick(class_name: str, present, where: str) -> Family:
    for fam in families():
        if class_name in fam.pipelines:
            return fam
    supported = ", ".join(f"{f.name} ({'/'.join(f.pipelines)})" for f in families())
    if class_name in UNSUPPORTED:
        raise DcoError(f"{where}: {class_name} is not supported: {UNSUPPORTED[class_name]}; supported: {supported}")
    fam = _by_components(present)
    if fam is None:
        raise DcoError(f"{where}: {class_name or 'this pipeline'} is not a supported model family (supported: "
                       f"{supported}); a new family is one file under dcobench/families/ and a registration")
    return fam


def family_of(pipe) -> Family:
    """The family of a loaded pipeline (or any object with the pipeline's component attributes)."""
    missing = object()
    return _pick(type(pipe).__name__, lambda c: getattr(pipe, c, missing) is not missing, "pipeline")


def read_index(model: str | Path) -> dict | None:
    """model_index.json of a local folder or a cached hub id; None if it cannot be read."""
    path = Path(model) / "model_index.json"
    try:
        if path.is_file():
            return json.loads(path.read_text())
        from diffusers import DiffusionPipeline

        return dict(DiffusionPipeline.load_config(str(model)))
    except Exception:
        return None


def family_for_index(index: dict, model: str | Path) -> Family:
    return _pick(str(index.get("_class_name", "")), lambda c: c in index, f"model '{model}'")


def family_of_model(model: str | Path) -> Family | None:
    """The family of a model folder or hub id; None when its model_index.json cannot be read."""
    index = read_index(model)
    return None if index is None else family_for_index(index, model)


def denoiser(pipe):
    """The module that holds the LoRA: `pipe.unet` or `pipe.transformer`."""
    return family_of(pipe).denoiser(pipe)
