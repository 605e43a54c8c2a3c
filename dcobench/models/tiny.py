"""Tiny random pipelines built from configs, for tests and the `tiny` suite.

They are real diffusers pipelines: saved with `save_pretrained` and loaded back with
`from_pretrained`, the same path a hub id takes, so everything downstream (LoRA in and out,
sampling, scoring) runs the production code on a model that fits in a few MB.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

from .tokenizer import offline_clip_tokenizer, offline_t5_tokenizer

TEXT_LEN = 16  # tiny prompts; keeps the text encoder and cross-attention cheap


def _text_encoder(hidden: int = 32, projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=TEXT_LEN,
        projection_dim=hidden,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg).eval()


def _vae(seed: int = 0, **extra):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=32,
        mid_block_add_attention=False,
        **extra,
    )


def _scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )


# What the tiny SD and SDXL UNets share: 16x16x4 latents, two levels of 32 and 64 channels.
_UNET = dict(sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
             norm_num_groups=8)


def build_tiny_sd(seed: int = 0, prediction_type: str = "epsilon"):
    """A random StableDiffusionPipeline: 32 px images, 16x16x4 latents, ~2M parameters."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **_UNET,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    return StableDiffusionPipeline(
        vae=_vae(seed),
        text_encoder=_text_encoder(32, seed=seed),
        tokenizer=offline_clip_tokenizer(TEXT_LEN),
        unet=unet,
        scheduler=_scheduler(prediction_type),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_tiny_sdxl(seed: int = 0, prediction_type: str = "epsilon"):
    """A random StableDiffusionXLPipeline with two text encoders, pooled embeds and time ids."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        **_UNET,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64,  # the two encoders' hidden states are concatenated: 32 + 32
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        projection_class_embeddings_input_dim=32 + 6 * 8,  # pooled text + 6 time ids
    )
    tok = offline_clip_tokenizer(TEXT_LEN)
    return StableDiffusionXLPipeline(
        vae=_vae(seed),
        text_encoder=_text_encoder(32, seed=seed),
        text_encoder_2=_text_encoder(32, projection=True, seed=seed + 1),
        tokenizer=tok,
        tokenizer_2=tok,
        unet=unet,
        scheduler=_scheduler(prediction_type),
    )


T5_LEN = 32  # the tiny T5's tokenizer length; the SD3 pipeline pads prompts to max_sequence_length anyway


def _t5_encoder(d_model: int, vocab_size: int, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu", is_encoder_decoder=False, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(cfg).eval()


def build_tiny_sd3(seed: int = 0, t5: bool = True):
    """A random StableDiffusion3Pipeline: an SD3.5-style MMDiT (joint attention with context
    projections, RMS q/k norm, one dual-attention block), CLIP-L and CLIP-G with projections, a
    T5 encoder (or none, `t5=False`, as users drop it to save memory), flow-matching Euler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    joint_dim = 64  # T5's width; the two CLIPs' 32 + 32 hidden states are padded to it
    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=16,
        patch_size=2,
        in_channels=4,
        out_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=joint_dim,
        caption_projection_dim=32,
        pooled_projection_dim=64,  # pooled CLIP-L + CLIP-G
        pos_embed_max_size=16,
        qk_norm="rms_norm",
        dual_attention_layers=(0,),
    )
    tokenizer_3 = offline_t5_tokenizer(T5_LEN) if t5 else None
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        # SD3's VAE has no quant convs and a shift factor; the latents are (z - shift) * scale
        vae=_vae(seed, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305),
        text_encoder=_text_encoder(32, projection=True, seed=seed),
        tokenizer=offline_clip_tokenizer(TEXT_LEN),
        text_encoder_2=_text_encoder(32, projection=True, seed=seed + 1),
        tokenizer_2=offline_clip_tokenizer(TEXT_LEN),
        text_encoder_3=_t5_encoder(joint_dim, len(tokenizer_3), seed + 2) if t5 else None,
        tokenizer_3=tokenizer_3,
    )


BUILDERS = {"sd": build_tiny_sd, "sdxl": build_tiny_sdxl, "sd3": build_tiny_sd3}


def tiny_model_path(kind: str = "sd", root: str | Path | None = None, **kwargs) -> Path:
    """Build (once) and save a tiny pipeline under the cache; return its folder.

    The folder name carries the builder arguments, and it is written to a temporary folder and
    renamed, so two processes never see a half-written model.
    """
    from .pipeline import quiet_libraries

    quiet_libraries()
    root = Path(root) if root is not None else cache_dir()
    tag = "-".join(f"{k}{v}" for k, v in sorted(kwargs.items()))
    path = root / f"tiny-{kind}-v1{('-' + tag) if tag else ''}"
    if (path / "model_index.json").is_file():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=".building-"))
    try:
        BUILDERS[kind](**kwargs).save_pretrained(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first
            if not (path / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def cache_dir() -> Path:
    return Path(os.environ.get("DCOBENCH_CACHE", Path.home() / ".cache" / "dcobench"))
