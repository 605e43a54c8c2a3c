"""Typed run configuration: YAML + dotted `key=value` overrides -> dataclasses.

Every option is a dataclass field with help text (peft's `LoraConfig` style). Parsing is strict:
an unknown key or a value of the wrong type or range raises a one-line `DcoError` that names the
dotted field, so a typo in `methods.dco.betta=2000` fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .adapter_options import KINDS, AdapterOptions
from .errors import DcoError, did_you_mean
from .options import non_negative, option, positive  # noqa: F401  (re-exported: every typed config uses them)
from .overrides import YAML11_BOOLS, deep_merge, load_yaml, parse_override, set_dotted, yaml_load  # noqa: F401


@dataclass
class TrainConfig:
    rank: int = option(4, "LoRA rank r.", positive)
    alpha: float = option(4.0, "LoRA alpha; the update is scaled by alpha / rank.", positive)
    lr: float = option(1e-4, "AdamW learning rate of the LoRA parameters.", positive)
    steps: int = option(200, "Optimizer steps per trained LoRA.", positive)
    batch_size: int = option(1, "Reference images per step.", positive)
    resolution: int = option(0, "Training and sampling size in pixels; 0 takes the suite's.", non_negative)
    target_modules: list[str] = option(
        ["to_q", "to_k", "to_v", "to_out.0"], "UNet attention projections that get a LoRA."
    )
    weight_decay: float = option(1e-2, "AdamW weight decay.", non_negative)
    max_grad_norm: float = option(1.0, "Gradient clipping norm; 0 turns clipping off.", non_negative)
    grad_accum: int = option(1, "Micro-batches accumulated per optimizer step.", positive)
    optimizer: str = option("adamw", "adamw, or adamw8bit (needs bitsandbytes).", choices=["adamw", "adamw8bit"])
    mixed_precision: str = option(
        "no", "Weights of the UNet and text encoders in fp16 or bf16; LoRA parameters stay fp32.",
        choices=["no", "fp16", "bf16"],
    )
    gradient_checkpointing: bool = option(False, "Recompute UNet activations in backward to save memory.")
    compile: bool = option(
        False, "torch.compile the denoiser for training: faster steps on a GPU after a one-off compile (tens of "
        "seconds); on a CPU the compile takes minutes. Speed only: not part of cell ids.", identity=False)
    snr_gamma: float = option(0.0, "Min-SNR loss weighting gamma (5.0 is common); 0 turns it off.", non_negative)
    offset_noise: float = option(0.0, "Offset noise scale (the paper's SDXL style recipe uses 0.1).", non_negative)
    train_token: bool = option(
        False, "Also train the identifier as a new token, initialised from the class noun (paper recipe)."
    )
    token_lr: float = option(5e-6, "Learning rate of the new token's embedding (its norm is kept).", positive)
    checkpoint_every: int = option(
        0, "Also save the LoRA every N steps; sweep sample.lora_step over them (0: final LoRA only).", non_negative
    )
    captions: str = option(
        "comprehensive", "Training captions: comprehensive (each image's own caption file, else the default "
        "template) or template (one template caption for every image: the caption ablation).",
        choices=["comprehensive", "template"], id_default=True)
    caption_template: str = option(
        "", "The caption of train.captions=template, with {identifier} and {class_noun}; empty: 'a photo of "
        "{identifier} {class_noun}' (styles: 'a picture in {identifier} style').", id_default=True)
    log_to: str = option(
        "none", "Live training logs under RUN/logs/<train_id>/: tensorboard or wandb (offline unless WANDB_MODE "
        "says otherwise), every value the objective logs plus lr and step time. Not part of the train id.",
        choices=["none", "tensorboard", "wandb"], identity=False)
    resume_every: int = option(
        -1, "Save a resumable training state (LoRA, optimizer, RNG, token row) every N steps, so a killed "
        "training resumes there; -1: every 10% of the steps, at least 50; 0: never. Not part of the train id.",
        lambda x: None if x >= -1 else "must be -1 (every 10% of the steps), 0 (never) or a step count",
        identity=False,
    )
    adapter: str = option(
        "lora", "The peft adapter trained on the denoiser: lora, dora (LoRA with weight decomposition), loha, lokr, "
        "oft or boft; each takes train.target_modules, the ranked ones (lora, dora, loha, lokr) train.rank and "
        "train.alpha, and its own train.adapters.<kind>.* options (docs/adapters.md).",
        choices=list(KINDS), id_default=True)
    adapters: AdapterOptions = field(default_factory=AdapterOptions, metadata={
        "help": "Each adapter kind's own options; only the chosen kind's enter the train id.", "id_default": True})


@dataclass
class SampleConfig:
    steps: int = option(25, "Denoising steps of the suite's scheduler.", positive)
    seeds: list[int] = option([0, 1], "Sampling seeds: each prompt gets images for every seed.")
    images_per_prompt: int = option(1, "Images per prompt and seed.", positive)
    batch_size: int = option(8, "Images denoised together.", positive)
    guidance: str = option(
        "auto",
        "cfg: classifier-free guidance of the fine-tuned model; consistency: DCO's consistency "
        "guidance; auto: the method's own default.",
        choices=["auto", "cfg", "consistency"],
    )
    cfg_scale: float = option(7.5, "Classifier-free guidance scale (guidance=cfg).", non_negative)
    w_text: float = option(7.5, "Text guidance of the base model (guidance=consistency).", non_negative)
    w_con: float = option(1.0, "Consistency guidance scale (guidance=consistency).", non_negative)
    max_prompts: int = option(0, "Use only the first N prompts of each subject; 0 uses all.", non_negative)
    lora_step: int = option(0, "Sample from the LoRA saved at this training step (train.checkpoint_every); "
                            "0 takes the final one.", non_negative)
    prompt_indices: list[int] = option([], "Use only these prompt indices (0-based) of each subject; empty uses all.",
                                       non_negative)
    compile: bool = option(
        False, "torch.compile the denoiser for sampling: faster denoising on a GPU after a one-off compile (a "
        "second graph for consistency guidance's base-model pass); images match the eager path to floating-point "
        "tolerance. Speed only: not part of cell ids.", identity=False)


@dataclass
class ScoreConfig:
    enabled: bool = option(True, "Score each cell right after sampling.")
    metrics: list[str] = option(
        ["dino", "clip_i", "clip_t", "style_dino", "style_clip_i"],
        "Metrics to compute (see `dcobench ls metrics`); style_* only where style references exist.",
    )
    clip: str = option("openclip:ViT-B-32@openai", "CLIP backbone spec NAME[:ARCH][@WEIGHTS] for clip_i / clip_t.")
    dino: str = option("timm:vit_small_patch16_224.dino", "DINO backbone spec for dino (DreamBench: ViT-S/16).")
    dinov2: str = option("timm:vit_small_patch14_dinov2.lvd142m", "DINOv2 backbone spec for dinov2.")
    clip_t_prompt: str = option(
        "class_noun",
        "Text CLIP-T scores: the prompt with the identifier replaced by the class noun, or removed.",
        choices=["class_noun", "remove"],
    )
    batch_size: int = option(32, "Images embedded together.", positive)


@dataclass
class ReportConfig:
    pareto_metrics: list[str] = option(
        [], "Subject-fidelity metrics of the Pareto plot and the dominance table (against CLIP-T); empty: dino "
        "and clip_i. A suite whose own encoders cannot see its subjects names a better judge here.")


@dataclass
class ExecutorConfig:
    name: str = option("local", "local: one process runs every training in turn; ray: one Ray task per training "
                       "(and its cells), on a local Ray instance or a cluster (pip install dcobench[ray]).",
                       choices=["local", "ray"])
    address: str = option("", "Ray cluster address (what `ray start --head` prints, or auto); empty: $RAY_ADDRESS, "
                          "else a local Ray instance.")
    num_gpus: float = option(-1.0, "GPUs per Ray training task; -1: 1 when the cluster has GPUs, else 0.",
                             lambda x: None if x >= 0 or x == -1 else "must be -1 (auto) or >= 0")
    num_cpus: float = option(1.0, "CPUs per Ray training task.", positive)
    workers: int = option(0, "Local Ray instance only: training tasks at a time; 0: as many as the machine's CPUs "
                          "(or GPUs) allow.", non_negative)
    fail_fast: bool = option(False, "Stop at the first training or cell that raises (or whose loss is not finite); "
                             "default: record it in its folder (failed.json, traceback.txt), go on with the others, "
                             "list the failures at the end and exit 1. `--fail-fast` sets it.")


@dataclass
class MethodConfig:
    """Fields shared by every method; each objective subclasses this with its own knobs."""

    sweep: dict[str, list] = option(
        {},
        "Knob -> values; each value becomes its own cell. A knob is a field of this method "
        "(e.g. beta) or a dotted train/sample field (e.g. sample.w_con, train.steps).",
    )


@dataclass
class RunConfig:
    suite: str = option("micro", "Suite name (see `dcobench ls`) or path to a suite YAML file.")
    methods: dict[str, MethodConfig] = option({}, "Method name -> its config; `--methods` picks which run.")
    sweeps: dict[str, dict[str, list]] = option(
        {}, "Guidance mode (cfg, consistency) -> the sampler sweep a method takes when it declares no sweep of its own "
        "(a plugin's method, say), so that it is swept like its peers; e.g. sweeps.cfg={sample.cfg_scale: [3.0, 7.5]}. "
        "Suites set it to the sweep of their own methods.")
    data: str = option("", "Dataset folder for suites that read one (dreambench).")
    model: str = option("", "Base model (diffusers folder or hub id) replacing the suite's own.")
    seeds: list[int] = option([0], "Training seeds; each is its own cell.")
    subjects: list[str] = option([], "Run only these subjects of the suite; empty runs all.")
    merge: list[str] = option(
        [], "Merge methods (direct, ziplora): also train each method's style LoRAs, merge every subject "
        "LoRA with every style LoRA and sample '<prompt>, in <style> style'; `--merge` sets it.")
    merges: dict[str, MethodConfig] = option({}, "Merge method name -> its config, e.g. merges.ziplora.steps=50.")
    styles: list[str] = option([], "Styles that --merge pairs with the subjects; empty uses all of the suite's.")
    device: str = option("auto", "auto, cpu, cuda or cuda:N.")
    deterministic: bool = option(
        False, "PyTorch's deterministic kernels (torch.use_deterministic_algorithms, CUBLAS_WORKSPACE_CONFIG=:4096:8, "
        "no cuDNN autotuning): bit-identical GPU trainings on one GPU model and software stack, at some speed cost.")
    executor: ExecutorConfig = field(default_factory=ExecutorConfig, metadata={
        "help": "How cells run (`--executor`, `--ray-address`, `--workers`); not recorded in run.json."})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "LoRA training."})
    sample: SampleConfig = field(default_factory=SampleConfig, metadata={"help": "Sampling."})
    score: ScoreConfig = field(default_factory=ScoreConfig, metadata={"help": "Scoring."})
    report: ReportConfig = field(default_factory=ReportConfig, metadata={"help": "Report."})


# ---------------------------------------------------------------------------------------------
# dict -> dataclass


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise DcoError(f"{where}: expected a mapping of options (got {value!r})")
        return from_dict(tp, value, where + ".")
    if origin in (list, tuple):
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, (list, tuple)):
            value = [value]  # `seeds=3` on the command line means [3]
        return [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise DcoError(f"{where}: expected a mapping (got {value!r})")
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, str) and value.lower() in YAML11_BOOLS:  # YAML 1.1 spellings are still meant as booleans
            return YAML11_BOOLS[value.lower()]
        if isinstance(value, bool):
            return value
        raise DcoError(f"{where}: expected true or false (got {value!r})")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DcoError(f"{where}: expected an integer (got {value!r})")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DcoError(f"{where}: expected a number (got {value!r})")
        if not math.isfinite(value):
            raise DcoError(f"{where}: expected a finite number (got {value!r}); give a real value")
        return float(value)
    if tp is str:
        if isinstance(value, bool):
            raise DcoError(f"{where}: expected a string (got the boolean {str(value).lower()}); quote the value, "
                           f"e.g. {where.rsplit('.', 1)[-1]}: \"...\"")
        if not isinstance(value, str):
            raise DcoError(f"{where}: expected a string (got {value!r})")
        return value
    return value


def from_dict(cls, data: dict | None, prefix: str = ""):
    """Build dataclass `cls` from `data`, failing on unknown keys and bad values."""
    data = data or {}
    if not isinstance(data, dict):
        raise DcoError(f"{prefix.rstrip('.') or 'config'}: expected a mapping (got {data!r})")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            hint = did_you_mean(str(key), fields) if fields else f"{prefix.rstrip('.') or 'this section'} takes no options"
            raise DcoError(f"{prefix}{key}: unknown key; {hint}")
        kwargs[key] = check_value(fields[key], hints[key], value, prefix + key)
    return cls(**kwargs)


def check_value(f: dataclasses.Field, tp, value, where: str):
    value = _coerce(value, tp, where)
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise DcoError(f"{where}: must be one of {', '.join(map(str, choices))} (got {value!r})")
    check = f.metadata.get("check")
    values = value if isinstance(value, list) else [value]
    for v in values:
        problem = check(v) if check else None
        if problem:
            raise DcoError(f"{where}: {problem} (got {v!r})")
    return value


def field_help(cls, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, help) for every option of `cls`, recursing into sections."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += field_help(hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((prefix + f.name, repr(default), f.metadata.get("help", "")))
    return rows
