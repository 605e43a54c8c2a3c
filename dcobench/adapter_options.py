"""`train.adapter` and each adapter's own typed options (`train.adapters.<kind>.<option>`).

The kinds are peft tuners; each kind's options follow its peft config class field by field (the
peft name is in the help where it differs), with peft 0.21's defaults. The shared options
`train.rank`, `train.alpha` and `train.target_modules` go to every kind that has them (OFT and
BOFT size their blocks instead of a rank). `adapters.py` turns these into peft configs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .options import non_negative, option, positive, probability

KINDS = ("lora", "dora", "loha", "lokr", "oft", "boft")
RANKED = ("lora", "dora", "loha", "lokr")  # the kinds that read train.rank and train.alpha


def _factor(x):
    return None if x == -1 or x > 0 else "must be -1 (peft's near-square factorisation) or > 0"


@dataclass
class DoraOptions:
    """DoRA (LoraConfig(use_dora=True)) takes train.rank, train.alpha and train.target_modules only."""


@dataclass
class LohaOptions:
    rank_dropout: float = option(0.0, "LoHaConfig.rank_dropout: dropout of each rank during training.", probability)
    module_dropout: float = option(0.0, "LoHaConfig.module_dropout: drop a whole layer's update during training.",
                                   probability)
    use_effective_conv2d: bool = option(
        False, "LoHaConfig.use_effective_conv2d: Tucker (CP) factors for Conv2d kernels > 1x1 (LyCORIS' 'effective "
        "conv'); such layers are not exported to the kohya format.")


@dataclass
class LokrOptions:
    rank_dropout: float = option(0.0, "LoKrConfig.rank_dropout.", probability)
    module_dropout: float = option(0.0, "LoKrConfig.module_dropout.", probability)
    decompose_both: bool = option(False, "LoKrConfig.decompose_both: also factor the left Kronecker factor at rank r.")
    decompose_factor: int = option(-1, "LoKrConfig.decompose_factor: the Kronecker factorisation's left dimension "
                                   "(-1: near-square).", _factor)
    use_effective_conv2d: bool = option(False, "LoKrConfig.use_effective_conv2d (see loha); not exported to kohya.")
    rank_dropout_scale: bool = option(False, "LoKrConfig.rank_dropout_scale: rescale by the kept ranks' mean.")


@dataclass
class OftOptions:
    block_size: int = option(32, "OFTConfig.oft_block_size: size of each orthogonal block; peft rounds it to a "
                             "divisor of a layer's input size (in_channels x k x k for a Conv2d).", positive)
    module_dropout: float = option(0.0, "OFTConfig.module_dropout: set blocks to the identity during training.",
                                   probability)
    coft: bool = option(False, "OFTConfig.coft: constrained OFT (rotation kept within eps of the identity).")
    eps: float = option(6e-5, "OFTConfig.eps: COFT's freedom of rotation (coft only).", positive)
    block_share: bool = option(False, "OFTConfig.block_share: one rotation shared by every block of a layer.")
    use_cayley_neumann: bool = option(True, "OFTConfig.use_cayley_neumann: Cayley-Neumann series instead of an "
                                      "exact inverse (faster, approximately orthogonal).")
    num_cayley_neumann_terms: int = option(5, "OFTConfig.num_cayley_neumann_terms.", positive)


@dataclass
class BoftOptions:
    block_size: int = option(4, "BOFTConfig.boft_block_size: size of each butterfly block (0: set block_num "
                             "instead; exactly one of the two is > 0).", non_negative)
    block_num: int = option(0, "BOFTConfig.boft_block_num: blocks per layer (0: use block_size).", non_negative)
    n_butterfly_factor: int = option(
        1, "BOFTConfig.boft_n_butterfly_factor: butterfly factors; > 1 needs peft's fbd CUDA extension (a GPU and "
        "ninja): without it peft trains factor 1 whatever the config says, so dcobench refuses it.", positive)
    dropout: float = option(0.0, "BOFTConfig.boft_dropout: multiplicative dropout of the blocks.", probability)


@dataclass
class AdapterOptions:
    dora: DoraOptions = field(default_factory=DoraOptions, metadata={"help": "DoRA's own options (none)."})
    loha: LohaOptions = field(default_factory=LohaOptions, metadata={"help": "LoHa's options (peft LoHaConfig)."})
    lokr: LokrOptions = field(default_factory=LokrOptions, metadata={"help": "LoKr's options (peft LoKrConfig)."})
    oft: OftOptions = field(default_factory=OftOptions, metadata={"help": "OFT's options (peft OFTConfig)."})
    boft: BoftOptions = field(default_factory=BoftOptions, metadata={"help": "BOFT's options (peft BOFTConfig)."})


def identity(kind: str, out: dict) -> dict:
    """A TrainConfig's id dict (`cells.config_identity`) as the adapter sees it: only the chosen kind's
    options, and only where they differ from the defaults (so a LoHa option never changes an OFT id,
    and a kind's default options hash like none); OFT and BOFT drop rank and alpha, which they do not
    read, so sweeping them there trains nothing twice."""
    from dataclasses import asdict

    options = out.pop("adapters", None) or {}
    mine = options.get(kind)
    if mine is not None and mine != asdict(getattr(AdapterOptions(), kind)):
        out["adapters"] = {kind: mine}
    if kind not in RANKED:
        out.pop("rank", None)
        out.pop("alpha", None)
    return out
