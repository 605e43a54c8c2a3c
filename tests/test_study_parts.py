"""What the study needs from the rest of dcobench: the caption ablation knob (ids of existing configs
unchanged), styles as personalization targets, the micro world's second held-out style, and the
style judges' validity sets."""

from __future__ import annotations

import numpy as np
import pytest

from dcobench.errors import DcoError
from dcobench.plan import make_plan


def test_adding_the_caption_knob_changed_no_existing_id(dcobench_cache):
    """Ids computed at the commit before train.captions existed (8c9556d): a new field at its default
    must not move any cell, LoRA or merge of an existing config."""
    plan = make_plan(suite="tiny", methods=["dco", "dreambooth", "dreambooth_pp"], merge=["direct"])
    train_ids = {c.train_id for c in plan.cells}
    assert {"dco-mug-s0-3600875e0a", "dco-robot-s0-15a2c58a88", "dreambooth-mug-s0-27cdf0d5f8",
            "dreambooth_pp-robot-s0-9195d87a57"} <= train_ids
    assert {"dco-mug-0cd83c14db", "dco-mug-b714d18793", "dco-robot-470c6924b6"} <= {c.cell_id for c in plan.cells}
    assert {"merge-dco-mug+stripes-direct-baefd8d1bd", "merge-dco-mug+stripes-subject-9c79e3de84"} <= \
        {c.cell_id for c in plan.merge_cells}
    explicit = make_plan(suite="tiny", methods=["dco"], overrides=["train.captions=comprehensive"])
    assert {c.cell_id for c in explicit.cells} <= {c.cell_id for c in plan.cells}


def test_template_captions_change_training_only(dcobench_cache):
    plain = make_plan(suite="tiny", methods=["dco"])
    tpl = make_plan(suite="tiny", methods=["dco"], overrides=["train.captions=template"])
    custom = make_plan(suite="tiny", methods=["dco"],
                       overrides=["train.captions=template", "train.caption_template=a {identifier} {class_noun}"])
    a, b, c = plain.cells[0], tpl.cells[0], custom.cells[0]
    assert len({a.train_id, b.train_id, c.train_id}) == 3
    assert a.prompts() == b.prompts() and a.subject.images == b.subject.images
    assert a.training_subject().captions[0] == "a photo of sks toy on a plain background"  # the caption file
    assert set(b.training_subject().captions) == {"a photo of sks toy"}
    assert set(b.training_subject().base_captions) == {"a photo of toy"}
    assert set(c.training_subject().captions) == {"a sks toy"}
    style = make_plan(suite="tiny", methods=["dco"], overrides=["train.captions=template", "subjects=[stripes]"])
    assert set(style.cells[0].training_subject().captions) == {"a picture in kxv style"}  # the kind's template
    bad = make_plan(suite="tiny", methods=["dco"], overrides=["train.captions=template",
                                                              "train.caption_template=a {class_noun}"])
    with pytest.raises(DcoError, match="it lacks {identifier}"):
        bad.cells[0].training_subject()
    with pytest.raises(DcoError, match="train.captions: must be one of comprehensive, template"):
        make_plan(suite="tiny", methods=["dco"], overrides=["train.captions=short"])


def test_the_trainer_sees_the_template_captions(dcobench_cache, tmp_path, monkeypatch):
    from dcobench import execute
    from dcobench.runner import run_plan

    seen = []
    original = execute.train_lora

    def spy(pipe, cond, latents, subject, *args, **kwargs):
        seen.append(list(subject.captions))
        return original(pipe, cond, latents, subject, *args, **kwargs)

    monkeypatch.setattr(execute, "train_lora", spy)
    plan = make_plan(suite="tiny", methods=["dreambooth"], overrides=[
        "train.captions=template", "subjects=[robot]", "train.steps=1", "sample.steps=1", "sample.seeds=[0]",
        "sample.max_prompts=1", "methods.dreambooth.sweep={}", "score.enabled=false"])
    run_plan(plan, tmp_path, show_progress=False)
    assert seen == [["a photo of sks toy"] * 3]


def test_a_style_can_be_the_personalization_target(dcobench_cache):
    plan = make_plan(suite="tiny", methods=["dco"], overrides=["subjects=[stripes]"])
    cell = plan.cells[0]
    assert cell.subject.kind == "style" and cell.describe()["kind"] == "style"
    assert cell.prompts() == ["a red toy in kxv style", "a cup on the beach in kxv style"]
    with pytest.raises(DcoError, match="has no evaluation prompts"):
        make_plan(suite="tiny", methods=["dco"], overrides=["subjects=[stripes]", "sample.prompt_indices=[7]"])
    with pytest.raises(DcoError, match="has no subject 'stripez'; did you mean 'stripes'"):
        make_plan(suite="tiny", methods=["dco"], overrides=["subjects=[stripez]"])


