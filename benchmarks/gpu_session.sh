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
# The second session's order (the first measured the end-to-end rows, RESULTS.md): what is still
# not measured or not explained, the most wanted first.
# 1. scoring at real size against its encoders (threaded preprocessing since the first session); it
#    scores a cell of the SDXL run, so the e2e part runs first
timeout 150 python3 e2e_real_size.py --json "$OUT/scoring.json" --root /tmp/e2e --parts e2e,scoring --families sdxl \
    > "$OUT/scoring.log" 2>&1; echo "scoring rc=$?"
# 2. sample.compile on SDXL (CFG): the rows the first session's limit cut
timeout 220 python3 e2e_real_size.py --json "$OUT/compile.json" --root /tmp/e2e --parts sampling --families sdxl \
    --compile cfg --compile-families sdxl > "$OUT/compile.log" 2>&1; echo "compile rc=$?"
# 3. where a checkpointed DCO step's time goes
timeout 60 python3 gpu_sdxl_vs_diffusers.py --profile dco-gc --steps 2 --warmup 2 > "$OUT/profile.log" 2>&1
echo "profile rc=$?"
# 4. compiled training at batch 2
timeout 120 python3 gpu_sdxl_vs_diffusers.py --configs dreambooth-compile,dco-compile --batch 2 --steps 4 --warmup 2 \
    --rounds 1 --no-record > "$OUT/train_compile_b2.log" 2>&1; echo "train compile rc=$?"
