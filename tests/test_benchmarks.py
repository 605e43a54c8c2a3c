"""The GPU benchmark scripts at toy size on the CPU, so that they cannot rot between GPU sessions.
Their timings here mean nothing; what is checked is that every part runs and reports its rows."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
TOY = {**os.environ, "DCOBENCH_BENCH_DEVICE": "cpu", "DCOBENCH_BENCH_TINY": "1", "OMP_NUM_THREADS": "1"}


def bench(*args, timeout=900):
    return subprocess.run([sys.executable, *map(str, args)], cwd=BENCH, env=TOY, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_e2e_real_size_runs_every_part_at_toy_size(tmp_path):
    out = tmp_path / "e2e.json"
    r = bench("e2e_real_size.py", "--json", out, "--root", tmp_path / "root", "--families", "sdxl,sd3",
              "--compile", "")
    assert r.returncode == 0, r.stderr[-3000:]
    parts = json.loads(out.read_text())["parts"]
    for family in ("sdxl", "sd3"):
        cells = parts[f"{family}/e2e"]["cells"]
        assert {(c["method"], c["guidance"]) for c in cells} == {("dco", "consistency"), ("dreambooth", "cfg")}
        for c in cells:
            assert c["metrics"] == ["clip_i", "clip_t", "dino", "dinov2"]
            assert c["train_ms_step"] > 0 and c["sample_img_s"] > 0 and c["score_img_s"] > 0
        sides = [row["side"] for row in parts[f"{family}/sampling"]["rows"]]
        assert sides[0].startswith("stock pipeline") and any("per-sample adapters" in s for s in sides)
        assert all(row["img_s"] > 0 for row in parts[f"{family}/sampling"]["rows"])
    assert parts["scoring"]["images"] == 8 and 0 < parts["scoring"]["ratio"]
    assert (tmp_path / "root" / "run-sd3" / "report" / "summary.csv").is_file()


@pytest.mark.slow
def test_the_training_profile_prints_the_top_kernels():
    r = bench("gpu_sdxl_vs_diffusers.py", "--profile", "dco,dco-gc", "--steps", "1", "--warmup", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("top kernels") == 2 and "Self CPU" in r.stdout
