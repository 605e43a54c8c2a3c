"""Scoring: metrics against cosines computed by hand, prompts, caching, protocols, regressions."""


import numpy as np
import pytest
import torch

from dcobench.config import ScoreConfig
from dcobench.errors import DcoError
from dcobench.metrics import get_backbone
from dcobench.scoring import Scorer, read_rgb, scored_prompt

TINY = dict(clip="tiny-clip", dino="tiny-dino", dinov2="tiny-dino")


def images(n, seed):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def scorer():
    return Scorer(ScoreConfig(metrics=["dino", "clip_i", "clip_t"], **TINY))


@pytest.fixture
def ref_files(tmp_path):
    from PIL import Image

    paths = []
    for i, im in enumerate(images(3, 1)):
        paths.append(str(tmp_path / f"ref{i}.png"))
        Image.fromarray(im).save(paths[-1])
    return paths


def raw_cos(a, b):
    return torch.nn.functional.cosine_similarity(a[:, None, :], b[None, :, :], dim=-1)


def test_image_metrics_equal_cosines_by_hand(scorer, ref_files):
    gen = images(4, 2)
    got = scorer.score_images(gen, ["a dog"] * 4, {"references": ref_files})
    refs = [read_rgb(p) for p in ref_files]
    for metric, role in (("dino", "dino"), ("clip_i", "clip")):
        bb = scorer.backbone(role)
        with torch.no_grad():
            embed = (lambda x: bb.model(x)) if role == "dino" else (lambda x: bb.model.encode_image(x))
            from PIL import Image

            g = embed(torch.stack([bb.transform(Image.fromarray(x)) for x in gen]))
            r = embed(torch.stack([bb.transform(Image.fromarray(x)) for x in refs]))
        expected = raw_cos(g, r).mean(dim=1)
        assert torch.allclose(got[metric], expected, atol=1e-5), metric


def test_clip_t_equals_cosine_and_follows_the_text(scorer):
    gen = images(2, 3)
    bb = scorer.backbone("clip")
    got = scorer.score_images(gen, ["a red cup", "a photo of a dog on the beach"], {})["clip_t"]
    with torch.no_grad():
        from PIL import Image

        g = bb.model.encode_image(torch.stack([bb.transform(Image.fromarray(x)) for x in gen]))
        t = bb.model.encode_text(bb.tokenizer(["a red cup", "a photo of a dog on the beach"]))
    assert torch.allclose(got, torch.nn.functional.cosine_similarity(g, t), atol=1e-5)
    other = scorer.score_images(gen, ["a blue house", "snow"], {})["clip_t"]
    assert not torch.allclose(got, other, atol=1e-4)


def test_scored_prompt_modes():
    assert scored_prompt("a photo of sks dog on the beach", "sks", "dog", "class_noun") == "a photo of dog on the beach"
    assert scored_prompt("a sks in the snow", "sks", "dog", "class_noun") == "a dog in the snow"
    assert scored_prompt("a sks in the snow", "sks", "dog", "remove") == "a in the snow"


def test_references_are_embedded_once(scorer, ref_files, monkeypatch):
    bb = scorer.backbone("dino")
    calls = []
    original = bb.embed_images
    monkeypatch.setattr(bb, "embed_images", lambda ims, bs=32: calls.append(len(ims)) or original(ims, bs))
    for seed in range(3):
        scorer.score_images(images(5, 10 + seed), ["x"] * 5, {"references": ref_files})
    # generated images in one batch per cell; the 3 references once, for all three cells
    assert calls == [5, 3, 5, 5]


def test_protocol_records_backbones_and_prompt_mode(scorer):
    proto = scorer.protocol()
    assert proto["clip_t_prompt"] == "class_noun"
    assert proto["backbones"]["dino"]["weights"] == "random" and proto["backbones"]["dino"]["weights_sha256"]
    assert proto["backbones"]["dino"]["preprocess"]["input_size"] == [3, 32, 32]
    other = Scorer(ScoreConfig(metrics=["dino", "clip_i", "clip_t"], clip_t_prompt="remove", **TINY)).protocol()
    assert other["id"] != proto["id"]


def test_missing_weights_fail_with_a_clear_message():
    with pytest.raises(DcoError, match=r"score\.clip: cannot load open_clip ViT-B-32 weights 'openai'.*local file.*score\.enabled=false"):
        get_backbone("openclip:ViT-B-32@openai", where="score.clip")
    with pytest.raises(DcoError, match=r"score\.dino: cannot load timm vit_small_patch16_224\.dino weights"):
        get_backbone("timm:vit_small_patch16_224.dino", where="score.dino")
    with pytest.raises(DcoError, match="weights file '/nope.bin' not found"):
        get_backbone("timm:vit_small_patch16_224.dino@/nope.bin")


def test_unknown_metric_is_named():
    with pytest.raises(DcoError, match="unknown metric 'dinoo': did you mean 'dino'"):
        Scorer(ScoreConfig(metrics=["dinoo"], **TINY))


def test_div_is_the_mean_pairwise_distance_within_each_prompt():
    """DIV: identical images of a prompt score 0; orthogonal ones 1; an image alone with its prompt abstains."""
    import torch

    from dcobench.registry import METRICS

    div = METRICS.get("div_dino")
    e = torch.eye(3)
    images = torch.stack([e[0], e[0], e[1], e[2], e[0], e[1]])
    got = div.per_group(images, ["p", "p", "q", "q", "r", "r"][:5] + ["s"])
    assert got[:4].tolist() == [0.0, 0.0, 1.0, 1.0]
    assert got[4].isnan() and got[5].isnan()
    three = div.per_group(torch.stack([e[0], e[0], e[1]]), ["p"] * 3)
    assert three.tolist() == pytest.approx([0.5, 0.5, 1.0])


@pytest.mark.parametrize("spec", ["tiny-clip", "tiny-dino"])
def test_threaded_preprocessing_gives_the_serial_embeddings(spec):
    """The GPU path preprocesses in a thread pool, one batch ahead; it must embed exactly as the
    serial path does (forced on here: on the CPU the serial path is the default)."""
    bb = get_backbone(spec)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 48, 3), dtype=np.uint8) for _ in range(11)]
    bb.threads = 0
    serial = bb.embed_images(images, batch_size=4)
    bb.threads = 3
    threaded = bb.embed_images(images, batch_size=4)
    assert torch.equal(serial, threaded) and serial.shape[0] == 11
