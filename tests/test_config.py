"""Config parsing, overrides, registries and cell expansion: strict, with one-line errors."""

from pathlib import Path

import pytest

from dcobench.config import RunConfig, from_dict, parse_override
from dcobench.errors import DcoError
from dcobench.plan import make_plan, resolve
from dcobench.registry import METHODS, Registry

ROOT = Path(__file__).resolve().parents[1]


def test_unknown_key_is_named_with_suggestion():
    with pytest.raises(DcoError, match=r"train\.stpes: unknown key; did you mean 'steps'"):
        from_dict(RunConfig, {"train": {"stpes": 3}})


def test_bad_values_name_the_field():
    with pytest.raises(DcoError, match=r"train\.rank: must be > 0 \(got 0\)"):
        from_dict(RunConfig, {"train": {"rank": 0}})
    with pytest.raises(DcoError, match=r"train\.lr: expected a number"):
        from_dict(RunConfig, {"train": {"lr": "fast"}})
    with pytest.raises(DcoError, match=r"sample\.guidance: must be one of"):
        from_dict(RunConfig, {"sample": {"guidance": "cgf"}})


def test_override_parsing_types():
    assert parse_override("methods.dco.beta=2000") == (["methods", "dco", "beta"], 2000)
    assert parse_override("sample.seeds=[0,1,2]") == (["sample", "seeds"], [0, 1, 2])
    with pytest.raises(DcoError, match="expected key=value"):
        parse_override("beta")


def test_method_override_reaches_cells(tiny_suite):
    plan = make_plan(overrides=["methods.dco.beta=2000"], methods=["dco"], suite="tiny")
    assert {c.method_cfg.beta for c in plan.cells} == {2000.0}
    with pytest.raises(DcoError, match=r"methods\.dco\.betta: unknown key; did you mean 'beta'"):
        resolve(overrides=["methods.dco.betta=2000"], methods=["dco"], suite="tiny")
    with pytest.raises(DcoError, match=r"methods\.dco\.beta: must be > 0"):
        resolve(overrides=["methods.dco.beta=-1"], methods=["dco"], suite="tiny")


def test_unknown_method_and_suite_get_did_you_mean(tiny_suite):
    with pytest.raises(DcoError, match="unknown method 'dcoo': did you mean 'dco'"):
        resolve(methods=["dcoo"], suite="tiny")
    with pytest.raises(DcoError, match="unknown suite 'tinny': did you mean 'tiny'"):
        resolve(suite="tinny")


def test_registry_lazy_entries_and_misses():
    reg = Registry("thing")
    reg.register("join", "os.path:join", higher_is_better=True)
    import os.path

    assert reg.get("join") is os.path.join
    assert reg.meta("join") == {"higher_is_better": True}
    with pytest.raises(DcoError, match="did you mean 'join'"):
        reg.get("jion")


def test_sweeps_expand_into_cells_sharing_training(tiny_suite):
    plan = make_plan(overrides=["methods.dco.sweep={sample.w_con: [0, 1, 2]}", "seeds=[0,1]"],
                     methods=["dco"], suite="tiny")
    n_subjects = len(tiny_suite.subjects)
    assert len(plan.cells) == 3 * n_subjects * 2
    assert len({c.cell_id for c in plan.cells}) == len(plan.cells)
    assert len({c.train_id for c in plan.cells}) == n_subjects * 2  # w_con is sampling-only
    plan = make_plan(overrides=["methods.dco.sweep={beta: [500, 1000]}"], methods=["dco"], suite="tiny")
    assert len({c.train_id for c in plan.cells}) == 2 * n_subjects


def test_bad_sweep_knob(tiny_suite):
    with pytest.raises(DcoError, match=r"sweep\.sample\.w_cn: unknown knob 'w_cn'; did you mean 'w_con'"):
        resolve(overrides=["methods.dco.sweep={sample.w_cn: [1]}"], methods=["dco"], suite="tiny")


def test_guidance_auto_follows_the_method(tiny_suite):
    plan = make_plan(methods=["dco", "dreambooth"], suite="tiny")
    assert {c.method: c.guidance for c in plan.cells} == {
        "dco": METHODS.get("dco").default_guidance, "dreambooth": "cfg"}


