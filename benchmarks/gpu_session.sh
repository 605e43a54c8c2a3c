#!/bin/bash
# The GPU session of issue 22, as run on the lent H200 (benchmarks/RESULTS.md, "Real size, end to
# end"): every measurement in one command under 10 minutes, the most wanted first, each with its
# own time limit so that a slow one cuts only itself. Results and logs go to $OUT.
#   OUT=/tmp/gpu-out bash benchmarks/gpu_session.sh
set -u
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
cd "$(dirname "$0")"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, diffusers, peft, open_clip; print(torch.__version__, diffusers.__version__, peft.__version__, open_clip.__version__)" >> "$OUT/gpu.txt" 2>&1
# 1. dcobench run -> report at SDXL and SD3.5-Medium size; sampling against the stock pipelines;
#    scoring against its encoders; sample.compile on SDXL last
timeout 380 python3 e2e_real_size.py --json "$OUT/e2e.json" --root /tmp/e2e --compile cfg --compile-families sdxl \
    > "$OUT/e2e.log" 2>&1; echo "e2e rc=$?"
# 2. training at batch 4 (eager), then where a checkpointed step's time goes
timeout 75 python3 gpu_sdxl_vs_diffusers.py --configs dreambooth,dco --batch 4 --steps 4 --warmup 2 --rounds 1 \
    --no-record > "$OUT/train_b4.log" 2>&1; echo "train rc=$?"
timeout 70 python3 gpu_sdxl_vs_diffusers.py --profile dco,dco-gc --steps 2 --warmup 2 > "$OUT/profile.log" 2>&1
echo "profile rc=$?"
