"""From config to cells.

`resolve` merges, in order: dataclass defaults < the suite's defaults < the YAML config < `key=value`
overrides < explicit CLI flags, and validates all of it. `expand` turns the result into cells:
methods x subjects x training seeds x each method's swept knobs. A cell's id hashes its resolved
config; its train id hashes only what training reads, so cells that differ in a sampling knob
(w_con, cfg_scale) share one LoRA.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from . import methods as _methods  # noqa: F401  (registers the objectives)
from .config import (MethodConfig, RunConfig, SampleConfig, TrainConfig, check_value, deep_merge, from_dict,
                     identity_dict, load_yaml, parse_override, set_dotted)
from .errors import DcoError, did_you_mean
from .registry import METHODS
from .suites import Subject, Suite, get_suite

DEFAULT_METHODS = ["dco", "dreambooth"]
SECTIONS = {"train": TrainConfig, "sample": SampleConfig}


@dataclass
class Plan:
    config: RunConfig
    suite: Suite
    methods: list[str]
    cells: list["Cell"]
    merge_cells: list = field(default_factory=list)  # merging.MergeCell, when config.merge is set


def resolve(config_path=None, overrides=(), methods: list[str] | None = None, suite: str | None = None,
            data: str | None = None, model: str | None = None, merge: list[str] | None = None):
    """Return (RunConfig, Suite, selected method names); raises DcoError on any bad input."""
    file_cfg = load_yaml(config_path) if config_path else {}
    over: dict = {}
    for text in overrides:
        set_dotted(over, *parse_override(text))
    picks = {}
    for key, flag in (("suite", suite), ("data", data), ("model", model)):
        picks[key] = flag or over.get(key) or file_cfg.get(key) or getattr(RunConfig(), key)
        if not isinstance(picks[key], str):
            raise DcoError(f"{key}: expected a name or path (got {picks[key]!r})")
    suite_obj = get_suite(picks["suite"], picks["data"], picks["model"])
    raw = deep_merge(deep_merge(suite_obj.defaults, file_cfg), over)
    raw.update(picks)
    if merge is not None:
        raw["merge"] = merge
    raw_merges = raw.pop("merges", None) or {}
    raw_methods = raw.pop("methods", None) or {}
    if not isinstance(raw_methods, dict):
        raise DcoError("methods: expected a mapping of method name -> options; pick methods with --methods")
    selected = list(methods) if methods else (list(file_cfg.get("methods") or {}) or DEFAULT_METHODS)
    for name in list(raw_methods) + selected:
        METHODS.get(name)  # unknown names fail here, with a suggestion
    cfg = from_dict(RunConfig, raw)
    cfg.methods = {
        name: from_dict(METHODS.get(name).config_cls, raw_methods.get(name), f"methods.{name}.")
        for name in dict.fromkeys(list(raw_methods) + selected)
    }
    for name, mcfg in cfg.methods.items():
        for knob, values in mcfg.sweep.items():
            if not values:
                raise DcoError(f"methods.{name}.sweep.{knob}: give at least one value")
            for v in values:
                _apply_knob(mcfg, TrainConfig(), SampleConfig(), knob, v, f"methods.{name}.sweep.{knob}")
    from .merging import merge_configs

    cfg.merges = merge_configs(cfg, raw_merges)
    if cfg.merge:
        from .families import family_of_model

        family = family_of_model(suite_obj.model)
        if family is not None:
            family.check_merges()
    for m in cfg.report.pareto_metrics:
        if m not in cfg.score.metrics:
            raise DcoError(f"report.pareto_metrics: '{m}' is not scored by this run (score.metrics: "
                           f"{', '.join(cfg.score.metrics)}); add it to score.metrics or pick one of those")
    suite_obj.select(cfg.subjects)
    if cfg.styles:
        suite_obj.merge_styles(cfg.styles)
    return cfg, suite_obj, selected


def check_cell(cell: "Cell") -> None:
    """Cross-field checks that only a fully resolved cell can answer."""
    step, train = cell.sample.lora_step, cell.train
    if step and step != train.steps and (not train.checkpoint_every or step % train.checkpoint_every or step > train.steps):
        raise DcoError(f"methods.{cell.method}: sample.lora_step={step} has no saved LoRA; use a multiple of "
                       f"train.checkpoint_every (now {train.checkpoint_every}) up to train.steps ({train.steps})")


def _apply_knob(mcfg, train, sample, knob: str, value, where: str):
    section, _, name = knob.partition(".")
    if name and section in SECTIONS:
        target = {"train": train, "sample": sample}[section]
    elif not name:
        target, name = mcfg, knob
    else:
        raise DcoError(f"{where}: unknown knob; use a method field or train.<field> / sample.<field>")
    fields = {f.name: f for f in dataclasses.fields(target)}
    if name not in fields or name == "sweep":
        raise DcoError(f"{where}: unknown knob '{name}'; {did_you_mean(name, set(fields) - {'sweep'})}")
    value = check_value(fields[name], typing.get_type_hints(type(target))[name], value, where)
    new = dataclasses.replace(target, **{name: value})
    if target is mcfg:
        return new, train, sample
    return (mcfg, new, sample) if section == "train" else (mcfg, train, new)


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def sample_identity(sample: SampleConfig) -> dict:
    """The sampling fields that matter: the other guidance mode's scales do not change an image."""
    out = dataclasses.asdict(sample)
    for k in (("w_text", "w_con") if sample.guidance == "cfg" else ("cfg_scale",)):
        out.pop(k)
    return out


