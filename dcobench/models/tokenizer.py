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
