"""benchmarks/baseline_parity.py at toy size (1 subject, 1 seed, 2 training steps, 1 prompt, 1 CFG point), so
that the parity benchmark against diffusers' train_dreambooth_lora.py cannot rot: both trainers run, both
LoRAs load into a stock diffusers pipeline, both sides are sampled and scored, the report is written.
About 25 s on one thread (two trainers' start-up), so it sits with the slow tests (`make test-slow`, in CI)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2


@pytest.mark.slow
def test_baseline_parity_runs_both_trainers_and_scores_both(tmp_path):
    out = tmp_path / "parity"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, "benchmarks/baseline_parity.py", "--out", str(out), "--subjects", "tent", "--seeds", "0",
            "--steps", str(STEPS), "--cfg", "3.0", "--sample-steps", "2", "--sample-seeds", "0", "--max-prompts", "1",
            "--quiet"]
    r = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]

    res = json.loads((out / "parity.json").read_text())
    (unit,) = res["units"]
    assert {row["judge"] for row in res["rows"]} == {"oracle_subject", "dino", "clip_i", "clip_t"}
    assert {f["y"] for f in res["frontier"]} == {"oracle_subject", "dino", "clip_i"}
    assert (out / "parity.md").read_text().startswith("# Baseline parity")

    folders = {impl: out / impl / "loras" / unit["train_id"] for impl in ("dcobench", "script")}
    script_info = json.loads((folders["script"] / "train.json").read_text())
    assert script_info["trainer"] == "diffusers train_dreambooth_lora.py"
    assert len(script_info["losses"]) == STEPS  # read back from the script's own tensorboard log
    assert "train_dreambooth_lora.py" in script_info["command"] and "--rank 8" in script_info["command"]
    assert "trainer" not in json.loads((folders["dcobench"] / "train.json").read_text())

    from diffusers import StableDiffusionPipeline
    from peft.tuners.lora import LoraLayer
    from safetensors import safe_open

    keys = {}
    for impl, folder in folders.items():
        with safe_open(str(folder / "pytorch_lora_weights.safetensors"), "pt") as f:
            keys[impl] = set(f.keys())
            # dcobench saves its LoraConfig as metadata; the script saves none (alpha = rank on load)
            assert ("lora_adapter_metadata" in (f.metadata() or {})) == (impl == "dcobench")
        pipe = StableDiffusionPipeline.from_pretrained(str(ROOT / "data" / "micro" / "base"))
        pipe.load_lora_weights(str(folder), weight_name="pytorch_lora_weights.safetensors", adapter_name=impl)
        layers = [m for m in pipe.unet.modules() if isinstance(m, LoraLayer)]
        assert layers and all(impl in m.lora_A for m in layers), impl
        assert {type(m.base_layer).__name__ for m in layers} == {"Linear"}  # attention projections only
    assert keys["dcobench"] == keys["script"] and len(keys["script"]) > 0  # the same layers get a LoRA

    for cell_id in unit["cells"]:
        for impl in ("dcobench", "script"):
            cell = out / impl / "cells" / cell_id
            result = json.loads((cell / "result.json").read_text())
            assert (cell / result["scores"]).is_file(), (impl, cell_id)
            assert result["lora"].endswith(f"loras/{unit['train_id']}/pytorch_lora_weights.safetensors")
            assert all((cell / f).is_file() for f in result["images"])
            assert {"oracle_subject", "dino", "clip_i", "clip_t"} <= set(result["metrics"])
    assert list((out / "sheets").glob("tent-s0-cfg3.png"))
