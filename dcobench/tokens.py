"""New-token training: a textual-inversion-style identifier token, as in the DCO paper.

`add_identifier_tokens` gives the identifier (`sks`) its own row in every CLIP text encoder of the
pipeline (the model family's `token_encoders`: SD `text_encoder`; SDXL and SD3 also
`text_encoder_2`; SD3's T5 reads the identifier as ordinary word pieces), initialised to the mean
embedding of the class noun's tokens, and returns a `TokenState` that the trainer drives:

    state = add_identifier_tokens(pipe, "sks", "dog")
    optimizer.add_param_group({"params": state.params(), "lr": 5e-6})
    ... loss.backward(); optimizer.step(); state.after_step()
    state.save(lora_folder)          # learned_embeds.safetensors + tokens.json
    state.remove(pipe)               # the pipeline is as it was before

The whole embedding matrix is the trainable parameter (the one the encoder's forward reads, not a
copy), so gradients arrive by the ordinary autograd path. `after_step` then restores every other
row bit for bit (undoing Adam's and weight decay's drift on rows that appeared in the prompt or
not at all) and rescales the identifier row to its initial norm, as the paper does.

Half precision. The official DCO script upcasts by copying the embedding parameter, so under fp16
the optimizer updates a tensor the forward never reads and the token never trains. Here, when an
encoder is fp16/bf16, its embedding module's weight is replaced in place by an fp32 Parameter and
a forward hook casts the module's output back to the encoder's dtype: the rest of the encoder
runs unchanged in half precision, the optimizer updates the very weight the forward reads, and
updates smaller than a half-precision ulp still accumulate in the fp32 master row. A side effect
while a TokenState is live: transformers reports `text_encoder.dtype` from the first parameter,
i.e. float32, so `encode_prompt` returns float32 tensors (holding half-precision values);
the family's `forward` casts them to the denoiser's dtype. `remove` puts the half-precision
weight back.

Saved files are diffusers' own textual-inversion formats, so a stock pipeline loads them with
`load_textual_inversion` (see `load_tokens`): SD `{identifier: [1, dim]}`; SDXL and SD3 `clip_l`
and `clip_g`, one `[1, dim]` tensor per text encoder. diffusers' SD3 pipeline has no
`load_textual_inversion`, so there `load_tokens` does what it does with transformers' own calls
(`tokenizer.add_tokens`, `resize_token_embeddings`, set the row).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import DcoError
from .families import FAMILIES, family_of
from .store import atomic_write_bytes, atomic_write_json, read_json, read_safetensors

EMBEDS_FILE = "learned_embeds.safetensors"
META_FILE = "tokens.json"


@dataclass
class EncoderToken:
    """The identifier's row in one text encoder, and what is needed to train and undo it."""

    name: str  # the pipeline attribute: text_encoder or text_encoder_2
    tokenizer: Any
    text_encoder: Any
    token_ids: list[int]
    weight: nn.Parameter  # the embedding weight the encoder's forward reads (fp32 while training)
    init_norms: torch.Tensor  # fp32, one per token id
    original: torch.Tensor  # every row before initialisation, in the encoder's own dtype
    dtype: torch.dtype  # the encoder's own dtype; the embedding output is cast back to it
    rows_before: int  # embedding rows before this state resized the encoder
    added: bool  # whether this state added the token to this tokenizer (a shared one gets it once)
    requires_grad: bool  # the weight's flag before, restored by remove
    hook: Any = field(default=None, repr=False)


def _tokenizer_name(encoder_name: str) -> str:
    return encoder_name.replace("text_encoder", "tokenizer")


def _pairs(pipe) -> list[tuple[str, Any, Any]]:
    pairs = [(n, getattr(pipe, _tokenizer_name(n), None), getattr(pipe, n, None))
             for n in family_of(pipe).token_encoders]
    pairs = [p for p in pairs if p[1] is not None and p[2] is not None]
    if not pairs:
        raise DcoError("pipeline: it has no tokenizer/text encoder pair to add an identifier token to; "
                       "use an SD, SDXL or SD3 pipeline")
    return pairs


def _class_ids(tokenizer, class_noun: str) -> list[int]:
    special = set(tokenizer.all_special_ids)
    ids = [i for i in tokenizer(class_noun, add_special_tokens=False).input_ids if i not in special]
    if not ids:
        raise DcoError(f"class_noun '{class_noun}': it has no tokens to initialise the identifier from; "
                       "use a word such as 'dog'")
    return ids


