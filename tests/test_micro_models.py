"""Fast checks of the micro base model, the micro encoders and validation (a few training steps each)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcobench.errors import DcoError
from dcobench.metrics.base import file_sha256
from dcobench.micro import encoders as E
from dcobench.micro import models as M
from dcobench.micro.validate import ATTRIBUTES, balanced_scenes, validate_base, validation_table
from dcobench.micro.world import (COLORS, HELDOUT_STYLES, STYLES, SUBJECTS, caption, eval_prompts, render,
                                  sample_scenes)


def _quiet(*_):
    pass


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are too small to gain from threads, and on a shared 2-core machine OpenMP's
    spinning workers made this file 5x slower (55 s vs 10 s) whenever another process was busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("micro")
    stats = M.build(out, vae_steps=2, unet_steps=2, seed=0, device="cpu", log=_quiet, batch_size=4,
                     eval_n=8)
    return out, stats


@pytest.fixture(scope="module")
def pipe(built):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(built[0] / "base")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def clip():
    return E.train_micro_clip(2, batch_size=16, seed=0, device="cpu", log=_quiet)


@pytest.fixture(scope="module")
def dino():
    return E.train_micro_dino(2, batch_size=8, seed=0, device="cpu", log=_quiet)


def test_every_world_caption_fits_the_text_length():
    scenes = sample_scenes(800, 0, pretraining=False)
    scenes += [s for name in [*SUBJECTS, *HELDOUT_STYLES] for s in eval_prompts(name)]
    texts = [caption(s) for s in scenes] + [E.clip_caption(s) for s in scenes]
    assert max(len(ids) for ids in M.tokenizer()(texts).input_ids) <= M.TEXT_LEN


def test_training_pool_is_pretraining_only():
    pool = M.ScenePool(3000, 1)
    assert all(s.subject is None and s.style not in HELDOUT_STYLES for s in pool.scenes)
    assert len(pool.draws) == 3000 and pool.images.shape == (len(pool), 32, 32, 3)


def test_build_stats(built):
    out, stats = built
    assert stats["unet"]["steps"] == 2 and stats["vae"]["steps"] == 2
    assert 1.5e6 < stats["unet"]["unet_params"] < 2e6  # the (32, 64, 64) UNet of NOTES.md
    assert stats["vae"]["params"] > 0 and stats["unet"]["text_encoder_params"] > 0
    assert np.isfinite([stats["unet"]["final_loss"], stats["unet"]["eval_loss"], stats["vae"]["recon_mse"]]).all()
    assert set(stats["vae"]["heldout_recon_by_concept"]) == {*SUBJECTS, *HELDOUT_STYLES}
    assert stats["saved"]["bytes"] < 25e6 and (out / "base" / "model_index.json").is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_pipeline_reloads_with_the_recipe_and_generates(pipe, built):
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    cfg = pipe.unet.config
    assert cfg.addition_embed_type == "text" and cfg.cross_attention_dim == 64
    assert cfg.down_block_types[0] == "DownBlock2D"  # no attention at 16x16
    assert pipe.scheduler.config.prediction_type == "v_prediction" and not pipe.scheduler.config.clip_sample
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.tokenizer.model_max_length == M.TEXT_LEN
    assert pipe.vae.config.scaling_factor == pytest.approx(built[1]["vae"]["scaling_factor"])
    gen = torch.Generator().manual_seed(0)
    img = pipe(["a red circle on a white background, small, center"], guidance_scale=3.0, num_inference_steps=2,
               generator=gen, height=32, width=32, output_type="np").images
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()


def test_ema_tracks_weights():
    m = torch.nn.Linear(2, 2)
    ema = M.Ema(m)
    with torch.no_grad():
        m.weight.add_(1.0)
    ema.update(m)
    before = m.weight.clone()
    ema.copy_to(m)
    assert not torch.equal(m.weight, before) and (m.weight < before).all()


def test_encoders_round_trip_and_normalised(tmp_path, clip, dino):
    images = [render(s) for s in sample_scenes(5, 3, pretraining=False)]
    texts = ["a red circle on a white background, small, center", "a blue square on a black background, large, "
             "top left, in dotted style"]
    for model, load in ((clip, E.load_micro_clip), (dino, E.load_micro_dino)):
        path = E.save_encoder(model, tmp_path / f"{model.name}.safetensors")
        again = load(path)
        a, b = model.embed_images(images), again.embed_images(images)
        assert torch.equal(a, b) and a.shape[0] == 5
        assert torch.allclose(a.norm(dim=1), torch.ones(5), atol=1e-5)
        proto = again.protocol()
        assert proto["backbone"] == model.name and proto["weights_sha256"] == file_sha256(path)
        assert proto["preprocess"]["size"] == 32
    t = clip.embed_texts(texts)
    assert torch.equal(t, E.load_micro_clip(tmp_path / "micro-clip.safetensors").embed_texts(texts))
    assert torch.allclose(t.norm(dim=1), torch.ones(2), atol=1e-5)
    # a 64 px image is resized, not rejected
    assert clip.embed_images([np.zeros((64, 64, 3), np.uint8)]).shape == (1, 64)


def test_missing_weights_is_a_user_error(tmp_path):
    with pytest.raises(DcoError, match="dcobench micro build"):
        E.load_micro_clip(tmp_path / "nope.safetensors")
    with pytest.raises(DcoError, match="micro-dino"):
        E.micro_dino_backbone(weights=str(tmp_path))


def test_clip_never_learns_subject_tokens():
    words = set(M.tokenizer().convert_ids_to_tokens(E.world_vocab()))
    assert not {f"{s.identifier}</w>" for s in SUBJECTS.values()} & words
    assert {f"{s}</w>" for s in STYLES} <= words


def test_one_attribute_variants():
    scene = sample_scenes(1, 5)[0]
    for attr in ("shape", "color", "background", "style"):
        for v in E._variants(scene, attr):
            diff = [k for k in ("shape", "color", "background", "position", "size", "style")
                    if getattr(v, k) != getattr(scene, k)]
            assert diff == [attr]


def test_retrieval_and_identity_accuracy_are_fractions(clip, dino):
    r = E.retrieval_accuracy(clip, n=4, seed=1)
    vals = [r["i2t_top1"], r["t2i_top1"], *r["i2t_by_attr"].values(), *r["t2i_by_attr"].values()]
    assert r["n"] == 4 and all(0 <= v <= 1 for v in vals)
    d = E.identity_accuracy(dino, n=8, seed=1)
    assert 0 <= d["identity_top1"] <= 1 and -1 <= d["other_identity_cos"] <= 1


def test_balanced_scenes():
    scenes = balanced_scenes(2, seed=0)
    assert len(scenes) == 12 and all(sum(s.color == c for s in scenes) == 2 for c in COLORS)
    assert all(s.subject is None and s.style not in HELDOUT_STYLES for s in scenes)


def test_validate_base_on_a_two_step_model(pipe, built, clip):
    v = validate_base(pipe, n_per_attr=1, seed=0, steps=2)
    assert v["n"] == 6 and set(v["accuracy"]) == set(ATTRIBUTES)
    assert all(0.0 <= a <= 1.0 for a in v["accuracy"].values())
    table = validation_table({**built[1], "validation": v}, {**clip.stats, **E.retrieval_accuracy(clip, 2, 0)}, None)
    assert "| accuracy |" in table and "micro-clip" in table and "## Micro base model" in table
    assert "dotted" in table  # the held-out concepts' VAE reconstruction line
