"""The loop users run instead of dcobench: the per-step work of diffusers' DreamBooth LoRA examples
(`examples/dreambooth/train_dreambooth_lora.py` for SD1.5, `train_dreambooth_lora_sdxl.py` for
SDXL), replicated as a benchmark baseline.

Each step, as the examples do it with their defaults (no `--pre_compute_text_embeddings`, no
`--cache_latents`, `--dataloader_num_workers 0`):

1. the dataset opens each image file of the batch, applies `exif_transpose`, converts to RGB,
   `Resize` (bilinear) + `RandomCrop` + `ToTensor` + `Normalize([0.5], [0.5])`, and tokenizes the
   caption (`padding="max_length"`);
2. `vae.encode(pixels).latent_dist.sample() * scaling_factor` (SDXL: the VAE in fp32);
3. the text encoder(s) on the batch's token ids (SDXL: both encoders, penultimate hidden states
   concatenated, CLIP-G's pooled output; the SDXL example's per-image-caption path);
4. noise, uniform timesteps, `noise_scheduler.add_noise`;
5. the UNet forward with the LoRA, `F.mse_loss(pred.float(), target.float())`, backward,
   `clip_grad_norm_`, `AdamW.step()`, the constant `lr_scheduler.step()`, `zero_grad()`.

The LoRA is the examples' (`LoraConfig(r, lora_alpha, init_lora_weights="gaussian",
target_modules)` through `unet.add_adapter`), with the same rank, alpha and targets as the
dcobench side. Two departures, neither of which changes the work: batches are drawn with
replacement from an explicit generator (the examples shuffle per epoch with the global RNG), and
the VAE sample, noise and timesteps come from that generator in the order dcobench's trainer
draws them, so that for equal seeds both loops see the same examples and the same noise and their
loss curves can be compared step by step. Accelerate's wrapper is left out (on one device without
mixed-precision autocast it only forwards the calls).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ADAPTER = "example_lora"


class DreamBoothDataset:
    """The examples' dataset: files are read and transformed in `__getitem__`, every step."""

    def __init__(self, images, captions, tokenizers, size: int):
        from torchvision import transforms

        self.images, self.captions, self.tokenizers = list(images), list(captions), tokenizers
        self.transforms = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.RandomCrop(size),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ])

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        from PIL import Image
        from PIL.ImageOps import exif_transpose

        image = exif_transpose(Image.open(self.images[i]))
        if image.mode != "RGB":
            image = image.convert("RGB")
        ids = [tok(self.captions[i], truncation=True, padding="max_length", max_length=tok.model_max_length,
                   return_tensors="pt").input_ids for tok in self.tokenizers]
        return {"pixel_values": self.transforms(image), "input_ids": ids}


def collate(examples: list[dict]) -> dict:
    pixels = torch.stack([e["pixel_values"] for e in examples]).to(memory_format=torch.contiguous_format).float()
    ids = [torch.cat([e["input_ids"][k] for e in examples]) for k in range(len(examples[0]["input_ids"]))]
    return {"pixel_values": pixels, "input_ids": ids}


