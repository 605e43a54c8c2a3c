"""A CLIP tokenizer built with no download.

open_clip ships CLIP's BPE vocabulary as a gzip file. The vocab.json / merges.txt pair that
transformers' CLIPTokenizer reads is derived from it exactly as open_clip's SimpleTokenizer does
(256 byte symbols, the same with `</w>`, one entry per merge, then the two special tokens), so the
ids equal OpenAI CLIP's. The saved tokenizer reloads with `from_pretrained` like any hub one.
"""

from __future__ import annotations

import functools
import gzip

N_MERGES = 49152 - 256 - 2  # what open_clip's SimpleTokenizer keeps


def _bpe_lines() -> list[str]:
    import open_clip

    text = gzip.open(open_clip.tokenizer.default_bpe()).read().decode("utf-8")
    return text.split("\n")[1 : N_MERGES + 1]


@functools.lru_cache(maxsize=1)
def vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    from open_clip.tokenizer import bytes_to_unicode

    merges = _bpe_lines()
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, [tuple(m.split()) for m in merges]


def offline_clip_tokenizer(model_max_length: int = 77):
    """CLIP's tokenizer (49408 ids), built from the BPE file that open_clip ships."""
    from transformers import CLIPTokenizer

    vocab, merges = vocab_and_merges()
    # In-memory vocab and merges: building from vocab.json/merges.txt file paths gives wrong
    # ids with transformers 5's tokenizers backend.
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=model_max_length)


T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in T5


def t5_pieces(n_merges: int = 8000) -> list[tuple[str, float]]:
    """A sentencepiece-style Unigram vocabulary derived from CLIP's BPE merges.

    Each of the first `n_merges` merged BPE tokens becomes a piece, both as a word start (`▁dog`)
    and inside a word (`dog`), scored by merge rank (earlier merges are more frequent, so more
    probable); every printable ASCII character is a low-scored fallback, so no prompt maps to
    `<unk>`. The ids are not Google T5's, but the segmentation is real English subwords.
    """
    import math

    vocab, _ = vocab_and_merges()
    ordered = sorted(vocab, key=vocab.get)
    merged = ordered[512 : 512 + n_merges]  # after the 256 byte symbols and their `</w>` forms
    scores: dict[str, float] = {"▁": -2.0}
    for rank, tok in enumerate(merged):
        stem = tok.removesuffix("</w>")
        if not stem.isascii() or not stem.isprintable() or " " in stem:
            continue
        score = -2.0 - math.log(rank + 2)
        for piece in (stem, "▁" + stem):
            scores[piece] = max(scores.get(piece, -1e9), score)
    for c in map(chr, range(33, 127)):
        for piece in (c, "▁" + c):
            scores.setdefault(piece, -30.0)
    return [(s, 0.0) for s in T5_SPECIALS] + sorted(scores.items(), key=lambda kv: -kv[1])


def offline_t5_tokenizer(model_max_length: int = 256, n_merges: int = 8000):
    """A T5 tokenizer (Unigram, `</s>` appended, `<pad>` = 0) built with no download; see `t5_pieces`."""
    from transformers import T5Tokenizer

    return T5Tokenizer(vocab=t5_pieces(n_merges), extra_ids=0, model_max_length=model_max_length)