RUN_CONFIGS = [p for p in sorted((ROOT / "data").rglob("*.yaml")) + sorted((ROOT / "dcobench" / "configs").rglob("*.yaml"))
               if p.name != "subject.yaml"  # subject folders' metadata, read by their suite
               and "studies" not in p.relative_to(ROOT).parts]  # study files: tests/test_study.py plans them


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path, tiny_suite):
    plan = make_plan(path)
    assert plan.cells


PAPER = ROOT / "data" / "configs" / "paper"


@pytest.mark.parametrize("family,px", [("sdxl", 1024), ("sd15", 512)])
def test_paper_configs_carry_the_published_settings(family, px, tiny_suite):
    subject = make_plan(PAPER / f"{family}_dco_subject.yaml").cells[0]
    assert (subject.method, subject.train.rank, subject.train.lr, subject.train.steps) == ("dco", 32, 5e-5, 2000)
    assert subject.method_cfg.beta == 1000.0 and subject.train.train_token and subject.train.token_lr == 5e-6
    assert subject.train.batch_size == 1 and subject.train.resolution == px
    style = make_plan(PAPER / f"{family}_dco_style.yaml").cells[0]
    assert (style.train.rank, style.train.steps, style.train.offset_noise) == (64, 1000, 0.1)
    pp = make_plan(PAPER / f"{family}_dreambooth_pp_subject.yaml").cells[0]
    assert pp.method == "dreambooth_pp" and pp.method_cfg.prior_loss_weight == 1.0
    assert pp.method_cfg.num_class_images == 100 and pp.train.rank == 32
    for name in ("dreambooth_subject", "dreambooth_style"):
        assert make_plan(PAPER / f"{family}_{name}.yaml").cells[0].method == "dreambooth"


def test_sd35_medium_configs(tiny_suite):
    """SD3.5 Medium: the DCO recipe at 1024 px, the model card's sampler, no offset noise."""
    subject = make_plan(PAPER / "sd35m_dco_subject.yaml").cells[0]
    assert (subject.method, subject.train.rank, subject.train.lr, subject.train.steps) == ("dco", 32, 5e-5, 2000)
    assert subject.train.train_token and subject.train.resolution == 1024
    assert (subject.sample.steps, subject.sample.w_text) == (40, 4.5)
    for name in ("dco_style", "dreambooth_style"):
        style = make_plan(PAPER / f"sd35m_{name}.yaml").cells[0]
        assert (style.train.rank, style.train.steps, style.train.offset_noise) == (64, 1000, 0.0)
    pp = make_plan(PAPER / "sd35m_dreambooth_pp_subject.yaml").cells[0]
    assert pp.method == "dreambooth_pp" and pp.sample.steps == 40 and pp.method_cfg.num_class_images == 100
    assert make_plan(PAPER / "sd35m_dreambooth_subject.yaml").cells[0].method == "dreambooth"


def test_cli_usage_errors_are_one_message_not_a_traceback(capsys):
    """typer vendors click (typer._click): its usage errors must be shown, not raised."""
    from dcobench.cli import main

    assert main(["validate"]) == 2
    err = capsys.readouterr().err
    assert "Missing argument" in err and "Traceback" not in err


def _knob_sets(plan, method):
    return {tuple(sorted(c.knobs.items())) for c in plan.cells if c.method == method}


def test_a_mapping_override_replaces_and_plus_merges(tiny_suite, tmp_path):
    """`key={...}` is the whole new mapping; `+key={...}` adds to the one below (suite, config file)."""
    cfg = tmp_path / "run.yaml"
    cfg.write_text("methods:\n  dreambooth:\n    sweep: {sample.cfg_scale: [3.0, 5.0]}\n")
    replaced = make_plan(cfg, ["methods.dreambooth.sweep={train.steps: [2, 3]}"], ["dreambooth"], "tiny")
    assert _knob_sets(replaced, "dreambooth") == {(("train.steps", 2),), (("train.steps", 3),)}
    merged = make_plan(cfg, ["+methods.dreambooth.sweep={train.steps: [2, 3]}"], ["dreambooth"], "tiny")
    assert _knob_sets(merged, "dreambooth") == {(("sample.cfg_scale", a), ("train.steps", b))
                                                for a in (3.0, 5.0) for b in (2, 3)}
    # a config file's sweep replaces the suite's too (a sweep is one setting)
    assert _knob_sets(make_plan(cfg, [], ["dreambooth"], "tiny"), "dreambooth") == {
        (("sample.cfg_scale", 3.0),), (("sample.cfg_scale", 5.0),)}
    # `+` on a mapping of options merges option by option; on a value it is refused
    plan = make_plan(cfg, ["+methods.dco={beta: 50}"], ["dco"], "tiny")
    assert {c.method_cfg.beta for c in plan.cells} == {50.0}
    with pytest.raises(DcoError, match=r"`\+` merges a mapping into a mapping.*write seeds=\[1\]"):
        make_plan(cfg, ["+seeds=[1]"], ["dco"], "tiny")


