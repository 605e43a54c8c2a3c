"""`dcobench caption`: template fallback, a real image-to-text pipeline (tiny, from configs), no overwrite."""

import shutil

import pytest

from dcobench.captions import insert_identifier


def test_insert_identifier():
    assert insert_identifier("a dog sitting on the grass", "sks", "dog") == "a sks dog sitting on the grass"
    assert insert_identifier("A Dog on snow", "sks", "dog") == "A sks Dog on snow"
    assert insert_identifier("a brown animal", "sks", "dog") == "a photo of sks dog, a brown animal"
    assert insert_identifier("", "sks", "dog") == "a photo of sks dog"
    assert insert_identifier("a sks dog", "sks", "dog") == "a sks dog"


@pytest.fixture
def subject(tmp_path, tiny_suite):
    folder = tmp_path / "s"
    shutil.copytree(tiny_suite.subjects[0].root, folder)
    for p in folder.glob("*.txt"):
        p.unlink()
    return folder


@pytest.fixture(scope="module")
def tiny_captioner(tmp_path_factory):
    """A random VisionEncoderDecoder (ViT + GPT-2) with the offline CLIP tokenizer: a real
    transformers image-to-text model folder, loaded through the same path as a hub id."""
    import torch
    from transformers import (GPT2Config, GPT2LMHeadModel, ViTConfig, ViTImageProcessor, ViTModel,
                              VisionEncoderDecoderModel)

    from dcobench.models.tokenizer import offline_clip_tokenizer

    torch.manual_seed(0)
    enc = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64))
    dec = GPT2LMHeadModel(GPT2Config(vocab_size=49408, n_positions=32, n_embd=32, n_layer=1, n_head=2,
                                     add_cross_attention=True, bos_token_id=49406, eos_token_id=49407))
    model = VisionEncoderDecoderModel(encoder=enc, decoder=dec)
    model.config.decoder_start_token_id = 49406
    model.config.pad_token_id = 49407
    model.config.eos_token_id = 49407
    model.generation_config.decoder_start_token_id = 49406
    model.generation_config.pad_token_id = 49407
    model.generation_config.eos_token_id = 49407
    path = tmp_path_factory.mktemp("captioner")
    model.save_pretrained(path)
    offline_clip_tokenizer(32).save_pretrained(path)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_template_fallback_and_no_overwrite(subject, cli):
    r = cli("caption", subject)
    assert r.returncode == 0, r.stderr
    assert (subject / "00.txt").read_text().strip() == "a photo of sks toy"
    (subject / "00.txt").write_text("my own caption with sks toy")
    r = cli("caption", subject)
    assert "kept" in r.stdout and (subject / "00.txt").read_text() == "my own caption with sks toy"
    r = cli("caption", subject, "--force")
    assert (subject / "00.txt").read_text().strip() == "a photo of sks toy"


def test_model_captions_contain_the_identifier(subject, tiny_captioner, cli):
    r = cli("caption", subject, "--model", tiny_captioner)
    assert r.returncode == 0, r.stderr
    caps = [p.read_text().strip() for p in sorted(subject.glob("*.txt"))]
    assert len(caps) == 3 and all("sks" in c for c in caps)
    assert any(c != "a photo of sks toy" for c in caps)  # the model's words are there, not only the template
    from dcobench.suites.base import load_subject

    assert load_subject(subject).captions == caps


def test_bad_model_and_folder(subject, tmp_path, cli):
    r = cli("caption", subject, "--model", tmp_path / "nothing-here")
    assert r.returncode == 2 and "cannot load an image-to-text model" in r.stderr
    r = cli("caption", tmp_path / "missing", "--class-noun", "dog")
    assert r.returncode == 2 and "subject folder not found" in r.stderr
