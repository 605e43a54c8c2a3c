"""`train.adapter`: every kind trains under every objective, its reference pass is the base model
exactly, its file loads where docs/adapters.md says it loads, and what peft refuses fails at plan time."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from baselines.dreambooth import DreamBooth
from dcobench.adapter_options import KINDS
from dcobench.adapters import PEFT_CONFIG, PEFT_WEIGHTS, add_adapter, load, save
from dcobench.config import SampleConfig, TrainConfig
from dcobench.errors import DcoError
from dcobench.lora import WEIGHT_NAME, lora_disabled, remove_training_adapter
from dcobench.methods.dco import DCO, DCOConfig
from dcobench.models.pipeline import Conditioner
from dcobench.plan import make_plan
from dcobench.sampling import GuidedSampler, grid_jobs
from dcobench.trainer import encode_images, train_lora

TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"]  # attention and ResNet convs (Conv2d)
ATTENTION = TARGETS[:4]
OPTIONS = {"oft": {"block_size": 8}, "boft": {"block_size": 4}}


def config(kind: str, **kw) -> TrainConfig:
    from dcobench.config import from_dict

    # peft 0.21's OFT cannot adapt a 3x3 conv (the plan refuses it: test_plan_refuses_oft_on_3x3_convs)
    targets = ATTENTION if kind == "oft" else TARGETS
    raw = {"adapter": kind, "rank": 4, "alpha": 4.0, "resolution": 32, "target_modules": targets, **kw}
    if kind in OPTIONS:
        raw["adapters"] = {kind: OPTIONS[kind]}
    return from_dict(TrainConfig, raw, "train.")


def unet_out(unet, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x, emb = torch.randn(2, 4, 16, 16, generator=gen), torch.randn(2, 16, 32, generator=gen)
    with torch.no_grad():
        return unet(x, torch.tensor([100, 700]), encoder_hidden_states=emb).sample


def perturb(params, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen))


@pytest.mark.parametrize("kind", KINDS)
def test_reference_pass_is_the_base_model_exactly(tiny_pipe, kind):
    unet = tiny_pipe.unet
    base = unet_out(unet)
    params = add_adapter(unet, config(kind), 0)
    assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
    assert torch.allclose(unet_out(unet), base, atol=1e-5)  # every kind starts at the base model
    perturb(params)
    adapted = unet_out(unet)
    assert (adapted - base).abs().max() > 1e-3
    with lora_disabled(unet):
        assert torch.equal(unet_out(unet), base)
    assert torch.equal(unet_out(unet), adapted)  # switched back on
    remove_training_adapter(unet)
    from peft.tuners.tuners_utils import BaseTunerLayer

    assert not any(isinstance(m, BaseTunerLayer) for m in unet.modules())  # every base layer put back


@pytest.mark.parametrize("kind", KINDS)
def test_dco_trains_every_kind_from_log2_with_only_adapter_gradients(tiny_pipe, tiny_suite, kind):
    subject = tiny_suite.subjects[0]
    before = {n: p.detach().clone() for n, p in tiny_pipe.unet.named_parameters()}
    report = train_lora(tiny_pipe, Conditioner(tiny_pipe, 32), encode_images(tiny_pipe.vae, subject.images, 32),
                        subject, DCO(DCOConfig(reference_prompt="same")), config(kind, steps=3, lr=1e-2), 0)
    assert report.losses[0] == pytest.approx(math.log(2), abs=1e-6)  # the adapter starts at the base model
    assert all(math.isfinite(x) for x in report.losses) and report.losses[-1] != report.losses[0]
    for n, p in tiny_pipe.unet.named_parameters():
        if n in before:  # a frozen base weight (adapters wrap layers: their names move under base_layer)
            assert torch.equal(p, before[n]), n


def _stock(tiny_sd_path):
    from diffusers import StableDiffusionPipeline

    stock = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    stock.set_progress_bar_config(disable=True)
    return stock


@pytest.mark.parametrize("kind", KINDS)
def test_saved_file_loads_where_the_docs_say_and_samples_the_same(tiny_pipe, tiny_sd_path, tiny_suite, tmp_path, kind):
    """LoRA and DoRA: stock `load_lora_weights`; the others: `PeftModel.from_pretrained(pipe.unet, folder)`.
    dcobench's sampler (consistency guidance, base branches with the adapter off) reads the same file."""
    subject = tiny_suite.subjects[0]
    cond = Conditioner(tiny_pipe, 32)
    train_lora(tiny_pipe, cond, encode_images(tiny_pipe.vae, subject.images, 32), subject, DreamBooth(),
               config(kind, steps=3, lr=5e-2), 0)
    sample_cfg = SampleConfig(steps=3, seeds=[2], cfg_scale=4.0, w_text=4.0, w_con=2.0)
    prompt = subject.prompts[0]
    jobs = grid_jobs([prompt], [subject.base(prompt)], sample_cfg)
    sampler = GuidedSampler(tiny_pipe, cond, 32)
    attached = {g: sampler.sample(jobs, sample_cfg, g)[0] for g in ("cfg", "consistency")}
    save(tiny_pipe, tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ([WEIGHT_NAME] if kind in ("lora", "dora") else [PEFT_CONFIG, PEFT_WEIGHTS])
    remove_training_adapter(tiny_pipe.unet)
    load(tiny_pipe, tmp_path)
    for g in ("cfg", "consistency"):
        assert np.abs(sampler.sample(jobs, sample_cfg, g)[0].astype(int) - attached[g].astype(int)).max() <= 1, g
    tiny_pipe.unload_lora_weights()

    stock = _stock(tiny_sd_path)

    def generate():
        out = stock(prompt, num_inference_steps=3, guidance_scale=4.0, height=32, width=32, output_type="np",
                    generator=torch.Generator().manual_seed(jobs[0].noise_seed)).images[0]
        return (out * 255).round().astype(int)

    base = generate()
    if kind in ("lora", "dora"):
        stock.load_lora_weights(tmp_path)
        if kind == "dora":
            assert any("lora_magnitude_vector" in n for n, _ in stock.unet.named_parameters())
    else:
        from peft import PeftModel

        PeftModel.from_pretrained(stock.unet, str(tmp_path))  # injects into stock.unet in place
    with_adapter = generate()
    assert np.abs(with_adapter - base).max() > 0
    assert np.abs(with_adapter - attached["cfg"].astype(int)).max() <= 1


def test_plan_refuses_oft_on_3x3_convs_because_peft_moves_the_base_model():
    """peft 0.21's OFT rotates a conv's unfolded 3x3 input patches and folds them back summed: at the
    identity rotation a pixel counts up to 9 times, so the adapted model is not the base model at
    step 0 and DCO's reference pass would not be the base either. The probe catches it."""
    targets = f"train.target_modules=[{','.join(TARGETS)}]"
    with pytest.raises(DcoError, match=r"^train\.target_modules: peft \S+ cannot put oft on a 3x3 Conv2d \(conv1, "
                                       r"conv2 here: at its initialisation.*moves by up to"):
        make_plan(None, ["train.adapter=oft", targets], suite="tiny")
    make_plan(None, ["train.adapter=oft", f"train.target_modules=[{','.join(ATTENTION)}]"], suite="tiny")
    for kind in ("lora", "dora", "loha", "lokr", "boft"):
        make_plan(None, [f"train.adapter={kind}", targets], suite="tiny")


def test_plan_refuses_what_peft_refuses_in_one_line(monkeypatch):
    with pytest.raises(DcoError, match=r"^train\.adapters\.oft\.blok_size: unknown key; did you mean 'block_size'"):
        make_plan(None, ["train.adapter=oft", "train.adapters.oft.blok_size=8"], suite="tiny")
    with pytest.raises(DcoError, match=r"^train\.adapters\.boft: peft cannot put boft .*divisible"):
        make_plan(None, ["train.adapter=boft", "train.adapters.boft.block_size=6"], suite="tiny")
    with pytest.raises(DcoError, match="n_butterfly_factor"):
        if torch.cuda.is_available():
            pytest.skip("factor 2 is allowed where the CUDA extension can build")
        make_plan(None, ["train.adapter=boft", "train.adapters.boft.n_butterfly_factor=2"], suite="tiny")
    with pytest.raises(DcoError, match="^--merge: direct and ziplora merge LoRAs; train.adapter=loha"):
        make_plan(None, ["train.adapter=loha"], suite="tiny", merge=["direct"])
    # a kind that peft cannot put on a Conv2d (none in peft 0.21; simulated by taking Conv2d out of LoHa's map)
    from peft.tuners.loha.model import LoHaModel

    monkeypatch.setattr(LoHaModel, "layers_mapping", {k: v for k, v in LoHaModel.layers_mapping.items()
                                                      if k is not torch.nn.Conv2d})
    with pytest.raises(DcoError, match=r"^train\.target_modules: peft \S+ cannot put loha on a 3x3 Conv2d "
                                       r"\(conv1, conv2 here: peft refuses it: .*\); drop them from train\.target_modules"):
        make_plan(None, ["train.adapter=loha", "train.adapters.loha.rank_dropout=0.1",
                         f"train.target_modules=[{','.join(TARGETS)}]"], suite="tiny")


def test_adapter_leaves_lora_ids_alone_and_ids_see_only_the_chosen_kind():
    ids = lambda *o: [c.train_id for c in make_plan(None, list(o), suite="tiny").cells]  # noqa: E731
    lora = ids()
    assert ids("train.adapter=lora") == lora == ids("train.adapters.oft.block_size=16")
    oft = ids("train.adapter=oft")
    assert oft != lora and ids("train.adapter=oft", "train.adapters.loha.rank_dropout=0.1") == oft
    assert ids("train.adapter=oft", "train.adapters.oft.block_size=16") != oft
    assert ids("train.adapter=oft", "train.rank=16") == oft  # OFT sizes blocks, not a rank
    plan = make_plan(None, ["train.adapter=oft", "methods.dco.sweep={train.rank: [4, 8]}"], methods=["dco"],
                     suite="tiny")
    assert any("train.rank has no effect under train.adapter=oft" in n for n in plan.notes)
    plan = make_plan(None, ["train.adapter=oft", "methods.dco.sweep={train.adapters.oft.block_size: [4, 8]}"],
                     methods=["dco"], suite="tiny")  # a kind's own option is a knob too
    assert len({c.train_id for c in plan.cells}) == 2 * len({c.subject.name for c in plan.cells})
    assert {c.train.adapters.oft.block_size for c in plan.cells} == {4, 8}
    with pytest.raises(DcoError, match=r"sweep.train.adapters.oft.blok_size: unknown knob 'blok_size'; did you mean"):
        make_plan(None, ["methods.dco.sweep={train.adapters.oft.blok_size: [4]}"], methods=["dco"], suite="tiny")


@pytest.mark.parametrize("kind", ["dora", "loha"])
def test_merges_refuse_other_adapters(tiny_pipe, tiny_suite, tmp_path, kind):
    from dcobench.merging import merge_loras

    subject = tiny_suite.subjects[0]
    train_lora(tiny_pipe, Conditioner(tiny_pipe, 32), encode_images(tiny_pipe.vae, subject.images, 32), subject,
               DreamBooth(), config(kind, steps=1), 0)
    save(tiny_pipe, tmp_path / "a")
    with pytest.raises(DcoError, match=f"{kind}.*merge LoRAs only"):
        merge_loras("direct", None, tmp_path / "a", tmp_path / "a", tmp_path / "m")


def test_train_json_records_each_adapters_cost(cli, tmp_path):
    out = tmp_path / "run"
    r = cli("run", "--methods", "dco", "--suite", "tiny", "--out", out, "--quiet", "subjects=[robot]",
            "train.adapter=lokr", "train.steps=3", "sample.steps=2", "sample.seeds=[0]", "sample.max_prompts=1",
            "methods.dco.sweep={sample.w_con: [1.0]}")
    assert r.returncode == 0, r.stderr
    (info,) = [json.loads(p.read_text()) for p in out.glob("loras/*/train.json")]
    cost = info["cost"]
    assert cost["adapter"] == "lokr" and cost["trainable_params"] > 0 and cost["step_s"] > 0
    assert cost["steps_timed"] == 2 and cost["memory"] in ("cpu resident high-water growth", "unavailable")
    (result,) = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    assert result["lora"].endswith(PEFT_WEIGHTS) and info["config"]["train"]["adapter"] == "lokr"


def test_adapter_study_gives_both_methods_the_same_sampler_per_adapter(dcobench_cache):
    from dcobench.study.run import plan_study
    from dcobench.study.spec import load_study

    sp = plan_study(*load_study("micro_adapters"))
    assert list(sp.spec.claims) == list(KINDS)
    by_id = {c.cell_id: c for c in sp.plan.cells}
    for kind, claim in sp.manifest["claims"].items():
        cells = [by_id[i] for i in claim["arms"]["main"]["cells"]]
        assert {c.method for c in cells} == {"dco", "dreambooth"} and {c.train.adapter for c in cells} == {kind}
        samplers = {m: sorted({(c.sample.guidance, c.sample.cfg_scale) for c in cells if c.method == m})
                    for m in ("dco", "dreambooth")}
        assert samplers["dco"] == samplers["dreambooth"] == [("cfg", 1.5), ("cfg", 3.0), ("cfg", 5.0)]
        assert ("conv1" in cells[0].train.target_modules) == (kind not in ("oft", "boft"))


@pytest.mark.slow
def test_every_adapter_runs_on_the_micro_world(cli, tmp_path):
    """`dcobench run --methods dco,dreambooth train.adapter=<kind>` on micro (a short recipe); OFT with
    the attention projections only, since the plan refuses it on the suite's conv1 / conv2 targets."""
    out, short = tmp_path / "run", ["subjects=[tent]", "seeds=[0]", "train.steps=3", "sample.steps=2",
                                    "sample.seeds=[0]", "sample.max_prompts=1"]
    r = cli("run", "--methods", "dco,dreambooth", "--out", out, "--quiet", "train.adapter=oft", *short)
    assert r.returncode == 2 and "cannot put oft on a 3x3 Conv2d" in r.stderr
    kinds = ["lora", "dora", "loha", "lokr", "boft"]
    sweep = "{train.adapter: [" + ", ".join(kinds) + "]}"
    r = cli("run", "--methods", "dco,dreambooth", "--out", out, "--quiet", *short,
            f"methods.dco.sweep={sweep}", f"methods.dreambooth.sweep={sweep}")
    assert r.returncode == 0, r.stderr
    r = cli("run", "--methods", "dco,dreambooth", "--out", out, "--quiet", *short, "train.adapter=oft",
            "train.target_modules=[to_q,to_k,to_v,to_out.0]")
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    seen = {(res["method"], res["config"]["train"].get("adapter", "lora")) for res in results}
    assert seen == {(m, k) for m in ("dco", "dreambooth") for k in kinds + ["oft"]}
    assert all("oracle_subject" in res["metrics"] for res in results)


@pytest.mark.parametrize("kind", ["loha", "oft"])
def test_a_killed_training_of_another_kind_resumes_to_the_same_adapter(tiny_sd_path, tiny_suite, tmp_path, kind):
    """resume.py saves every kind's parameters (peft's tuner prefixes), not only `lora_` ones."""
    from dcobench.models.pipeline import load_pipeline
    from dcobench.resume import STATE, Resume

    subject = tiny_suite.subjects[0]

    class Killed(Exception):
        pass

    def run(folder, kill_at=None, every=3):
        pipe = load_pipeline(tiny_sd_path)
        def on_step(step, logs):
            if step == kill_at:
                raise Killed
        train_lora(pipe, Conditioner(pipe, 32), encode_images(pipe.vae, subject.images, 32), subject, DCO(),
                   config(kind, steps=7, lr=1e-2, resume_every=every), 3, on_step=on_step, resume=Resume(folder, every))
        from dcobench.adapters import adapter_parameters

        return [p.detach().clone() for p in adapter_parameters(pipe.unet, kind)]

    never = run(tmp_path / "never", every=0)
    with pytest.raises(Killed):
        run(tmp_path / "resume", kill_at=4)  # saved at step 3, killed in step 5
    assert torch.load(tmp_path / "resume" / STATE, weights_only=True)["step"] == 3
    again = run(tmp_path / "resume")
    assert len(again) == len(never) > 0 and all(torch.equal(a, b) for a, b in zip(again, never))
