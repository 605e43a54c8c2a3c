"""New-token training on tiny SD and SDXL pipelines: init, training, half precision, save/load, undo."""

from __future__ import annotations

import json

import pytest
import torch

from dcobench.errors import DcoError
from dcobench.families import family_of
from dcobench.models.pipeline import load_pipeline
from dcobench.models.tiny import tiny_model_path
from dcobench.tokens import EMBEDS_FILE, META_FILE, add_identifier_tokens, load_tokens, unload_tokens

IDENT, NOUN = "sks", "dog"
PROMPT = "a photo of sks dog"


@pytest.fixture(scope="module", params=["sd", "sdxl", "sd3"])
def kind(request, dcobench_cache):
    return request.param


def load(kind, dtype=torch.float32):
    return load_pipeline(tiny_model_path(kind), dtype=dtype)


def pairs(pipe):
    """(tokenizer, text encoder) of every encoder that gets the token: SD one, SDXL and SD3 both CLIPs."""
    names = list(family_of(pipe).token_encoders)
    return [(getattr(pipe, n.replace("text_encoder", "tokenizer")), getattr(pipe, n)) for n in names]


def snapshot(pipe):
    return [(len(tok), te.get_input_embeddings().weight.detach().clone(), te.config.vocab_size) for tok, te in pairs(pipe)]