def _check_identifier(tokenizer, identifier: str) -> None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    normalizer = getattr(backend, "normalizer", None)
    if not identifier or identifier.split() != [identifier] or (
            normalizer is not None and normalizer.normalize_str(identifier) != identifier):
        # CLIP lowercases the prompt before it matches added tokens: 'SKS' would never be found
        raise DcoError(f"identifier '{identifier}': a new token must be one lowercase word; use e.g. 'sks' or '<sks>'")
    if identifier not in tokenizer.added_tokens_encoder and identifier in tokenizer.get_vocab():
        # a word piece such as 'dog' keeps its vocabulary id when added, so it cannot get a row of
        # its own, and diffusers' load_textual_inversion refuses it ('sks' is fine: its entry is 'sks</w>')
        raise DcoError(f"identifier '{identifier}': it is already a piece of the tokenizer's vocabulary, so it cannot "
                       "be a new token; use a rare string such as 'sks' or '<sks>'")


def add_identifier_tokens(pipe, identifier: str, class_noun: str) -> TokenState:
    """Give `identifier` its own embedding row in each text encoder, set to the class noun's."""
    pairs = _pairs(pipe)
    class_ids = {}
    for name, tok, _ in pairs:  # every check before any change, so a refusal leaves the pipeline alone
        _check_identifier(tok, identifier)
        class_ids[name] = _class_ids(tok, class_noun)
    encoders = []
    for name, tok, te in pairs:
        # already an added token: reuse it (a loaded embedding, or a tokenizer shared by both encoders)
        added = identifier not in tok.added_tokens_encoder
        if added:
            tok.add_tokens([identifier])
        tid = tok.convert_tokens_to_ids(identifier)
        rows_before = te.get_input_embeddings().num_embeddings
        if rows_before < len(tok):
            te.resize_token_embeddings(len(tok), mean_resizing=False)
        emb = te.get_input_embeddings()
        dtype, requires_grad = emb.weight.dtype, emb.weight.requires_grad
        original = emb.weight.detach().clone()
        hook = None
        if dtype != torch.float32:
            emb.weight = nn.Parameter(emb.weight.detach().float(), requires_grad=requires_grad)
            hook = emb.register_forward_hook(lambda module, args, out, dtype=dtype: out.to(dtype))
        weight = emb.weight
        with torch.no_grad():
            weight[tid] = original[class_ids[name]].float().mean(0)
            norms = weight[[tid]].norm(dim=-1).clone()
        encoders.append(EncoderToken(name, tok, te, [tid], weight, norms, original, dtype, rows_before,
                                     added, requires_grad, hook))
    return TokenState(identifier, class_noun, family_of(pipe).name, encoders)


class TokenState:
    """The live identifier token(s) of one pipeline: parameters, projection, save and undo."""

    def __init__(self, identifier: str, class_noun: str, family_: str, encoders: list[EncoderToken]):
        self.identifier, self.class_noun, self.family = identifier, class_noun, family_
        self.encoders = encoders
        self.removed = False

    def params(self) -> list[nn.Parameter]:
        """The embedding weights for the optimizer (their own lr, chosen by the caller).

        Sets requires_grad here rather than at creation, since the trainer freezes whole text
        encoders with `requires_grad_(False)` before it builds its optimizer."""
        self._alive()
        for e in self.encoders:
            e.weight.requires_grad_(True)
        return [e.weight for e in self.encoders]

    @torch.no_grad()
    def after_step(self) -> None:
        """Restore every other row to its original value; rescale the identifier to its initial norm."""
        self._alive()
        for e in self.encoders:
            ids = torch.tensor(e.token_ids, device=e.weight.device)
            rows = e.weight[ids].clone()
            e.weight.copy_(e.original)  # exact: the fp32 master holds upcast half-precision values
            scale = e.init_norms.to(rows.device)[:, None] / rows.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            e.weight[ids] = rows * scale

    def embeddings(self) -> dict[str, torch.Tensor]:
        """The identifier rows, `[n_tokens, dim]` fp32 on CPU, per encoder attribute name."""
        self._alive()
        return {e.name: e.weight.detach()[e.token_ids].float().cpu().contiguous() for e in self.encoders}

    def save(self, folder: str | Path) -> Path:
        """Write diffusers-loadable `learned_embeds.safetensors` and `tokens.json` under `folder`."""
        from safetensors.torch import save as to_bytes

        emb = self.embeddings()
        keys = FAMILIES.get(self.family).token_encoders
        if list(keys.values()) == [None]:
            tensors, fmt = {self.identifier: emb["text_encoder"]}, "diffusers-textual-inversion"
        else:  # one tensor per text encoder, under diffusers' clip_l / clip_g keys
            tensors, fmt = {keys[k]: v for k, v in emb.items()}, "diffusers-textual-inversion-sdxl"
        folder = Path(folder)
        atomic_write_bytes(folder / EMBEDS_FILE, to_bytes(tensors))
        atomic_write_json(folder / META_FILE, {
            "identifier": self.identifier,
            "class_noun": self.class_noun,
            "family": self.family,
            "format": fmt,
            "file": EMBEDS_FILE,
            "keys": sorted(tensors),
            "init_norms": {e.name: [round(float(n), 6) for n in e.init_norms] for e in self.encoders},
        })
        return folder / EMBEDS_FILE

    def remove(self, pipe) -> None:
        """Undo `add_identifier_tokens`: drop the added token, shrink and restore the embeddings."""
        if self.removed:
            return
        if any(getattr(pipe, e.name, None) is not e.text_encoder for e in self.encoders):
            raise RuntimeError("TokenState.remove: this is not the pipeline the tokens were added to")
        for e in reversed(self.encoders):  # a shared tokenizer loses the token after every encoder shrank
            if e.hook is not None:
                e.hook.remove()
            te = e.text_encoder
            if te.get_input_embeddings().num_embeddings != e.rows_before:
                te.resize_token_embeddings(e.rows_before, mean_resizing=False)
            te.get_input_embeddings().weight = nn.Parameter(e.original[: e.rows_before].clone(),
                                                            requires_grad=e.requires_grad)
            if e.added:
                _remove_added_token(e.tokenizer, self.identifier)
        self.encoders, self.removed = [], True

    def _alive(self) -> None:
        if self.removed:
            raise RuntimeError("TokenState was removed from its pipeline; add the tokens again")


