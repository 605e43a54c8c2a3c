"""Cells: what one result.json is about, as pure data with content-addressed ids.

A `Cell` is one method x subject x training seed x value of each swept knob, with its resolved
configs. Its `cell_id` hashes everything that can change its images; its `train_id` hashes only
what training reads, so cells that differ in a sampling knob (w_con, cfg_scale) share one LoRA.

A `MergeCell` (`dcobench run --merge`) is a regular cell of a subject that also names a style and
a row of the merge-interference table: the subject LoRA alone, the style LoRA alone, or the two
merged by a registered merge method. Every row of a pair is sampled on the same combined prompts,
`styled_prompt(subject prompt, style identifier)`.

Nothing here trains, samples or reads a run folder; `plan.py` makes cells, `execute.py` runs them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass

from .adapter_options import identity as adapter_identity
from .config import MethodConfig, SampleConfig, TrainConfig
from .suites.base import Subject, Suite

ALONE = ("subject", "style")  # the unmerged rows of a merge pair
_STYLED = re.compile(r"\bstyle\b")


def hash_id(obj) -> str:
    """A short content hash of a JSON-able object: the tail of every cell, train and merge id."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def styled_prompt(prompt: str, style_identifier: str) -> str:
    """The combined prompt of a merge pair: a subject prompt asking for the style."""
    return f"{prompt}, in {style_identifier} style"


def sample_identity(sample: SampleConfig) -> dict:
    """The sampling fields that matter: the other guidance mode's scales do not change an image, and
    speed-only options (`sample.compile`) are never part of an id."""
    out = config_identity(sample)
    for k in (("w_text", "w_con") if sample.guidance == "cfg" else ("cfg_scale",)):
        out.pop(k)
    return out


def config_identity(cfg) -> dict:
    """A config as ids hash it: every field, except options that cannot change a result
    (`option(identity=False)`: speed, resumability) and fields added later (`option(id_default=True)`)
    while they keep their default, so adding either changes no existing id."""
    out = dataclasses.asdict(cfg)
    for f in dataclasses.fields(cfg):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            default = dataclasses.asdict(default)
        if not f.metadata.get("identity", True) or (f.metadata.get("id_default") and out[f.name] == default) or \
                ("id_omit" in f.metadata and out[f.name] == f.metadata["id_omit"]):
            out.pop(f.name)
    return out


def _public(cfg) -> dict:
    """A method's config as train ids hash it: every field but `sweep`, less a field at its `id_omit`
    value (an option added later whose earlier behaviour that value is)."""
    if cfg is None:
        return {}
    omit = {f.name: f.metadata["id_omit"] for f in dataclasses.fields(cfg) if "id_omit" in f.metadata}
    return {k: v for k, v in dataclasses.asdict(cfg).items()
            if k != "sweep" and not (k in omit and v == omit[k])}


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
        return {
            "method": self.method,
            "method_config": _public(self.method_cfg),
            "train": adapter_identity(self.train.adapter, config_identity(self.train)),
            "subject": {"name": self.subject.name, "fingerprint": self.subject.fingerprint(),
                        "class_noun": self.subject.class_noun, "identifier": self.subject.identifier},
            "seed": self.seed,
            "model": self.model_id,
        }

    def identity(self) -> dict:
        return {**self.train_identity(), "sample": sample_identity(self.sample), "prompts": self.prompts()}

    def training_subject(self) -> Subject:
        """The subject as training sees it: with `train.captions=template`, one template caption for
        every reference image (the caption ablation); the images and the evaluation prompts stay."""
        if self.train.captions == "template":
            return self.subject.with_template_captions(self.train.caption_template)
        return self.subject

    def prompts(self) -> list[str]:
        prompts = list(self.subject.prompts)
        if self.sample.prompt_indices:
            prompts = [prompts[i] for i in self.sample.prompt_indices if i < len(prompts)]
        n = self.sample.max_prompts
        return prompts[:n] if n else prompts

    def base(self, prompt: str) -> str:
        """The base prompt (class noun in place of the identifier) of one of `prompts()`."""
        return self.subject.base(prompt)

    @property
    def train_id(self) -> str:
        return f"{self.method}-{self.subject.name}-s{self.seed}-{hash_id(self.train_identity())}"

    @property
    def cell_id(self) -> str:
        return f"{self.method}-{self.subject.name}-{hash_id(self.identity())}"

    def describe(self) -> dict:
        """The cell's own fields of its result.json (`execute.build_result` adds what running made)."""
        return {"method": self.method, "subject": self.subject.name, "class_noun": self.subject.class_noun,
                "kind": self.subject.kind, "identifier": self.subject.identifier, "seed": self.seed,
                "knobs": self.knobs, "suite": self.suite.name, "model": self.suite.model,
                "config": self.identity(), "references": [str(p) for p in self.subject.images]}


@dataclass
class MergeCell(Cell):
    """A regular cell of `subject` (so `train_id` is the subject LoRA's) that also names a style
    and a row: sampled on combined prompts with that LoRA, the style's, or their merge."""

    style: Subject | None = None
    merge: str = "subject"  # a merge method, or "subject" / "style": that LoRA alone
    merge_cfg: object = None  # the merge method's typed config (merging.MergeConfig)

    def train_cell(self, which: str) -> Cell:
        """The regular cell whose LoRA this row uses (it shares the train id, hence the file)."""
        cell = Cell(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Cell)})
        return cell if which == "subject" else dataclasses.replace(cell, subject=self.style)

    def prompts(self) -> list[str]:
        """The subject's prompts that do not already ask for a style, each with the style appended."""
        own = super().prompts()
        plain = [p for p in own if not _STYLED.search(p)] or own
        return [styled_prompt(p, self.style.identifier) for p in plain]

    def base(self, prompt: str) -> str:
        return self.subject.base(self.style.base(prompt))

    def merge_identity(self) -> dict:
        return {"subject_lora": self.train_id, "style_lora": self.train_cell("style").train_id,
                "merge": self.merge, "merge_config": _public(self.merge_cfg)}

    @property
    def merge_id(self) -> str:
        return (f"{self.method}-{self.subject.name}+{self.style.name}-s{self.seed}-{self.merge}-"
                f"{hash_id(self.merge_identity())}")

    def identity(self) -> dict:
        return {**self.merge_identity(), "method": self.method, "sample": sample_identity(self.sample),
                "prompts": self.prompts()}

    @property
    def cell_id(self) -> str:
        return f"merge-{self.method}-{self.subject.name}+{self.style.name}-{self.merge}-{hash_id(self.identity())}"

    def describe(self) -> dict:
        return {**super().describe(), "kind": "merge", "knobs": {}, "merge": self.merge, "style": self.style.name,
                "style_identifier": self.style.identifier, "style_class_noun": self.style.class_noun,
                "style_references": [str(p) for p in self.style.images]}
