"""Class images for prior preservation: generated once per key, content-addressed, reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dcobench.config import SampleConfig
from dcobench.errors import DcoError
from dcobench.prior import MANIFEST, class_images, class_prompt_for
from dcobench.sampling import GuidedSampler

RES = 32


@pytest.fixture
def cfg():
    return SampleConfig(steps=2, batch_size=2, cfg_scale=5.0)


def make(pipe, root, cfg, **kw):
    args = dict(model_id="tiny-sd", class_prompt="a photo of dog", count=3, seed=0, sample_cfg=cfg, resolution=RES)
    args.update(kw)
    return class_images(pipe, root=root, **args)


def test_class_prompt_for():
    assert class_prompt_for("dog") == "a photo of dog"
    assert class_prompt_for("teddy bear", "a {class_noun} on a table") == "a teddy bear on a table"
    with pytest.raises(DcoError, match="class_noun"):
        class_prompt_for("  ")
    with pytest.raises(DcoError, match="template"):
        class_prompt_for("dog", "a photo")


def test_generates_then_reuses(tiny_pipe, tmp_path, cfg, monkeypatch):
    paths = make(tiny_pipe, tmp_path, cfg)
    assert len(paths) == 3
    folder = paths[0].parent
    assert folder.parent == tmp_path / "class_images" and len(folder.name) == 16
    arrays = []
    for p in paths:
        with Image.open(p) as im:
            assert im.size == (RES, RES) and im.mode == "RGB"
            arrays.append(np.asarray(im))
    assert not np.array_equal(arrays[0], arrays[1]), "each image needs its own noise seed"

    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["key"] == {
        "model_id": "tiny-sd", "class_prompt": "a photo of dog", "count": 3, "seed": 0, "resolution": RES,
        "sampler": {"scheduler": type(tiny_pipe.scheduler).__name__, "steps": 2, "cfg_scale": 5.0},
    }
    assert manifest["digest"] == folder.name
    assert [i["noise_seed"] for i in manifest["images"]] == [0, 1, 2]
    assert not [p for p in (tmp_path / "class_images").iterdir() if p.name.startswith(".")], "temp folder left"

    def fail(*a, **k):
        raise AssertionError("sampled again instead of reusing the class images")

    monkeypatch.setattr(GuidedSampler, "sample", fail)
    assert make(tiny_pipe, tmp_path, cfg) == paths
    # batching is not part of the key: images do not depend on it
    assert make(tiny_pipe, tmp_path, SampleConfig(steps=2, batch_size=1, cfg_scale=5.0)) == paths


def test_key_changes_folder(tiny_pipe, tmp_path, cfg):
    base = make(tiny_pipe, tmp_path, cfg, count=1)[0].parent
    other_seed = make(tiny_pipe, tmp_path, cfg, count=1, seed=1)[0].parent
    other_cfg = make(tiny_pipe, tmp_path, SampleConfig(steps=2, cfg_scale=3.0), count=1)[0].parent
    other_prompt = make(tiny_pipe, tmp_path, cfg, count=1, class_prompt="a photo of cat")[0].parent
    assert len({base, other_seed, other_cfg, other_prompt}) == 4


def test_incomplete_folders_are_replaced(tiny_pipe, tmp_path, cfg):
    paths = make(tiny_pipe, tmp_path, cfg, count=2)
    folder = paths[0].parent
    first = paths[1].read_bytes()
    paths[1].unlink()  # an incomplete folder under the final name
    (tmp_path / "class_images" / f".{folder.name}-killed").mkdir()  # a killed run's temp folder
    again = make(tiny_pipe, tmp_path, cfg, count=2)
    assert again == paths and paths[1].read_bytes() == first  # same seeds, same image
    (folder / MANIFEST).unlink()
    assert make(tiny_pipe, tmp_path, cfg, count=2) == paths and (folder / MANIFEST).is_file()


def test_bad_count(tiny_pipe, tmp_path, cfg):
    with pytest.raises(DcoError, match="count"):
        make(tiny_pipe, tmp_path, cfg, count=0)