def _remove_added_token(tokenizer, token: str) -> None:
    """Drop an added token from a tokenizers-backed tokenizer (transformers keeps no copy of its own)."""
    from tokenizers import Tokenizer

    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:
        raise RuntimeError(f"cannot remove token '{token}' from a {type(tokenizer).__name__}; reload the pipeline")
    data = json.loads(backend.to_str())
    ours = [t["id"] for t in data["added_tokens"] if t["content"] == token]
    if ours and ours[0] != max(t["id"] for t in data["added_tokens"]):
        # ids are positions in the embedding matrix: removing a middle one would shift the others
        raise RuntimeError(f"token '{token}' is not the last added token; reload the pipeline instead")
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] != token]
    tokenizer._tokenizer = Tokenizer.from_str(json.dumps(data))


def load_tokens(pipe, folder: str | Path) -> list[str]:
    """Load tokens saved by `TokenState.save` through `pipe.load_textual_inversion` (or, on a
    pipeline without it such as SD3, the same steps through transformers); return them."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DcoError(f"{meta_path}: token file not found; train with new-token training or point to its folder")
    meta = read_json(meta_path)
    fam = family_of(pipe)
    if meta.get("family") not in fam.names:
        raise DcoError(f"{meta_path}: tokens were trained for {meta.get('family')} but the pipeline is "
                       f"{fam.name}; load them into a pipeline of the same model")
    state, _ = read_safetensors(folder / meta["file"], f"delete {folder} and rerun to train it again")
    ident = meta["identifier"]
    for name, key in fam.token_encoders.items():
        tok, te = getattr(pipe, _tokenizer_name(name)), getattr(pipe, name)
        row = state[ident if key is None else key]
        if hasattr(pipe, "load_textual_inversion"):
            pipe.load_textual_inversion(row, token=ident, text_encoder=te, tokenizer=tok)
        else:
            _add_row(tok, te, ident, row)
    return [ident]


def _add_row(tokenizer, text_encoder, token: str, row: torch.Tensor) -> None:
    """What diffusers' load_textual_inversion does for one single-vector token."""
    if token not in tokenizer.added_tokens_encoder:
        if token in tokenizer.get_vocab():
            raise DcoError(f"token '{token}' is already in the tokenizer's vocabulary; it cannot be loaded as a new token")
        tokenizer.add_tokens([token])
    tid = tokenizer.convert_tokens_to_ids(token)
    if text_encoder.get_input_embeddings().num_embeddings < len(tokenizer):
        text_encoder.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[tid] = row.reshape(-1).to(weight.device, weight.dtype)


def unload_tokens(pipe, tokens: list[str]) -> None:
    """Remove tokens loaded by `load_tokens` (through `pipe.unload_textual_inversion` where it exists)."""
    pairs = [(getattr(pipe, _tokenizer_name(n)), getattr(pipe, n)) for n in family_of(pipe).token_encoders]
    if hasattr(pipe, "unload_textual_inversion"):
        for tok, te in pairs:
            pipe.unload_textual_inversion(tokens, text_encoder=te, tokenizer=tok)
        return
    for tok, te in pairs:
        for token in reversed(tokens):
            if token in tok.added_tokens_encoder:  # a tokenizer shared by two encoders loses it once
                _remove_added_token(tok, token)
        if te.get_input_embeddings().num_embeddings > len(tok):
            te.resize_token_embeddings(len(tok), mean_resizing=False)