def encode(tok, te, prompt=PROMPT):
    ids = tok(prompt, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    return te(ids)[0]


def train(pipe, state, steps=3):
    """AdamW (weight decay on) on a loss through each text encoder's forward."""
    opt = torch.optim.AdamW(state.params(), lr=1e-2, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    targets = [torch.randn(encode(tok, te).shape, generator=gen) for tok, te in pairs(pipe)]
    for _ in range(steps):
        loss = sum(torch.nn.functional.mse_loss(encode(tok, te).float(), t) for (tok, te), t in zip(pairs(pipe), targets))
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.after_step()


def test_new_row_starts_at_class_noun(kind):
    pipe = load(kind)
    before = snapshot(pipe)
    state = add_identifier_tokens(pipe, IDENT, NOUN)
    for (tok, te), (n, w0, _), e in zip(pairs(pipe), before, state.encoders):
        assert len(tok) == n + 1 and e.token_ids == [n]
        assert tok(PROMPT, add_special_tokens=False).input_ids[3] == n, "the identifier must be its own token"
        w = te.get_input_embeddings().weight
        assert w.shape[0] == n + 1
        assert torch.equal(w[n], w0[tok.convert_tokens_to_ids("dog</w>")])
        assert torch.allclose(e.init_norms, w[n].norm(), rtol=0, atol=0)
    # a multi-token class noun: the mean of its rows
    state.remove(pipe)
    state = add_identifier_tokens(pipe, IDENT, "teddy bear")
    tok, te = pairs(pipe)[0]
    ids = tok("teddy bear", add_special_tokens=False).input_ids
    assert len(ids) == 2
    assert torch.allclose(te.get_input_embeddings().weight[state.encoders[0].token_ids[0]], before[0][1][ids].mean(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=["fp32", "fp16", "bf16"])
def test_training_moves_only_the_identifier(kind, dtype):
    pipe = load(kind, dtype)
    before = snapshot(pipe)
    out_before = [encode(tok, te).detach().clone() for tok, te in pairs(pipe)]
    state = add_identifier_tokens(pipe, IDENT, NOUN)
    init = [te.get_input_embeddings().weight.detach().clone() for _, te in pairs(pipe)]
    params = state.params()
    for (tok, te), p in zip(pairs(pipe), params):
        # the optimizer gets the weight the forward reads, in fp32, and the forward keeps its dtype
        assert p is te.get_input_embeddings().weight and p.dtype == torch.float32
        assert encode(tok, te).dtype == dtype
    train(pipe, state)
    for (tok, te), (n, w0, _), w_init, e in zip(pairs(pipe), before, init, state.encoders):
        w = te.get_input_embeddings().weight.detach()
        assert not torch.equal(w[n], w_init[n]), "the identifier row did not train"
        assert torch.equal(w[:n], w0.float()), "a row other than the identifier changed"
        assert torch.allclose(w[n].norm(), e.init_norms[0], rtol=1e-5)
    for (tok, te), out in zip(pairs(pipe), out_before):
        assert not torch.equal(encode(tok, te), out), "the training did not reach the encoder's output"
        assert torch.equal(encode(tok, te, "a photo of dog"), encode(tok, te, "a photo of dog"))
    state.remove(pipe)
    for (tok, te), (n, w0, vocab) in zip(pairs(pipe), before):
        w = te.get_input_embeddings().weight
        assert len(tok) == n and te.config.vocab_size == vocab and te.get_input_embeddings().num_embeddings == n
        assert w.dtype == dtype and torch.equal(w, w0) and te.dtype == dtype
        assert "sks" not in tok.added_tokens_encoder
    for (tok, te), out in zip(pairs(pipe), out_before):
        assert torch.equal(encode(tok, te), out)


def test_save_load_into_stock_pipeline(kind, tmp_path):
    from diffusers import StableDiffusion3Pipeline, StableDiffusionPipeline, StableDiffusionXLPipeline

    pipe = load(kind)
    state = add_identifier_tokens(pipe, IDENT, NOUN)
    train(pipe, state, steps=2)
    state.save(tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["identifier"] == IDENT and meta["class_noun"] == NOUN and meta["family"] == {"sd": "sd15"}.get(kind, kind)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / EMBEDS_FILE))
    assert set(saved) == ({IDENT} if kind == "sd" else {"clip_l", "clip_g"})
    assert all(v.shape == (1, 32) for v in saved.values())

    path = tiny_model_path(kind)
    if kind == "sd":
        fresh = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False)
    else:  # SD3 has no load_textual_inversion: load_tokens adds the rows through transformers
        fresh = {"sdxl": StableDiffusionXLPipeline, "sd3": StableDiffusion3Pipeline}[kind].from_pretrained(path)
    n = [len(tok) for tok, _ in pairs(fresh)]
    assert load_tokens(fresh, tmp_path) == [IDENT]
    with torch.no_grad():
        for (t1, e1), (t2, e2) in zip(pairs(pipe), pairs(fresh)):
            assert torch.equal(encode(t1, e1), encode(t2, e2))
        if kind == "sd":
            a, b = pipe.encode_prompt(PROMPT, "cpu", 1, False)[0], fresh.encode_prompt(PROMPT, "cpu", 1, False)[0]
            assert torch.equal(a, b)
        else:
            more = {"prompt_2": None, "prompt_3": None} if kind == "sd3" else {}
            a = pipe.encode_prompt(prompt=PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False,
                                   **more)
            b = fresh.encode_prompt(prompt=PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False,
                                    **more)
            assert torch.equal(a[0], b[0]) and torch.equal(a[2], b[2])
    unload_tokens(fresh, [IDENT])
    assert [len(tok) for tok, _ in pairs(fresh)] == n
    with pytest.raises(DcoError, match="tokens.json"):
        load_tokens(fresh, tmp_path / "missing")


def test_remove_then_add_again_and_reuse(dcobench_cache):
    pipe = load("sd")
    n = len(pipe.tokenizer)
    state = add_identifier_tokens(pipe, IDENT, NOUN)
    state.remove(pipe)
    state.remove(pipe)  # idempotent
    with pytest.raises(RuntimeError):
        state.params()
    again = add_identifier_tokens(pipe, IDENT, NOUN)
    assert again.encoders[0].token_ids == [n]
    again.remove(pipe)
    assert len(pipe.tokenizer) == n

    # an identifier that is already an added token (loaded textual inversion) is reused, not
    # duplicated, and remove() keeps the token and gives back its row
    row = torch.randn(pipe.text_encoder.config.hidden_size)
    pipe.load_textual_inversion({IDENT: row[None]}, token=IDENT)
    reused = add_identifier_tokens(pipe, IDENT, NOUN)
    emb = pipe.text_encoder.get_input_embeddings()
    assert len(pipe.tokenizer) == n + 1 and reused.encoders[0].token_ids == [n]
    assert not torch.equal(emb.weight[n], row)
    reused.remove(pipe)
    assert len(pipe.tokenizer) == n + 1 and IDENT in pipe.tokenizer.added_tokens_encoder
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[n], row)

def test_shared_tokenizer_sdxl(dcobench_cache):
    """The in-memory tiny SDXL shares one tokenizer between both encoders: the token is added once."""
    from dcobench.models.tiny import build_tiny_sdxl

    pipe = build_tiny_sdxl()
    assert pipe.tokenizer is pipe.tokenizer_2
    n = len(pipe.tokenizer)
    state = add_identifier_tokens(pipe, IDENT, NOUN)
    assert len(pipe.tokenizer) == n + 1 and [e.token_ids for e in state.encoders] == [[n], [n]]
    assert pipe.text_encoder_2.get_input_embeddings().num_embeddings == n + 1
    state.remove(pipe)
    assert len(pipe.tokenizer) == n and pipe.text_encoder_2.get_input_embeddings().num_embeddings == n


@pytest.mark.parametrize("bad", ["dog", "SKS", "s ks", ""])
def test_bad_identifier(bad, dcobench_cache):
    pipe = load("sd")
    n = len(pipe.tokenizer)
    with pytest.raises(DcoError, match="identifier"):
        add_identifier_tokens(pipe, bad, NOUN)
    assert len(pipe.tokenizer) == n, "a refused identifier must leave the pipeline alone"
