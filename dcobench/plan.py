"""From config to cells, and cells to units of work.

`resolve` merges, in order: dataclass defaults < the suite's defaults < the YAML config < `key=value`
overrides < explicit CLI flags, and validates all of it. `expand` turns the result into cells
(`cells.py`): methods x subjects x training seeds x each method's swept knobs; `expand_merges`
adds, for `--merge`, every subject x style x seed x row of the merge-interference table.

`units` groups the cells by the LoRAs they need: a unit is one training and every cell that samples
from it (for `--merge`, the subject and style trainings its merge cells tie together). A unit is
what an executor hands to one worker and what `--shard i/n` assigns whole, so a LoRA is never
trained twice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
from dataclasses import dataclass, field
from pathlib import Path

from .adapter_check import check as check_adapter
from .cells import ALONE, Cell, MergeCell
from .config import RunConfig, SampleConfig, TrainConfig, deep_merge, from_dict, load_yaml
from .knobs import apply_knob, idle_knobs, no_duplicates
from .overrides import apply_ops, parse_op
from .errors import DcoError
from .registry import MERGES, METHODS, METRICS
from .suites import Suite, get_suite
from .tracking import check_available

DEFAULT_METHODS = ["dco", "dreambooth"]


@dataclass
class Plan:
    config: RunConfig
    suite: Suite
    methods: list[str]
    cells: list[Cell]
    merge_cells: list[MergeCell] = field(default_factory=list)  # when config.merge is set
    notes: list[str] = field(default_factory=list)  # swept knobs that changed nothing (`expand`)

    def units(self) -> list["Unit"]:
        return units(self.cells + self.merge_cells)


def resolve(config_path=None, overrides=(), methods: list[str] | None = None, suite: str | None = None,
            data: str | None = None, model: str | None = None, merge: list[str] | None = None):
    """Return (RunConfig, Suite, selected method names); raises DcoError on any bad input.
    `config_path` is a YAML file or an already loaded mapping of the same keys (`dcobench study`)."""
    file_cfg = dict(config_path) if isinstance(config_path, dict) else load_yaml(config_path) if config_path else {}
    ops = [parse_op(text) for text in overrides]
    over = apply_ops({}, ops)  # the overrides alone: where the suite, data and model come from
    picks = {}
    for key, flag in (("suite", suite), ("data", data), ("model", model)):
        picks[key] = flag or over.get(key) or file_cfg.get(key) or getattr(RunConfig(), key)
        if not isinstance(picks[key], str):
            raise DcoError(f"{key}: expected a name or path (got {picks[key]!r})")
    suite_obj = get_suite(picks["suite"], picks["data"], picks["model"])
    raw = apply_ops(deep_merge(suite_obj.defaults, file_cfg), ops)
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
    default_sweeps(cfg, raw_methods)
    for where, values in (("seeds", cfg.seeds), ("sample.seeds", cfg.sample.seeds), ("subjects", cfg.subjects),
                          ("sample.prompt_indices", cfg.sample.prompt_indices)):
        no_duplicates(values, where)
    for name, mcfg in cfg.methods.items():
        for knob, values in mcfg.sweep.items():
            if isinstance(values, dict):  # `...sweep.sample.cfg_scale=[..]` splits the dotted knob into keys
                inner = next(iter(values), "field")
                raise DcoError(f"methods.{name}.sweep.{knob}: a sweep maps a dotted knob name to a list; write "
                               f"methods.{name}.sweep={{{knob}.{inner}: [...]}} (or +methods.{name}.sweep=... to "
                               "add it to the suite's sweep)")
            if not isinstance(values, (list, tuple)):
                raise DcoError(f"methods.{name}.sweep.{knob}: give a list of values, e.g. [1.5, 3.0]")
            if not values:
                raise DcoError(f"methods.{name}.sweep.{knob}: give at least one value")
            no_duplicates(values, f"methods.{name}.sweep.{knob}")
            for v in values:
                apply_knob(mcfg, TrainConfig(), SampleConfig(), knob, v, f"methods.{name}.sweep.{knob}")
    check_available(cfg.train.log_to)  # a missing logger library fails before any training
    cfg.merges = merge_configs(cfg, raw_merges)
    if cfg.merge:
        from .families import family_of_model

        if cfg.train.adapter != "lora":
            raise DcoError(f"--merge: direct and ziplora merge LoRAs; train.adapter={cfg.train.adapter} has no LoRA "
                           "factors to merge; drop --merge or set train.adapter=lora")

        family = family_of_model(suite_obj.model)
        if family is not None:
            family.check_merges()
    for m in cfg.score.metrics:
        METRICS.get(m)  # an unknown name fails here, also when every cell is already done
    for m in cfg.report.pareto_metrics:
        if m not in cfg.score.metrics:
            raise DcoError(f"report.pareto_metrics: '{m}' is not scored by this run (score.metrics: "
                           f"{', '.join(cfg.score.metrics)}); add it to score.metrics or pick one of those")
    suite_obj.select(cfg.subjects)
    if cfg.styles:
        suite_obj.merge_styles(cfg.styles)
    return cfg, suite_obj, selected


def default_sweeps(cfg: RunConfig, raw_methods: dict) -> None:
    """A method whose config names no `sweep` (neither the suite's, the file's nor the command line's)
    takes `sweeps[<its guidance>]`: a plugin's method is swept over the same knob values as the
    suite's own methods under the same sampler, so the report compares curves, not one point with
    a curve. An explicit `methods.NAME.sweep={}` keeps one point."""
    for mode in cfg.sweeps:
        if mode not in ("cfg", "consistency"):
            raise DcoError(f"sweeps.{mode}: a guidance mode is cfg or consistency")
    for name, mcfg in cfg.methods.items():
        if "sweep" in (raw_methods.get(name) or {}):
            continue
        mode = cfg.sample.guidance if cfg.sample.guidance != "auto" else METHODS.get(name).default_guidance
        mcfg.sweep = {k: list(v) for k, v in (cfg.sweeps.get(mode) or {}).items()}


def check_cell(cell: Cell) -> None:
    """Cross-field checks that only a fully resolved cell can answer."""
    if not cell.prompts():
        raise DcoError(f"subjects: '{cell.subject.name}' has no evaluation prompts ({cell.subject.root}); add "
                       "`prompts:` to its subject.yaml or the suite, or check sample.prompt_indices")
    check_adapter(cell.train, cell.suite.model)  # each model and adapter config once
    step, train = cell.sample.lora_step, cell.train
    if step and step != train.steps and (not train.checkpoint_every or step % train.checkpoint_every or step > train.steps):
        raise DcoError(f"methods.{cell.method}: sample.lora_step={step} has no saved LoRA; use a multiple of "
                       f"train.checkpoint_every (now {train.checkpoint_every}) up to train.steps ({train.steps})")


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


def merge_configs(cfg: RunConfig, raw: dict) -> dict:
    """Validate `merge` names and build each merge method's typed config from `merges.<name>`."""
    if not isinstance(raw, dict):
        raise DcoError("merges: expected a mapping of merge method -> options, e.g. merges.ziplora.steps=50")
    out = {}
    for name in dict.fromkeys(list(raw) + list(cfg.merge)):
        if name in ALONE:
            raise DcoError(f"merge: '{name}' names an unmerged row, not a merge method; use direct or ziplora")
        out[name] = from_dict(MERGES.get(name).config_cls, raw.get(name), f"merges.{name}.")
    return out


def method_configs(cfg: RunConfig, suite: Suite, method: str) -> tuple[TrainConfig, SampleConfig]:
    """A method's unswept train and sample configs: the suite's resolution, the method's guidance."""
    train = dataclasses.replace(cfg.train, resolution=cfg.train.resolution or suite.resolution)
    sample = cfg.sample
    if sample.guidance == "auto":
        sample = dataclasses.replace(sample, guidance=METHODS.get(method).default_guidance)
    return train, sample


def expand(cfg: RunConfig, suite: Suite, methods: list[str], notes: list[str] | None = None) -> list[Cell]:
    """Every cell of the plan, once. Knob values that resolve to a cell already planned (a CFG scale
    under consistency guidance) add nothing; `notes` gets one line per such knob."""
    model_id = model_identity(suite.model)
    cells, ids, idle = [], set(), {}
    for name in methods:
        mcfg0 = cfg.methods[name]
        train0, sample0 = method_configs(cfg, suite, name)
        knobs = list(mcfg0.sweep)
        for values in itertools.product(*(mcfg0.sweep[k] for k in knobs)):
            mcfg, train, sample = mcfg0, train0, sample0
            for knob, v in zip(knobs, values):
                mcfg, train, sample = apply_knob(mcfg, train, sample, knob, v, f"methods.{name}.sweep.{knob}")
            why = idle_knobs(knobs, sample, train)
            for knob, reason in why.items():
                idle.setdefault((name, knob, reason), set()).add(repr(values[knobs.index(knob)]))
            shown = {k: v for k, v in zip(knobs, values) if k not in why}
            for subject in suite.select(cfg.subjects):
                for seed in cfg.seeds:
                    cell = Cell(name, subject, seed, shown, mcfg, train, sample, suite, model_id)
                    if cell.cell_id in ids:
                        continue
                    ids.add(cell.cell_id)
                    cells.append(cell)
                    check_cell(cell)
    if notes is not None:
        notes += [f"methods.{name}.sweep.{knob} {reason}: its {len(vals)} values give the same cells, run once"
                  for (name, knob, reason), vals in idle.items() if len(vals) > 1]
    return cells


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


@dataclass
class Unit:
    """One training and every cell that uses its LoRA (with `--merge`, the trainings its merge cells
    tie together): what one worker runs and what a shard takes whole."""

    key: str  # its smallest train id: names its lock, orders the shard split
    train_ids: list[str]
    cells: list[Cell]


def needs(cell: Cell) -> list[str]:
    """The train ids of the LoRAs a cell samples from (a merge cell: its subject's and its style's)."""
    if isinstance(cell, MergeCell):
        return [cell.train_cell(w).train_id for w in ALONE]
    return [cell.train_id]


def units(cells: list[Cell]) -> list[Unit]:
    """Connected groups of train ids (cells that need several join theirs), in the cells' order."""
    parent: dict[str, str] = {}

    def root(t: str) -> str:
        while parent.setdefault(t, t) != t:
            t = parent[t] = parent[parent[t]]
        return t

    for cell in cells:
        first, *rest = needs(cell)
        for t in rest:
            parent[root(t)] = root(first)
    groups: dict[str, Unit] = {}
    for cell in cells:
        unit = groups.setdefault(root(needs(cell)[0]), Unit("", [], []))
        unit.cells.append(cell)
        unit.train_ids += [t for t in needs(cell) if t not in unit.train_ids]
    for unit in groups.values():
        unit.key = min(unit.train_ids)
    return list(groups.values())


def parse_shard(text: str) -> tuple[int, int]:
    """`--shard i/n` (1 <= i <= n) as (i, n)."""
    i, sep, n = str(text).partition("/")
    try:
        i, n = int(i), int(n)
    except ValueError:
        i = n = 0
    if not sep or n < 1 or not 1 <= i <= n:
        raise DcoError(f"--shard {text}: expected i/n with 1 <= i <= n (shards are numbered from 1), e.g. "
                       "--shard 1/3 ... --shard 3/3")
    return i, n


def shard(all_units: list[Unit], i: int, n: int) -> list[Unit]:
    """Shard i of n: every n-th unit in the order of their keys, so the split depends only on the plan
    (not on the order of --methods) and n shards together hold every unit exactly once."""
    mine = {u.key for k, u in enumerate(sorted(all_units, key=lambda u: u.key)) if k % n == i - 1}
    return [u for u in all_units if u.key in mine]


def make_plan(config_path=None, overrides=(), methods=None, suite=None, data=None, model=None, merge=None) -> Plan:
    cfg, suite_obj, selected = resolve(config_path, overrides, methods, suite, data, model, merge)
    notes: list[str] = []
    cells = expand(cfg, suite_obj, selected, notes)
    merges = expand_merges(cfg, suite_obj, selected, cells[0].model_id if cells else model_identity(suite_obj.model))
    return Plan(cfg, suite_obj, selected, cells, merges, notes)
