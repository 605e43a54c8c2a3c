"""Scaling out (issue 12): units and shards, file locks, executors, determinism.

A reference run of the tiny suite is made once per module by `dcobench run` in its own process;
shards, a second process, Ray and a rerun must reproduce it bit for bit (on the CPU).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dcobench.errors import DcoError
from dcobench.plan import make_plan, parse_shard, shard
from dcobench.report import write_report
from dcobench.runner import run_plan
from dcobench.store import RunDir

FAST = ["train.steps=4", "sample.steps=3", "sample.seeds=[0]"]
RUN = ["run", "--methods", "dco,dreambooth", "--suite", "tiny", "--quiet", *FAST]


def files(root: Path) -> dict[str, bytes]:
    """What a run computed, byte for byte: LoRAs, images, per-image scores, manifests and each
    result.json's metrics (the rest of them records times, dates and the machine)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if not p.is_file() or rel.startswith((".locks", "report")) or p.name in ("run.json", "train.json"):
            continue
        out[rel] = p.read_bytes()
        if p.name in ("result.json", "manifest.json"):
            data = json.loads(p.read_bytes())
            data = data["metrics"] if p.name == "result.json" else {k: v for k, v in data.items() if k != "seconds"}
            out[rel] = json.dumps(data, sort_keys=True).encode()
    return out


def lora_files(root: Path) -> dict[str, bytes]:
    return {k: v for k, v in files(root).items() if k.startswith("loras/")}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Every run of this module, in process or not, at one torch thread: CPU results are
    bit-identical only at one thread count, and a Ray task with num_cpus=1 gets OMP_NUM_THREADS=1
    whatever the machine has."""
    import os

    import torch

    before, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dcobench_cache, one_thread) -> Path:
    from conftest import run_cli

    out = tmp_path_factory.mktemp("reference") / "run"
    r = run_cli(*RUN, "--out", out)
    assert r.returncode == 0, r.stderr
    write_report(out)
    return out


def test_units_group_cells_by_training():
    plan = make_plan(overrides=FAST, suite="tiny")
    units = plan.units()
    assert len(units) == 4  # 2 methods x 2 subjects, each LoRA shared by its 2 swept sampling knobs
    for unit in units:
        assert unit.train_ids == [unit.key] and len(unit.cells) == 2
        assert {c.train_id for c in unit.cells} == {unit.key}
    assert sorted(c.cell_id for u in units for c in u.cells) == sorted(c.cell_id for c in plan.cells)
    # --merge: the style LoRA ties both subjects' merge cells (and their own cells) into one unit
    merged = make_plan(overrides=FAST, suite="tiny", methods=["dco"], merge=["direct"])
    (unit,) = merged.units()
    assert len(unit.train_ids) == 3 and len(unit.cells) == len(merged.cells) + len(merged.merge_cells)


def test_shards_split_units_exactly_once():
    units = make_plan(overrides=FAST + ["seeds=[0,1,2]"], suite="tiny").units()
    for n in (1, 2, 3, 5, 13):
        parts = [shard(units, i, n) for i in range(1, n + 1)]
        keys = [u.key for p in parts for u in p]
        assert sorted(keys) == sorted(u.key for u in units)  # every unit in exactly one shard
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced by count
    # the split depends on the plan, not on the order of --methods
    other = make_plan(overrides=FAST + ["seeds=[0,1,2]"], suite="tiny", methods=["dreambooth", "dco"]).units()
    assert [u.key for u in shard(other, 2, 3)] != [] and \
        {u.key for u in shard(other, 2, 3)} == {u.key for u in shard(units, 2, 3)}
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/2", "0/2", "1/0", "2", "a/b", "1/2/3"):
        with pytest.raises(DcoError, match="--shard"):
            parse_shard(bad)


def test_three_shards_equal_one_unsharded_run_bit_for_bit(reference, tmp_path):
    """Shards 1 and 2 write into one folder, shard 3 into another; together they hold exactly the
    reference's files (made by another process: the same config and seed give the same bytes on the
    CPU), each LoRA trained once, and the report over both folders equals the reference's."""
    plan = make_plan(overrides=FAST, suite="tiny", methods=["dco", "dreambooth"])
    a, b = tmp_path / "a", tmp_path / "b"
    stats = [run_plan(plan, out, show_progress=False, shard=(i, 3)) for i, out in ((1, a), (2, a), (3, b))]
    assert sum(s["trained"] for s in stats) == 4 and sum(s["sampled"] for s in stats) == 8
    assert not set(lora_files(a)) & set(lora_files(b))  # no LoRA trained in two shards
    assert {**files(a), **files(b)} == files(reference)
    write_report([a, b], tmp_path / "report")
    for name in ("summary.csv", "dominance.csv"):
        assert (tmp_path / "report" / name).read_bytes() == (reference / "report" / name).read_bytes()
    assert not run_plan(plan, a, show_progress=False, shard=(1, 3))["sampled"]  # a shard reruns nothing


