"""The micro base model's networks: a real StableDiffusionPipeline, built from configs.

* VAE 32x32x3 -> 16x16x4 (AutoencoderKL, two blocks, no mid-block attention).
* UNet2DConditionModel (32, 64, 64) with cross-attention at 8x8 and 4x4, or also at 16x16
  (``attention_16``), and ``addition_embed_type="text"``: the UNet attention-pools the text
  states into its time embedding, which made attribute binding learnable at all; the stock
  pipeline needs no extra inputs for it.  v-prediction, linear betas 1e-4..0.02.
* CLIPTextModel (hidden 64, 2 layers) over the offline CLIP tokenizer, 20 tokens: the world's
  longest captions ("a sks yellow triangle on a gray background, large, bottom left, in outline
  style") are 19 tokens with BOS/EOS.
* DDIM with trailing timesteps.

Their training is in ``training.py``; ``build.py`` runs it and saves the pipeline.
"""
from __future__ import annotations

import copy
import functools
import os
from pathlib import Path

import numpy as np
import torch

from ..resources import data_dir
from .world import CANVAS

TEXT_LEN = 20


def default_micro_dir() -> Path:
    """Where the shipped micro weights live (``data/micro``), overridable by $DCOBENCH_MICRO."""
    return Path(os.environ.get("DCOBENCH_MICRO") or data_dir() / "micro")


def resolve(device=None) -> torch.device:
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@functools.lru_cache(maxsize=1)
def tokenizer():
    from ..models.tokenizer import offline_clip_tokenizer

    return offline_clip_tokenizer(TEXT_LEN)


def tokenize(texts: list[str]) -> torch.Tensor:
    # Exactly how StableDiffusionPipeline.encode_prompt tokenizes, so training matches sampling.
    return tokenizer()(list(texts), padding="max_length", max_length=TEXT_LEN, truncation=True,
                       return_tensors="pt").input_ids


def to_pixels(images) -> torch.Tensor:
    """uint8 (N, 32, 32, 3) -> float (N, 3, 32, 32) in [-1, 1]."""
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).float()
    return x / 127.5 - 1.0


def make_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=CANVAS,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(32, 64),
                         layers_per_block=1, norm_num_groups=8, mid_block_add_attention=False)


def make_unet(seed: int = 0, attention_16: bool = False):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    first = "CrossAttnDownBlock2D" if attention_16 else "DownBlock2D"
    last = "CrossAttnUpBlock2D" if attention_16 else "UpBlock2D"
    return UNet2DConditionModel(
        sample_size=CANVAS // 2, in_channels=4, out_channels=4, block_out_channels=(32, 64, 64),
        layers_per_block=1, norm_num_groups=8, cross_attention_dim=64, attention_head_dim=4,
        down_block_types=(first, "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", last),
        # 4 pooling heads of 16 dims (the default 64 heads would leave 1 dim per head)
        addition_embed_type="text", addition_embed_type_num_heads=4)


def make_text_encoder(seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=TEXT_LEN, projection_dim=64,
                         bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)
    return CLIPTextModel(cfg)


SCHEDULE = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                prediction_type="v_prediction")


def make_scheduler():
    """The sampling scheduler saved with the pipeline.  "trailing" spacing starts sampling at
    t=999, the noisiest step the UNet was trained on (recommended for v-prediction)."""
    from diffusers import DDIMScheduler

    # steps_offset only applies to "leading"; 1 keeps the stock pipeline from warning about it.
    return DDIMScheduler(**SCHEDULE, clip_sample=False, set_alpha_to_one=False,
                         timestep_spacing="trailing", steps_offset=1)


def alphas_cumprod() -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(**SCHEDULE).alphas_cumprod.float()


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_micro_pipeline(vae, unet, text_encoder, scheduler=None):
    """Assemble the stock StableDiffusionPipeline (no safety checker) from trained parts."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer(), unet=unet,
                                   scheduler=scheduler or make_scheduler(), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def save_pipeline(pipe, path, dtype=torch.float16) -> Path:
    """``save_pretrained`` (safetensors) into a temporary sibling folder, then rename, so a reader
    never sees half a model.  fp16 halves the size (the 49408x64 token table is most of it);
    load with ``torch_dtype=torch.float32`` to get fp32 weights back."""
    from ..models.pipeline import quiet_libraries
    from ..store import atomic_folder

    quiet_libraries()  # diffusers warns about fp16 pipelines on the CPU: we only store them
    path = Path(path)
    with atomic_folder(path) as tmp:  # a previous build is moved aside only once this one is complete
        copy.deepcopy(pipe).to("cpu", dtype).save_pretrained(tmp, safe_serialization=True)
        # transformers 5 loads in the config's dtype by default while diffusers upcasts to fp32:
        # declaring fp32 keeps a plain from_pretrained(path) consistent (fp16 is only storage).
        cfg = tmp / "text_encoder" / "config.json"
        cfg.write_text(cfg.read_text().replace('"dtype": "float16"', '"dtype": "float32"'))
    return path


