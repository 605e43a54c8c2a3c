"""DreamBench: the real prompts_and_classes.txt, a synthetic dataset in its layout, end to end."""

import json
import shutil
from pathlib import Path

import pytest

from dcobench.errors import DcoError
from dcobench.plan import make_plan
from dcobench.suites.dreambench import parse_prompts_and_classes

REAL = Path(__file__).resolve().parents[2] / "shared" / "dreambench" / "prompts_and_classes.txt"


@pytest.fixture(scope="module")
def real_file():
    if not REAL.is_file():
        pytest.skip(f"{REAL} (the shared copy of DreamBench's file) is not beside this checkout")
    return REAL


def test_parses_the_real_file(real_file):
    spec = parse_prompts_and_classes(real_file)
    assert len(spec.classes) == 30
    assert spec.classes["bear_plushie"] == "stuffed animal" and spec.classes["dog6"] == "dog"
    assert len(spec.object_prompts) == 25 and len(spec.live_prompts) == 25
    assert spec.object_prompts[0] == "a {identifier} {class_noun} in the jungle"
    assert spec.live_prompts[-1] == "a cube shaped {identifier} {class_noun}"
    assert "a {identifier} {class_noun} wearing a santa hat" in spec.live_prompts
    assert "a {identifier} {class_noun} wearing a santa hat" not in spec.object_prompts
    assert spec.prompts_for("cat") is spec.live_prompts and spec.prompts_for("teapot") is spec.object_prompts
    live = [n for n, c in spec.classes.items() if spec.prompts_for(c) is spec.live_prompts]
    assert sorted(live) == ["cat", "cat2", "dog", "dog2", "dog3", "dog5", "dog6", "dog7", "dog8"]


def test_malformed_file_names_the_line(tmp_path):
    bad = tmp_path / "prompts_and_classes.txt"
    bad.write_text("Classes\n\nsubject_name,class\ndog,dog\n\nPrompts\n\nObject Prompts\n\nprompt_list = [\n"
                   "'a {0} {1} in the jungle'.format(unique_token, class_token),\nimport os\n]\n")
    with pytest.raises(DcoError, match=r"prompts_and_classes\.txt:12: expected"):
        parse_prompts_and_classes(bad)


@pytest.fixture
def dataset(tmp_path, real_file, tiny_suite):
    """google/dreambooth layout: dataset/<subject>/*.jpg + the real prompts file."""
    from PIL import Image

    root = tmp_path / "dreambooth" / "dataset"
    root.mkdir(parents=True)
    shutil.copy(real_file, root / "prompts_and_classes.txt")
    for name in ("dog", "backpack"):
        (root / name).mkdir()
        for i, src in enumerate(tiny_suite.subjects[0].images):
            Image.open(src).convert("RGB").save(root / name / f"{i:02d}.jpg")
    return root.parent


def test_suite_reads_the_layout_with_subsets(dataset, tiny_sd_path):
    plan = make_plan(methods=["dreambooth"], suite="dreambench", data=str(dataset), model=str(tiny_sd_path))
    subjects = {c.subject.name: c.subject for c in plan.cells}
    assert set(subjects) == {"dog", "backpack"}
    assert subjects["dog"].prompts[10] == "a sks dog wearing a red hat"
    assert subjects["backpack"].prompts[10] == "a sks backpack with a wheat field in the background"
    assert plan.suite.resolution == 32  # the tiny model's own size, read from its configs
    assert plan.cells[0].sample.images_per_prompt == 4  # the paper's protocol: 25 prompts x 4 images
    plan = make_plan(methods=["dreambooth"], suite="dreambench", data=str(dataset), model=str(tiny_sd_path),
                     overrides=["subjects=[dog]", "sample.prompt_indices=[0,20]"])
    assert {c.subject.name for c in plan.cells} == {"dog"}
    assert plan.cells[0].prompts() == ["a sks dog in the jungle", "a red sks dog"]


def test_missing_options_and_folders(dataset, tiny_sd_path, tmp_path):
    with pytest.raises(DcoError, match="pass --data PATH"):
        make_plan(suite="dreambench", model=str(tiny_sd_path))
    with pytest.raises(DcoError, match="pass --model"):
        make_plan(suite="dreambench", data=str(dataset))
    with pytest.raises(DcoError, match="no prompts_and_classes.txt"):
        make_plan(suite="dreambench", data=str(tmp_path), model=str(tiny_sd_path))
    with pytest.raises(DcoError, match="reads no dataset folder"):
        make_plan(suite="tiny", data=str(dataset))


@pytest.mark.slow
def test_dreambench_run_end_to_end(dataset, tiny_sd_path, tmp_path, cli):
    out = tmp_path / "run"
    r = cli("run", "--suite", "dreambench", "--data", dataset, "--model", tiny_sd_path, "--methods", "dco,dreambooth",
            "--out", out, "--quiet", "train.steps=2", "sample.steps=2", "sample.prompt_indices=[0,1]",
            "sample.images_per_prompt=2", "score.clip=tiny-clip", "score.dino=tiny-dino", "subjects=[dog]")
    assert r.returncode == 0, r.stderr
    results = [json.loads(p.read_text()) for p in out.glob("cells/*/result.json")]
    assert len(results) == 2 and all(len(res["images"]) == 2 * 2 for res in results)
    assert all({"dino", "clip_i", "clip_t"} <= set(res["metrics"]) for res in results)
    r = cli("report", out)
    assert r.returncode == 0 and (out / "report" / "index.html").is_file(), r.stderr


@pytest.mark.parametrize("family", ["sdxl", "sd15", "sd35m"])
def test_paper_studies_put_every_method_under_both_samplers_with_the_paper_recipe(family, dataset, tiny_sd_path):
    """data/studies/paper_<family>.yaml trains exactly the LoRAs of the per-method paper configs
    (same ids) and samples each under CFG and consistency guidance."""
    from dcobench.study.run import plan_study
    from dcobench.study.spec import load_study

    spec, path = load_study(f"paper_{family}")
    spec.model, spec.data = str(tiny_sd_path), str(dataset)
    sp = plan_study(spec, path)
    arms = sp.manifest["claims"]["subject"]["arms"]
    assert set(arms) == {"cfg", "consistency"}
    by_id = {c.cell_id: c for c in sp.plan.cells}
    for method in ("dco", "dreambooth", "dreambooth_pp"):
        paper = make_plan(Path(__file__).parents[1] / "data" / "configs" / "paper" / f"{family}_{method}_subject.yaml",
                          suite="dreambench",
                          data=str(dataset), model=str(tiny_sd_path))
        want = {c.train_id for c in paper.cells}
        for arm in ("cfg", "consistency"):
            cells = [by_id[i] for i in arms[arm]["cells"] if by_id[i].method == method]
            assert {c.train_id for c in cells} == want
            assert {c.guidance for c in cells} == {arm}
