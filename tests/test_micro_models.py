"""Fast checks of the micro base model, the micro encoders and validation (a few training steps each)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dcobench.errors import DcoError
from dcobench.metrics.base import file_sha256
from dcobench.micro import build as B
from dcobench.micro import encoder_eval as EV
from dcobench.micro import encoder_training as ET
from dcobench.micro import encoders as E
from dcobench.micro import models as M
from dcobench.micro import training as T
from dcobench.micro.validate import (ATTRIBUTES, balanced_scenes, degradation, seed_diversity, validate_base,
                                     validation_table)
from dcobench.micro.references import eval_prompts
from dcobench.micro.world import (COLORS, HELDOUT_STYLES, HELDOUT_SUBJECTS, STYLES, SUBJECTS, caption, render,
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
    stats = B.build(out, ["vae", "unet"], vae_steps=2, unet_steps=2, seed=0, device="cpu", log=_quiet,
                    batch_size=4, vae_batch_size=4, eval_n=8)
    return out, stats


@pytest.fixture(scope="module")
def pipe(built):
    from diffusers import StableDiffusionPipeline

    p = StableDiffusionPipeline.from_pretrained(built[0] / "base")
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def clip():
    return ET.train_micro_clip(2, batch_size=16, seed=0, device="cpu", log=_quiet)


@pytest.fixture(scope="module")
def dino():
    return ET.train_micro_dino(2, batch_size=8, seed=0, device="cpu", log=_quiet, n_images=64)


def test_every_world_caption_fits_the_text_length():
    scenes = sample_scenes(800, 0, pretraining=False)
    scenes += [s for name in [*SUBJECTS, *HELDOUT_STYLES] for s in eval_prompts(name)]
    texts = [caption(s) for s in scenes] + [E.clip_caption(s) for s in scenes]
    assert max(len(ids) for ids in M.tokenizer()(texts).input_ids) <= M.TEXT_LEN


def test_training_pool_is_pretraining_only():
    pool = T.ScenePool(3000, 1)
    assert all(s.subject is None and s.style not in HELDOUT_STYLES for s in pool.scenes)
    assert len(pool.draws) == 3000 and pool.images.shape == (len(pool), 32, 32, 3)


def test_build_stats(built):
    out, stats = built
    vae, unet = stats["build"]["vae"], stats["build"]["unet"]
    assert unet["steps"] == 2 and vae["steps"] == 2
    assert 1.5e6 < unet["unet_params"] < 2e6  # the (32, 64, 64) UNet of NOTES.md
    assert vae["params"] > 0 and unet["text_encoder_params"] > 0 and vae["wall_seconds"] > 0
    assert np.isfinite([unet["final_loss"], unet["eval_loss"], vae["recon_mse"]]).all()
    assert set(vae["heldout_recon_by_concept"]) == {*HELDOUT_SUBJECTS, *HELDOUT_STYLES}  # later subjects: subject_screen
    assert unet["saved"]["bytes"] < 25e6 and (out / "base" / "model_index.json").is_file()
    assert B.read_stats(out) == stats
    assert not [p for p in out.iterdir() if p.name.startswith(".") and p.name != ".stages"]


def test_build_stages_reuse_the_trained_vae(built, tmp_path):
    out = built[0]
    with pytest.raises(FileNotFoundError, match="--stages vae"):
        B.build(tmp_path, ["unet"], unet_steps=1, device="cpu", log=_quiet, batch_size=2)
    with pytest.raises(ValueError, match="unknown stage"):
        B.build(tmp_path, ["vea"], device="cpu", log=_quiet)
    assert B.load_stage_vae(out).config.scaling_factor == pytest.approx(B.read_stats(out)["build"]["vae"]["scaling_factor"])


def test_pipeline_reloads_with_the_recipe_and_generates(pipe, built):
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.text_encoder.dtype} == {torch.float32}
    cfg = pipe.unet.config
    assert cfg.addition_embed_type == "text" and cfg.cross_attention_dim == 64
    assert cfg.down_block_types[0] == "DownBlock2D"  # no attention at 16x16
    assert pipe.scheduler.config.prediction_type == "v_prediction" and not pipe.scheduler.config.clip_sample
    assert type(pipe.scheduler).__name__ == "DDIMScheduler" and pipe.tokenizer.model_max_length == M.TEXT_LEN
    assert pipe.vae.config.scaling_factor == pytest.approx(built[1]["build"]["vae"]["scaling_factor"])
    gen = torch.Generator().manual_seed(0)
    img = pipe(["a red circle on a white background, small, center"], guidance_scale=3.0, num_inference_steps=2,
               generator=gen, height=32, width=32, output_type="np").images
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()


def test_ema_tracks_weights():
    m = torch.nn.Linear(2, 2)
    ema = T.Ema(m)
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
    assert dino.stats["data"].startswith("64 pretraining draws")


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
        for v in EV._variants(scene, attr):
            diff = [k for k in ("shape", "color", "background", "position", "size", "style")
                    if getattr(v, k) != getattr(scene, k)]
            assert diff == [attr]


def test_retrieval_accuracy_is_a_fraction(clip):
    r = EV.retrieval_accuracy(clip, n=4, seed=1)
    vals = [r["i2t_top1"], r["t2i_top1"], *r["i2t_by_attr"].values(), *r["t2i_by_attr"].values()]
    assert r["n"] == 4 and all(0 <= v <= 1 for v in vals)


def test_dino_views_change_the_background_but_keep_the_object():
    """DINO's augmentations come from the pixels alone: the border's colour is repainted."""
    x = E.preprocess([render(s) for s in sample_scenes(8, 2)], "cpu")
    gen = torch.Generator().manual_seed(0)
    v = ET.augment(x.clone(), gen)
    assert v.shape == x.shape and not torch.allclose(v[:, :, 0, 0], x[:, :, 0, 0], atol=0.1)
    assert ET.augment(x.clone(), gen, (0.15, 0.45), 16).shape == (8, 3, 16, 16)


def test_balanced_scenes():
    scenes = balanced_scenes(2, seed=0)
    assert len(scenes) == 12 and all(sum(s.color == c for s in scenes) == 2 for c in COLORS)
    assert all(s.subject is None and s.style not in HELDOUT_STYLES for s in scenes)


def test_validate_base_on_a_two_step_model(pipe, built, clip):
    v = validate_base(pipe, n_per_attr=1, seed=0, steps=2)
    assert v["n"] == 6 and set(v["accuracy"]) == set(ATTRIBUTES)
    assert all(0.0 <= a <= 1.0 for a in v["accuracy"].values())
    div = seed_diversity(pipe, n=3, steps=2)
    deg = degradation(pipe, n=2, steps=2)
    assert 0 <= div["share_differing"] <= 1
    # samples that miss their prompt are left out, unless none follows it (a two-step model)
    assert len(deg["strengths"]) == 2 - deg["n_off_prompt"] or (deg["n_off_prompt"] == 2 and len(deg["strengths"]) == 2)
    table = validation_table(built[1], v, div, deg, EV.retrieval_accuracy(clip, 2, 0))
    assert "| accuracy |" in table and "micro-clip" in table and "## Micro base model" in table
    assert "dotted" in table and "Seed diversity" in table  # the held-out concepts' VAE reconstruction line


def test_micro_dino_never_trains_on_a_held_out_subject_or_style(monkeypatch):
    """DINO meets the benchmark's subjects for the first time when it scores them: every image its
    training renders is a pretraining scene."""
    seen = []

    def spy(scene):
        seen.append(scene)
        return render(scene)

    monkeypatch.setattr(ET, "render", spy)
    ET.train_micro_dino(1, batch_size=4, seed=0, device="cpu", log=_quiet, n_images=300, n_local=1)
    assert len(seen) == 300
    assert not [s for s in seen if s.subject is not None or s.style in HELDOUT_STYLES]