def test_a_unit_another_process_holds_is_put_off_then_finished(tmp_path):
    """The local executor skips a unit whose lock is held elsewhere, runs the rest, then waits for
    the holder and finishes only what it left: nothing is run twice, nothing while locked."""
    from filelock import FileLock

    plan = make_plan(overrides=FAST, suite="tiny", methods=["dreambooth"])
    held, others = plan.units()[0], plan.units()[1:]
    store, seen, locked = RunDir(tmp_path / "run"), {}, threading.Event()

    def holder():
        (store.root / ".locks").mkdir(parents=True)
        lock = FileLock(str(store.root / ".locks" / f"unit-{held.key}.lock"), thread_local=False)
        lock.acquire()
        locked.set()
        deadline = time.time() + 120
        while time.time() < deadline and not all(store.is_done(c.cell_id) for u in others for c in u.cells):
            time.sleep(0.05)
        seen["others_done"] = all(store.is_done(c.cell_id) for u in others for c in u.cells)
        seen["held_done"] = any(store.is_done(c.cell_id) for c in held.cells)
        lock.release()

    thread = threading.Thread(target=holder)
    thread.start()
    locked.wait(30)
    stats = run_plan(plan, store.root, show_progress=False)
    thread.join()
    assert seen == {"others_done": True, "held_done": False}
    assert stats["sampled"] == len(plan.cells) and stats["trained"] == len(plan.units())


@pytest.mark.slow
def test_two_processes_on_one_folder_split_the_work(reference, tmp_path):
    """Two `dcobench run` on one folder, started together: every cell done exactly once, every LoRA
    trained once, every file valid, and the same bytes as the reference."""
    from PIL import Image
    from safetensors.torch import load_file

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "dcobench", *RUN, "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    counts = [_counts(err) for _, err in logs]
    assert sum(c["run"] for c in counts) == 8 and sum(c["trained"] for c in counts) == 4, logs
    assert files(out) == files(reference)
    for p in out.rglob("*"):
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".png":
            Image.open(p).load()
        elif p.suffix == ".safetensors":
            load_file(str(p))
    assert not [p for p in out.rglob("*") if p.name.startswith(".") and p.parent.name != ".locks"
                and p.name != ".locks"]


def _counts(stderr: str) -> dict:
    import re

    m = re.search(r"(\d+)\s+run,\s+(\d+)\s+already\s+done.*?(\d+)\s+LoRAs\s+trained", stderr, re.S)
    assert m, stderr
    return {"run": int(m.group(1)), "trained": int(m.group(3))}


@pytest.mark.slow
def test_ray_with_two_workers_equals_local(reference, tmp_path):
    """--executor ray on a local Ray instance with 2 workers: the same files as the local executor
    (LoRAs, images and scores bit for bit, result.json metrics), and the same report."""
    pytest.importorskip("ray")
    from conftest import run_cli

    out = tmp_path / "ray"
    r = run_cli(*RUN, "--out", out, "--executor", "ray", "--workers", "2", timeout=600)
    assert r.returncode == 0, r.stderr
    assert _counts(r.stderr) == {"run": 8, "trained": 4}
    assert files(out) == files(reference)
    write_report(out)
    assert (out / "report" / "summary.csv").read_bytes() == (reference / "report" / "summary.csv").read_bytes()
    assert json.loads((out / "run.json").read_text()) == json.loads((reference / "run.json").read_text())


def test_deterministic_kernels_change_nothing_on_the_cpu(reference, tmp_path):
    """`deterministic=true` (PyTorch's deterministic algorithms, for GPUs) runs on the CPU and gives
    the reference's bytes."""
    import torch

    plan = make_plan(overrides=FAST + ["subjects=[robot]", "deterministic=true"], suite="tiny", methods=["dreambooth"])
    try:
        run_plan(plan, tmp_path / "run", show_progress=False)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    mine = files(tmp_path / "run")
    assert len(mine) > 5 and all(mine[k] == files(reference)[k] for k in mine)
