"""Every baseline dcobench compares DCO against, one file each, registered on import like DCO:

    dreambooth.py      DreamBooth LoRA (plain epsilon / v MSE)              METHODS "dreambooth"
    dreambooth_pp.py   DreamBooth LoRA with prior preservation              METHODS "dreambooth_pp"
    direct.py          merge by addition of a subject and a style LoRA      MERGES  "direct"
    ziplora.py         ZipLoRA: learned per-column merger vectors           MERGES  "ziplora"
"""

from . import direct, dreambooth, dreambooth_pp, ziplora  # noqa: F401