def model_identity(model: str) -> str:
    """A hub id as is; a local folder by its configs and weight sizes (not its machine path)."""
    path = Path(model)
    if not path.is_dir():
        return model
    h = hashlib.sha1()
    for f in sorted(path.rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(path)).encode())
            h.update(f.read_bytes() if f.suffix in (".json", ".txt") else str(f.stat().st_size).encode())
    return f"{path.name}@{h.hexdigest()[:12]}"


@dataclass
class Cell:
    method: str
    subject: Subject
    seed: int
    knobs: dict
    method_cfg: MethodConfig
    train: TrainConfig
    sample: SampleConfig
    suite: Suite
    model_id: str

    @property
    def guidance(self) -> str:
        return self.sample.guidance

    def train_identity(self) -> dict:
        mcfg = {k: v for k, v in dataclasses.asdict(self.method_cfg).items() if k != "sweep"}
        return {
            "method": self.method,
            "method_config": mcfg,
            "train": identity_dict(self.train),
            "subject": {"name": self.subject.name, "fingerprint": self.subject.fingerprint(),
                        "class_noun": self.subject.class_noun, "identifier": self.subject.identifier},
            "seed": self.seed,
            "model": self.model_id,
        }

    def identity(self) -> dict:
        return {**self.train_identity(), "sample": sample_identity(self.sample), "prompts": self.prompts()}

    def prompts(self) -> list[str]:
        prompts = list(self.subject.prompts)
        if self.sample.prompt_indices:
            prompts = [prompts[i] for i in self.sample.prompt_indices if i < len(prompts)]
        n = self.sample.max_prompts
        return prompts[:n] if n else prompts

    @property
    def train_id(self) -> str:
        return f"{self.method}-{self.subject.name}-s{self.seed}-{_hash(self.train_identity())}"

    @property
    def cell_id(self) -> str:
        return f"{self.method}-{self.subject.name}-{_hash(self.identity())}"


def method_configs(cfg: RunConfig, suite: Suite, method: str) -> tuple[TrainConfig, SampleConfig]:
    """A method's unswept train and sample configs: the suite's resolution, the method's guidance."""
    train = dataclasses.replace(cfg.train, resolution=cfg.train.resolution or suite.resolution)
    sample = cfg.sample
    if sample.guidance == "auto":
        sample = dataclasses.replace(sample, guidance=METHODS.get(method).default_guidance)
    return train, sample


def expand(cfg: RunConfig, suite: Suite, methods: list[str]) -> list[Cell]:
    model_id = model_identity(suite.model)
    cells = []
    for name in methods:
        mcfg0 = cfg.methods[name]
        train0, sample0 = method_configs(cfg, suite, name)
        knobs = list(mcfg0.sweep)
        for values in itertools.product(*(mcfg0.sweep[k] for k in knobs)):
            mcfg, train, sample = mcfg0, train0, sample0
            for knob, v in zip(knobs, values):
                mcfg, train, sample = _apply_knob(mcfg, train, sample, knob, v, f"methods.{name}.sweep.{knob}")
            for subject in suite.select(cfg.subjects):
                for seed in cfg.seeds:
                    cells.append(Cell(name, subject, seed, dict(zip(knobs, values)), mcfg, train, sample, suite, model_id))
                    check_cell(cells[-1])
    return cells


def make_plan(config_path=None, overrides=(), methods=None, suite=None, data=None, model=None, merge=None) -> Plan:
    from .merging import expand_merges

    cfg, suite_obj, selected = resolve(config_path, overrides, methods, suite, data, model, merge)
    cells = expand(cfg, suite_obj, selected)
    merges = expand_merges(cfg, suite_obj, selected, cells[0].model_id if cells else model_identity(suite_obj.model))
    return Plan(cfg, suite_obj, selected, cells, merges)
