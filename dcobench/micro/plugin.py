"""The micro world as a plugin of the core: everything it adds, through the public registries.

Declared in pyproject.toml like any third-party plugin:

    [project.entry-points."dcobench.plugins"]
    micro = "dcobench.micro.plugin"

Importing this module registers the `micro` suite (`suite.py`), the oracle judges `oracle_*`
(`metrics.py`, where they are defined), the `micro-clip` / `micro-dino` backbones (lazily: their
weights load only when a run scores with them) and the `dcobench micro` commands.
"""

from ..registry import BACKBONES, COMMANDS
from . import metrics, suite  # noqa: F401  (register the judges and the suite where they are defined)

# `cuts`: where the judge-agreement table thresholds the continuous judges these backbones serve
BACKBONES.register("micro-clip", "dcobench.micro.encoders:micro_clip_backbone", cuts="dcobench.micro.cuts:validated_cuts",
                   description="the micro world's CLIP-style encoder (ships with dcobench)")
BACKBONES.register("micro-dino", "dcobench.micro.encoders:micro_dino_backbone", cuts="dcobench.micro.cuts:validated_cuts",
                   description="the micro world's DINO-style subject encoder (ships with dcobench)")
COMMANDS.register("micro", "dcobench.micro.cli:micro_app", description="build and validate the micro world's models")