@pytest.mark.parametrize("override, where", [
    ("seeds=[0,0]", "seeds: 0 is given twice"),
    ("sample.seeds=[1,2,1]", "sample.seeds: 1 is given twice"),
    ("methods.dco.sweep={sample.w_con: [1, 1.0]}", r"methods\.dco\.sweep\.sample\.w_con: 1.0 is given twice"),
    ("subjects=[robot,robot]", "subjects: 'robot' is given twice"),
])
def test_duplicate_values_are_errors(tiny_suite, override, where):
    with pytest.raises(DcoError, match=where):
        make_plan(overrides=[override], methods=["dco"], suite="tiny")


def test_idle_knob_values_give_one_cell_and_a_note(tiny_suite):
    """Sweeping both guidance modes' scales: each mode ignores the other's, so 2 x 3 x 3 values are
    6 cells per LoRA, each once, and the plan names the knob that had no effect."""
    sweep = "methods.dreambooth.sweep={sample.guidance: [cfg, consistency], sample.cfg_scale: [1, 2, 3], " \
            "sample.w_con: [1, 2, 3]}"
    plan = make_plan(overrides=[sweep, "subjects=[robot]"], methods=["dreambooth"], suite="tiny")
    assert len(plan.cells) == len({c.cell_id for c in plan.cells}) == 6
    knobs = _knob_sets(plan, "dreambooth")
    assert (("sample.cfg_scale", 2), ("sample.guidance", "cfg")) in knobs
    assert (("sample.guidance", "consistency"), ("sample.w_con", 3)) in knobs
    assert plan.notes == [
        "methods.dreambooth.sweep.sample.w_con has no effect under guidance=cfg: its 3 values give the same "
        "cells, run once",
        "methods.dreambooth.sweep.sample.cfg_scale has no effect under guidance=consistency: its 3 values give "
        "the same cells, run once"]
    # an effective sweep leaves no note
    assert not make_plan(overrides=["methods.dco.sweep={sample.w_con: [1, 2]}"], methods=["dco"], suite="tiny").notes


def test_collapsed_cells_are_run_once_and_not_counted_as_another_process(tiny_suite, tmp_path, capsys):
    from dcobench.cli import main

    args = ["run", "--methods", "dreambooth", "--suite", "tiny", "subjects=[robot]", "train.steps=2",
            "sample.steps=2", "sample.seeds=[0]", "score.enabled=false", "--quiet", "--out", str(tmp_path / "r"),
            "methods.dreambooth.sweep={sample.w_con: [1, 2, 3]}"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "note: methods.dreambooth.sweep.sample.w_con has no effect under guidance=cfg" in err
    assert "1 cells in" in err and "another process" not in err, err
    assert len(list((tmp_path / "r" / "cells").iterdir())) == 1


def test_speed_only_options_leave_every_cell_id_alone(tiny_suite):
    """`train.compile`, `sample.compile` (and every `identity=False` option) change how fast a cell
    runs, not its images: a run with them reuses the cells of one without."""
    from dcobench.plan import make_plan

    plain = make_plan({}, [], ["dco", "dreambooth"], "tiny")
    fast = make_plan({}, ["train.compile=true", "sample.compile=true"], ["dco", "dreambooth"], "tiny")
    assert [c.cell_id for c in plain.cells] == [c.cell_id for c in fast.cells]
    assert all(c.sample.compile for c in fast.cells)
