"""`dcobench ls`: what is registered (core, baselines and plugins alike), as lines of text."""

from __future__ import annotations

from .config import RunConfig, field_help
from .errors import DcoError
from .metrics import Judge
from .plugins import load_all
from .registry import BACKBONES, COMMANDS, MERGES, METHODS, METRICS, SUITES

SECTIONS = ("methods", "baselines", "merges", "suites", "metrics", "plugins", "options")


def _knobs(config_cls) -> list[str]:
    return [r[0] for r in field_help(config_cls) if r[0] != "sweep"]


def _tag(registry, name: str) -> str:
    return "baseline" if registry.meta(name).get("baseline") else "method"


def method_lines(baselines_only: bool = False) -> list[str]:
    out = []
    for name in METHODS.names():
        if baselines_only and _tag(METHODS, name) != "baseline":
            continue
        obj = METHODS.get(name)
        flags = [f for f in ("needs_reference", "needs_prior") if getattr(obj, f)]
        knobs = _knobs(obj.config_cls)
        out.append(f"  {name:<14} {_tag(METHODS, name):<9} {METHODS.meta(name).get('description', '')}"
                   f"  [guidance={obj.default_guidance}{', ' + ', '.join(flags) if flags else ''}"
                   f"{'; knobs: ' + ', '.join(knobs) if knobs else ''}]")
    return out


def merge_lines(baselines_only: bool = False) -> list[str]:
    return [f"  {name:<14} {_tag(MERGES, name):<9} {MERGES.meta(name).get('description', '')}"
            f"  [knobs: {', '.join(_knobs(MERGES.get(name).config_cls))}]"
            for name in MERGES.names() if not baselines_only or _tag(MERGES, name) == "baseline"]


def metric_lines() -> list[str]:
    out = []
    for name in METRICS.names():
        m, meta = METRICS.get(name), METRICS.meta(name)
        how = f"judge ({m.describe()})" if isinstance(m, Judge) else f"backbone=score.{m.role}, against {m.against}"
        out.append(f"  {name:<18} {meta['label']:<38} {how}, higher_is_better={meta['higher_is_better']}")
    out.append("backbones (score.clip / score.dino / score.dinov2 = NAME[:ARCH][@WEIGHTS]):")
    out += [f"  {name:<14} {BACKBONES.meta(name).get('description', '')}" for name in BACKBONES.names()]
    return out


def listing(what: str = "all") -> list[str]:
    """The lines `dcobench ls WHAT` prints."""
    if what not in SECTIONS + ("all",):
        raise DcoError(f"ls: unknown section '{what}'; use {', '.join(SECTIONS)} or all")
    show = set(SECTIONS) - {"baselines"} if what == "all" else {what}
    out = []
    if "methods" in show:
        out += ["methods (dcobench run --methods NAME,...; 'baseline' marks the baselines):", *method_lines()]
    if "baselines" in show:
        out += ["baselines: methods (dcobench run --methods)", *method_lines(True),
                "baselines: merges (dcobench run --merge)", *merge_lines(True)]
    if "merges" in show:
        out += ["merges (dcobench run --merge NAME,...; dcobench merge --method NAME):", *merge_lines()]
    if "suites" in show:
        out += ["suites:", *[f"  {name:<14} {SUITES.meta(name).get('description', '')}" for name in SUITES.names()]]
    if "metrics" in show:
        out += ["metrics (score.metrics):", *metric_lines()]
    if "plugins" in show:
        out += ["plugins (entry points of the group dcobench.plugins):", *[f"  {p}" for p in load_all()],
                "commands added by plugins:", *[f"  dcobench {c:<10} {COMMANDS.meta(c).get('description', '')}"
                                                 for c in COMMANDS.names()]]
    if "options" in show:
        out.append("options (key=value):")
        out += [f"  {key:<26} {default:<28} {text}" for key, default, text in option_rows()]
    return out


def option_rows() -> list[tuple[str, str, str]]:
    """Every option, as docs/reference/config.md lists them: the run's, then each registered
    method's (`methods.NAME.*`, plugins' included) and merge's (`merges.NAME.*`)."""
    rows = field_help(RunConfig)
    for key, registry in (("methods", METHODS), ("merges", MERGES)):
        for name in registry.names():
            cls = getattr(registry.get(name), "config_cls", None)
            if cls is not None:
                rows += field_help(cls, f"{key}.{name}.")
    return rows
