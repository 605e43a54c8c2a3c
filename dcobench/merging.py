"""`dcobench run --merge direct,ziplora`: subject x style merge cells, and how a run executes them.

For every training method, subject, style and seed, the plan gets one cell per row of the
merge-interference table, all sampled on the same combined prompts ("<subject prompt>, in <style
identifier> style"):

    subject   the subject LoRA alone          style    the style LoRA alone
    <merge>   the two merged by a registered merge method (`baselines.merge.MERGES`)

The subject and style LoRAs are trained by the same trainer with the method's unswept config, so
a subject LoRA is the one its regular cells already use. A merged LoRA is written once under
`merges/<merge_id>/` (content-addressed, atomic) and sampled through stock `load_lora_weights`
like any other. A merge cell's result.json has kind "merge" and carries both reference sets, so
the scorer reports subject fidelity (against the subject's references), style fidelity (against
the style's) and prompt fidelity on the same images.
"""

from __future__ import annotations

import dataclasses
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .config import MethodConfig, RunConfig
from .errors import DcoError
from .plan import Cell, _hash, method_configs, sample_identity
from .suites import Subject, Suite

ALONE = ("subject", "style")  # the unmerged rows
_STYLED = re.compile(r"\bstyle\b")


def merge_registry():
    from baselines.merge import MERGES

    return MERGES


def merge_configs(cfg: RunConfig, raw: dict) -> dict[str, MethodConfig]:
    """Validate `merge` names and build each merge method's typed config from `merges.<name>`."""
    from .config import from_dict

    registry = merge_registry()
    if not isinstance(raw, dict):
        raise DcoError("merges: expected a mapping of merge method -> options, e.g. merges.ziplora.steps=50")
    out = {}
    for name in dict.fromkeys(list(raw) + list(cfg.merge)):
        if name in ALONE:
            raise DcoError(f"merge: '{name}' names an unmerged row, not a merge method; use direct or ziplora")
        fn = registry.get(name)
        out[name] = from_dict(fn.config_cls, raw.get(name), f"merges.{name}.")
    return out


@dataclass
class MergeCell(Cell):
    """A regular cell of `subject` (so `train_id` is the subject LoRA's) that also names a style
    and a row: sampled on combined prompts with that LoRA, the style's, or their merge."""

    style: Subject | None = None
    merge: str = "subject"  # a merge method, or "subject" / "style": that LoRA alone
    merge_cfg: MethodConfig | None = None

    def train_cell(self, which: str) -> Cell:
        """The regular cell whose LoRA this row uses (it shares the train id, hence the file)."""
        cell = Cell(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Cell)})
        return cell if which == "subject" else dataclasses.replace(cell, subject=self.style)

    def prompts(self) -> list[str]:
        """The subject's prompts that do not already ask for a style, each with the style appended."""
        own = super().prompts()
        plain = [p for p in own if not _STYLED.search(p)] or own
        return [f"{p}, in {self.style.identifier} style" for p in plain]

    def base(self, prompt: str) -> str:
        return self.subject.base(self.style.base(prompt))

    def merge_identity(self) -> dict:
        cfg = {k: v for k, v in dataclasses.asdict(self.merge_cfg).items() if k != "sweep"} if self.merge_cfg else {}
        return {"subject_lora": self.train_id, "style_lora": self.train_cell("style").train_id,
                "merge": self.merge, "merge_config": cfg}

    @property
    def merge_id(self) -> str:
        return f"{self.method}-{self.subject.name}+{self.style.name}-s{self.seed}-{self.merge}-{_hash(self.merge_identity())}"

    def identity(self) -> dict:
        return {**self.merge_identity(), "method": self.method, "sample": sample_identity(self.sample),
                "prompts": self.prompts()}

    @property
    def cell_id(self) -> str:
        return f"merge-{self.method}-{self.subject.name}+{self.style.name}-{self.merge}-{_hash(self.identity())}"