def test_micro_suite_has_every_held_out_style_and_merges_with_striped_by_default():
    from dcobench.suites import get_suite

    suite = get_suite("micro")
    assert [s.name for s in suite.styles] == ["striped", "dotted", "banded", "checked"]
    checked = suite.select(["checked"])[0]
    assert checked.kind == "style" and checked.prompts and all("in qwx style" in p for p in checked.prompts)
    dotted = suite.select(["dotted"])[0]
    assert dotted.kind == "style" and dotted.identifier == "ptz" and all("in ptz style" in p for p in dotted.prompts)
    plan = make_plan(methods=["dco"], merge=["direct"], overrides=["subjects=[tent]", "seeds=[0]"])
    assert {c.style.name for c in plan.merge_cells} == {"striped"}
    plan = make_plan(methods=["dco"], merge=["direct"], overrides=["subjects=[tent]", "seeds=[0]",
                                                                   "styles=[striped,dotted]"])
    assert {c.style.name for c in plan.merge_cells} == {"striped", "dotted"}


def test_style_validity_sets_and_rates(tiny_pipe):
    """The oracle accepts every clean render of a held-out style and no clean plain one; every set is
    built for both styles (the tiny pipeline's random VAE stands in for the micro one)."""
    from dcobench.metrics import get_backbone
    from dcobench.micro import oracle, style_validity
    from dcobench.micro.world import TARGET_STYLES

    rng = np.random.default_rng(0)
    base = style_validity.scenes(rng, 6)
    assert len(base) == 6 and {s.style for s in base} == {"plain"}
    sets = style_validity.build_sets(tiny_pipe, "dotted", [(0.0, 0.0)], rng, n=6, steps=2)
    assert set(sets) == set(style_validity.POSITIVE_SETS + style_validity.NEGATIVE_SETS)
    assert all(v.shape == (6, 32, 32, 3) and v.dtype == np.uint8 for v in sets.values())
    assert all(oracle.style(img) == "dotted" for img in sets["clean"])
    res = style_validity.measure(tiny_pipe, get_backbone("tiny-clip", "cpu"), [(0.0, 0.0)], n=4, steps=2)
    for style in TARGET_STYLES:  # every held-out style, the later two (banded, checked) included
        assert res["oracle_style"]["per_style"][style]["clean"] == 1.0
        assert res["oracle_style"]["per_style"][style]["other held-out"] == 0.0  # its rival, clean-rendered
    assert 0.0 <= res["style_clip_i"]["plain_auc_min"] <= 1.0
    assert set(res["style_clip_i"]["auc_per_style"]) == set(TARGET_STYLES)
    checks = style_validity.checks(res)  # the embedding judge is checked per style, not pooled
    assert {k for k in checks if k.startswith("style_clip_i")} == {
        f"style_clip_i AUC >= 0.90, degraded style vs plain ({s})" for s in TARGET_STYLES}
    text = style_validity.table(res)
    assert "oracle_style = checked: accepted | 1.00" in text and "style_clip_i: AUC vs degraded banded" in text


def test_the_micro_suites_second_subjects_run_only_when_named():
    """The twelve screened subjects are selectable (`subjects=[flag]`) but the default run keeps its
    three, with the ids it had before they existed (its LoRAs in runs/micro-study were trained then)."""
    plan = make_plan(suite="micro", methods=["dco", "dreambooth"])
    assert {c.subject.name for c in plan.cells} == {"tent", "quilt", "badge"}
    assert {"dco-quilt-s0-fe902126bf", "dreambooth-tent-s0-0df8bd6c5a"} <= {c.train_id for c in plan.cells}
    named = make_plan(suite="micro", methods=["dreambooth"], overrides=["subjects=[flag,card]", "seeds=[0]"])
    assert {c.subject.name for c in named.cells} == {"flag", "card"}
    flag = named.cells[0].subject if named.cells[0].subject.name == "flag" else named.cells[-1].subject
    assert flag.identifier == "rcn" and flag.class_noun == "red square" and len(flag.images) == 4
    assert flag.prompts[0] == "a rcn red square on a black background, large, center"
