"""Typed run configuration: YAML + dotted `key=value` overrides -> dataclasses.

Every option is a dataclass field with help text (peft's `LoraConfig` style). Parsing is strict:
an unknown key or a value of the wrong type or range raises a one-line `DcoError` that names the
dotted field, so a typo in `methods.dco.betta=2000` fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import DcoError, did_you_mean


def option(default, help: str, check=None, choices=None, identity: bool = True):
    """A config field with help text, an optional range check and optional allowed values.
    `identity=False` marks an option that changes only speed: it stays out of cell ids."""
    meta = {"help": help, "check": check, "choices": choices, "identity": identity}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def positive(x):
    return None if x > 0 else "must be > 0"


def non_negative(x):
    return None if x >= 0 else "must be >= 0"


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
        return float(value)
    if tp is str:
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
            raise DcoError(f"{prefix}{key}: unknown key; {did_you_mean(str(key), fields)}")
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


def identity_dict(cfg) -> dict:
    """`dataclasses.asdict(cfg)` without the options marked `identity=False` (speed only), so that
    turning one on, or adding one, leaves existing cell ids as they were."""
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        if not f.metadata.get("identity", True):
            out.pop(f.name)
    return out


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


# ---------------------------------------------------------------------------------------------
# YAML files and key=value overrides


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DcoError(f"{path}: config file not found; pass an existing YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise DcoError(f"{path}:{line} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax")
    if not isinstance(data, dict):
        raise DcoError(f"{path}: the top level must be a mapping of options")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise DcoError(f"override '{text}': expected key=value, e.g. methods.dco.beta=2000")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def set_dotted(data: dict, keys: list[str], value) -> None:
    for k in keys[:-1]:
        node = data.get(k)
        if not isinstance(node, dict):
            node = data[k] = {}
        data = node
    data[keys[-1]] = value


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in (top or {}).items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