class ExampleLoop:
    """One LoRA training with the examples' per-step work on a pipeline's components.

    `weight_dtype` is the examples' `--mixed_precision` (UNet and text encoders cast to it; the
    SDXL example keeps its VAE in fp32, the SD1.5 one casts it too); LoRA parameters stay fp32.
    """

    def __init__(self, pipe, subject, rank: int, alpha: float, targets: list[str], lr: float, batch_size: int,
                 resolution: int, seed: int, weight_decay: float = 1e-2, max_grad_norm: float = 1.0,
                 gradient_checkpointing: bool = False):
        from diffusers import DDPMScheduler
        from diffusers.optimization import get_scheduler
        from peft import LoraConfig

        self.pipe, self.unet, self.vae = pipe, pipe.unet, pipe.vae
        self.sdxl = getattr(pipe, "text_encoder_2", None) is not None
        self.encoders = [pipe.text_encoder, pipe.text_encoder_2] if self.sdxl else [pipe.text_encoder]
        tokenizers = [pipe.tokenizer, pipe.tokenizer_2] if self.sdxl else [pipe.tokenizer]
        for m in (self.unet, self.vae, *self.encoders):
            m.requires_grad_(False)
        torch.manual_seed(seed)  # LoRA A is random (as in dcobench's add_lora, so both start equal)
        self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
                                         target_modules=list(targets)), adapter_name=ADAPTER)
        self.params = [p for n, p in self.unet.named_parameters() if "lora_" in n]
        for p in self.params:  # the examples' cast_training_params(unet, torch.float32)
            p.data = p.data.float()
            p.requires_grad_(True)
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.checkpointing = gradient_checkpointing
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, betas=(0.9, 0.999), weight_decay=weight_decay, eps=1e-8)
        self.lr_scheduler = get_scheduler("constant", optimizer=self.optimizer)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.dataset = DreamBoothDataset(subject.images, subject.captions, tokenizers, resolution)
        self.batch_size, self.max_grad_norm, self.resolution = batch_size, max_grad_norm, resolution
        self.gen = torch.Generator().manual_seed(seed)
        # the examples' `weight_dtype`: a local, not `unet.dtype` (which walks every submodule per call)
        self.weight_dtype = next(p.dtype for n, p in self.unet.named_parameters() if "lora_" not in n)
        self.unet.train()

    def encode_prompt(self, input_ids: list[torch.Tensor]):
        dev = self.unet.device
        if not self.sdxl:
            return self.encoders[0](input_ids[0].to(dev))[0], None
        embeds = []
        for encoder, ids in zip(self.encoders, input_ids):
            out = encoder(ids.to(dev), output_hidden_states=True, return_dict=False)
            pooled = out[0]
            embeds.append(out[-1][-2])
        return torch.cat(embeds, dim=-1), pooled.view(pooled.shape[0], -1)

    def step(self) -> float:
        unet, vae, dev = self.unet, self.vae, self.unet.device
        idx = torch.randint(0, len(self.dataset), (self.batch_size,), generator=self.gen)
        batch = collate([self.dataset[i] for i in idx.tolist()])
        pixels = batch["pixel_values"].to(dev, vae.dtype)
        model_input = vae.encode(pixels).latent_dist.sample(generator=self.gen) * vae.config.scaling_factor
        model_input = model_input.to(self.weight_dtype)
        noise = torch.randn(model_input.shape, generator=self.gen).to(dev, model_input.dtype)
        bsz = model_input.shape[0]
        timesteps = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (bsz,), generator=self.gen)
        timesteps = timesteps.to(dev).long()
        noisy = self.noise_scheduler.add_noise(model_input, noise, timesteps)
        hidden, pooled = self.encode_prompt(batch["input_ids"])
        added = None
        if self.sdxl:
            r = self.resolution  # compute_time_ids(original_size, crop_top_left) of an uncropped image
            time_ids = torch.tensor([[r, r, 0, 0, r, r]], device=dev, dtype=self.weight_dtype).repeat(bsz, 1)
            added = {"time_ids": time_ids, "text_embeds": pooled.to(self.weight_dtype)}
        pred = unet(noisy, timesteps, hidden.to(self.weight_dtype), added_cond_kwargs=added, return_dict=False)[0]
        if self.noise_scheduler.config.prediction_type == "epsilon":
            target = noise
        else:
            target = self.noise_scheduler.get_velocity(model_input, noise, timesteps)
        loss = F.mse_loss(pred.float(), target.float(), reduction="mean")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad()
        return loss.detach().item()

    def close(self) -> None:
        """Remove the adapter so the next side starts from the bare UNet."""
        if self.checkpointing:
            self.unet.disable_gradient_checkpointing()
        self.unet.delete_adapters(ADAPTER)
        self.unet.eval()
