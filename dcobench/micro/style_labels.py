"""The style screen's judge against two blind labellers: `python -m dcobench.micro.style_labels`.

Reads data/micro/labels/style-screen/ only (images/<id>.png, key.json: each id's screen cell,
cells.json: each cell's CFG, labels-agent-*.csv; its README.md says how they were made) and
prints, per held-out style and CFG, the share of images showing the prompted style by the oracle
(v4) and by each labeller, the oracle's agreement with each, and the screen rule (best CFG >= 0.7)
under each reader.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
from PIL import Image

from . import oracle
from .models import default_micro_dir

HERE = default_micro_dir() / "labels" / "style-screen"


def readers() -> tuple[pd.DataFrame, pd.Series]:
    """Per image, whether each reader (the oracle, each labeller) sees the prompted style; and the
    number of unsure answers per labeller."""
    key = json.loads((HERE / "key.json").read_text())
    cfgs = json.loads((HERE / "cells.json").read_text())  # cell -> CFG scale, copied from its manifest
    df = pd.DataFrame([{"id": i, "cell": p.split("/")[1], "style": p.split("/")[1].split("-")[1]} for i, p in key.items()])
    read = [oracle.style(np.asarray(Image.open(HERE / "images" / f"{i}.png").convert("RGB"))) for i in df["id"]]
    out, unsure = pd.DataFrame({"style": df["style"], "cfg": df["cell"].map(cfgs), "oracle": read == df["style"]}), {}
    for f in sorted(HERE.glob("labels-*.csv")):
        name = f.stem.removeprefix("labels-")
        looks = pd.read_csv(f, dtype={"id": str}).set_index("id")["look"]
        out[name], unsure[name] = df["id"].map(looks) == df["style"], int(looks.eq("unsure").sum())
    return out, pd.Series(unsure)


def main() -> None:
    table, unsure = readers()
    names = list(unsure.index)
    for n in names:
        print(f"{n}: {unsure[n]} unsure; oracle agrees (shows the prompted style or not) on "
              f"{(table['oracle'] == table[n]).mean():.2f}")
    print(f"{' vs '.join(names)}: agree on {(table[names[0]] == table[names[1]]).mean():.2f}")
    rates = table.astype({c: float for c in ["oracle", *names]}).groupby(["style", "cfg"]).mean()
    print(rates.round(2).to_string())
    best = rates.groupby("style").max()
    print("best CFG, screen rule >= 0.7:")
    print(best.round(2).assign(**{f"passes ({n})": best[n] >= 0.7 for n in ["oracle", *names]}).to_string())


if __name__ == "__main__":
    main()