def expand_merges(cfg: RunConfig, suite: Suite, methods: list[str], model_id: str) -> list[MergeCell]:
    if not cfg.merge:
        return []
    styles = suite.merge_styles(cfg.styles)
    if not styles:
        raise DcoError(f"--merge: suite '{suite.name}' has no style references; add `styles:` (folders of a style's "
                       "images, kind style) to the suite YAML")
    subjects = [s for s in suite.select(cfg.subjects) if s.kind != "style"]
    if not subjects:
        raise DcoError("--merge: no subjects to merge with the styles; select subjects of kind subject")
    cells = []
    for name in methods:
        train, sample = method_configs(cfg, suite, name)
        for subject in subjects:
            for style in styles:
                for seed in cfg.seeds:
                    for row in ALONE + tuple(cfg.merge):
                        cells.append(MergeCell(name, subject, seed, {}, cfg.methods[name], train, sample, suite,
                                               model_id, style=style, merge=row, merge_cfg=cfg.merges.get(row)))
    return cells


def build_merged(ctx, cell: MergeCell, subject_dir: Path, style_dir: Path, folder: Path) -> None:
    """Merge the two stored LoRAs with the cell's merge method; write `folder` atomically."""
    from baselines.merge import load_lora_weights, save_merged

    from .store import atomic_folder, atomic_write_json

    fn = merge_registry().get(cell.merge)
    a, b = load_lora_weights(subject_dir), load_lora_weights(style_dir)
    start = time.perf_counter()
    state, rank, info = fn(a, b, cell.merge_cfg, pipe=ctx.pipe, cond=ctx.cond, subject=cell.subject,
                           subject_latents=ctx.latents(cell.subject), style=cell.style,
                           style_latents=ctx.latents(cell.style), seed=cell.seed)
    info = {k: v for k, v in info.items() if not k.startswith("_")}
    with atomic_folder(folder) as tmp:  # replaces a killed run's leftover (it has no merge.json)
        save_merged(state, rank, a.modules, tmp, type(ctx.pipe))
        atomic_write_json(tmp / "merge.json", {**info, **cell.merge_identity(), "rank": rank, "merge_id": cell.merge_id,
                                               "seconds": round(time.perf_counter() - start, 3)})


def run_merge_cell(ctx, cell: MergeCell, store, progress) -> int:
    """Train what is missing, merge, sample the combined prompts, score; returns LoRAs trained."""
    from .lora import WEIGHT_NAME
    from .runner import _train, finish_cell, sample_from
    from .sampling import grid_jobs

    trained, dirs = 0, {}
    for which in ALONE:
        tc = cell.train_cell(which)
        dirs[which] = store.lora(tc.train_id)
        if not (dirs[which] / "train.json").is_file():
            _train(ctx, tc, dirs[which], progress)
            trained += 1
    if cell.merge in ALONE:
        folder, token_dirs = dirs[cell.merge], [dirs[cell.merge]]
    else:
        folder, token_dirs = store.root / "merges" / cell.merge_id, [dirs["subject"], dirs["style"]]
        if not (folder / "merge.json").is_file():
            build_merged(ctx, cell, dirs["subject"], dirs["style"], folder)
    cell_dir = store.cell(cell.cell_id)
    prompts = cell.prompts()
    start = time.perf_counter()
    jobs = grid_jobs(prompts, [cell.base(p) for p in prompts], cell.sample)
    manifest = sample_from(ctx, folder, token_dirs, jobs, cell.sample, cell.guidance, cell_dir)
    result = {
        "cell_id": cell.cell_id,
        "train_id": cell.train_id,
        "method": cell.method,
        "merge": cell.merge,
        "subject": cell.subject.name,
        "style": cell.style.name,
        "class_noun": cell.subject.class_noun,
        "kind": "merge",
        "identifier": cell.subject.identifier,
        "style_identifier": cell.style.identifier,
        "style_class_noun": cell.style.class_noun,
        "seed": cell.seed,
        "knobs": {},
        "suite": cell.suite.name,
        "model": cell.suite.model,
        "config": cell.identity(),
        "lora": str(Path("..", "..", folder.relative_to(store.root), WEIGHT_NAME)),
        "references": [str(p) for p in cell.subject.images],
        "style_references": [str(p) for p in cell.style.images],
        "timing": {"sample_s": round(time.perf_counter() - start, 3)},
    }
    finish_cell(ctx, cell_dir, result, manifest)
    return trained
