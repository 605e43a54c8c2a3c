"""Swept knobs: what a sweep may vary, how one value is applied, and which values change nothing.

A knob is a field of the method's config (`beta`) or a dotted `train.`/`sample.` field. A few
fields cannot be swept (`RUN_LEVEL`). A knob that cannot change a cell (the CFG scale under
consistency guidance, an option left out of ids) is *idle*: its values give one cell, which the
plan keeps once and names in a note, instead of counting it as many.
"""

from __future__ import annotations

import dataclasses
import typing

from .adapter_options import RANKED
from .cells import sample_identity
from .config import SampleConfig, TrainConfig, check_value
from .errors import DcoError, did_you_mean

SECTIONS = {"train": TrainConfig, "sample": SampleConfig}
# Knobs a sweep cannot vary: one pipeline per run is loaded in one precision and one Context
# encodes every reference at one resolution, and resume_every cannot change a LoRA at all.
RUN_LEVEL = {
    "train.mixed_precision": "the run loads one pipeline in one precision",
    "train.resolution": "the run encodes references and samples at one resolution",
    "train.resume_every": "it does not change the trained LoRA",
}


def apply_knob(mcfg, train, sample, knob: str, value, where: str):
    section, _, name = knob.partition(".")
    if knob in RUN_LEVEL:
        raise DcoError(f"{where}: {knob} cannot be swept ({RUN_LEVEL[knob]}); set it for the whole run "
                       f"({knob}=...) and use one run folder per value")
    if name and section in SECTIONS:
        target = {"train": train, "sample": sample}[section]
    elif not name:
        target, name = mcfg, knob
    else:
        raise DcoError(f"{where}: unknown knob; use a method field or train.<field> / sample.<field>")
    new = _replace(target, name, value, where)
    if target is mcfg:
        return new, train, sample
    return (mcfg, new, sample) if section == "train" else (mcfg, train, new)


def _replace(target, name: str, value, where: str):
    """`target` with its field `name` set; a dotted name reaches into a section of it
    (`adapters.oft.block_size` of a TrainConfig)."""
    head, _, rest = name.partition(".")
    fields = {f.name: f for f in dataclasses.fields(target)}
    if head not in fields or head == "sweep" or (rest and not dataclasses.is_dataclass(getattr(target, head))):
        raise DcoError(f"{where}: unknown knob '{name}'; {did_you_mean(head, set(fields) - {'sweep'})}")
    if rest:
        return dataclasses.replace(target, **{head: _replace(getattr(target, head), rest, value, where)})
    value = check_value(fields[head], typing.get_type_hints(type(target))[head], value, where)
    return dataclasses.replace(target, **{head: value})


def idle_knobs(knobs: dict, sample: SampleConfig, train: TrainConfig | None = None) -> dict:
    """The swept knobs that cannot change a cell, each with why: the other guidance mode's scales
    (`cells.sample_identity`), options that are never part of an id (speed, resumability), and
    train.rank / train.alpha under an adapter that has no rank (OFT, BOFT)."""
    kept = sample_identity(sample)
    out = {}
    for knob in knobs:
        section, _, name = knob.partition(".")
        if section == "sample" and name not in kept:
            out[knob] = f"has no effect under guidance={sample.guidance}"
        elif train is not None and knob in ("train.rank", "train.alpha") and train.adapter not in RANKED:
            out[knob] = f"has no effect under train.adapter={train.adapter} (it sizes blocks, not a rank)"
        elif train is not None and name.startswith("adapters.") and name.split(".")[1] != train.adapter:
            out[knob] = f"has no effect under train.adapter={train.adapter} (another kind's option)"
        elif section in SECTIONS and not next(f for f in dataclasses.fields(SECTIONS[section])
                                              if f.name == name.split(".")[0]).metadata.get("identity", True):
            out[knob] = "cannot change a result (it is not part of cell ids)"
    return out


def no_duplicates(values, where: str) -> None:
    for i, v in enumerate(values):
        if v in values[:i]:
            raise DcoError(f"{where}: {v!r} is given twice; give each value once")
