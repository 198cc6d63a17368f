#!/usr/bin/env bash
# Everything herobench checks on a lent GPU, in one command (device machines hold minutes, not hours).
#
#   OUT=/tmp/gpu-out bash benchmarks/gpu_session.sh [GRID_SECONDS]
#   OUT=/tmp/gpu-out GRID=benchmarks/grids/mountain_snowy.toml GRID_ONLY=1 JOBS=24 bash benchmarks/gpu_session.sh 470
#
# 1. the CUDA tests (tests/test_core_gpu.py: same noise as on the CPU, exact log-prob recomputation, fp16);
# 2. one HERO iteration at SD-1.5's real size with random weights (benchmarks/gpu_sd15_iteration.py);
# 3. one HERO iteration on the GlyphWorld model on the GPU (benchmarks/bench_iteration.py);
# 4. a grid (GRID, default benchmarks/grids/glyphworld.toml) on the GPU, cells in parallel worker processes
#    (JOBS, default 14), for at most GRID_SECONDS (default 360); finished cells are complete run folders,
#    the rest are resumable. Run folders (without checkpoints) come back as $OUT/runs.tgz.
# GRID_ONLY=1 runs the CUDA tests beside the grid (in the background) and skips steps 2-3.
# Logs go to $OUT/*.log. Missing Python packages (diffusers, open_clip) are installed first from the
# wheels in .whl/ when that folder exists (see benchmarks/gpu_sd15_iteration.py).
set -u
: "${OUT:?set OUT to a folder for the logs and results}"
GRID_SECONDS=${1:-360}
JOBS=${JOBS:-14}
GRID=${GRID:-benchmarks/grids/glyphworld.toml}
GRID_ONLY=${GRID_ONLY:-0}
DEVICE=${DEVICE:-cuda}   # DEVICE=cpu: a dry look at this script without a GPU
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 YOLO_OFFLINE=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:.
else
  export PYTHONPATH=.
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
python3 -c "import torch, diffusers, transformers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.log"

start=$(date +%s)
gpu_tests() {
  timeout 90 python3 -m pytest -q -p no:cacheprovider tests/test_core_gpu.py 2>&1 | tail -15 > "$OUT/gpu_tests.log"
  echo "[gpu tests $(( $(date +%s) - start )) s]" >> "$OUT/gpu_tests.log"
}
if [ "$GRID_ONLY" = 1 ]; then
  gpu_tests &
else
  gpu_tests

  t=$(date +%s)
  timeout 240 python3 benchmarks/gpu_sd15_iteration.py --clip-oracle > "$OUT/sd15.log" 2>&1
  echo "[sd15 rc $? $(( $(date +%s) - t )) s]" >> "$OUT/sd15.log"

  t=$(date +%s)
  timeout 90 python3 benchmarks/bench_iteration.py --device cuda > "$OUT/glyphworld_iteration.log" 2>&1
  echo "[glyphworld iteration rc $? $(( $(date +%s) - t )) s]" >> "$OUT/glyphworld_iteration.log"
fi

t=$(date +%s)
name=$(basename "$GRID" .toml)
timeout -k 10 "$GRID_SECONDS" python3 -m herobench.cli bench "$GRID" --set device="$DEVICE" \
  --jobs "$JOBS" --gpus 0 --no-report --out "/tmp/runs/$name" > "$OUT/grid.log" 2>&1
echo "[grid rc $? $(( $(date +%s) - t )) s]" >> "$OUT/grid.log"
pkill -f "herobench.cli bench" 2>/dev/null; pkill -f "multiprocessing.spawn" 2>/dev/null; sleep 1
wait
tar -C /tmp/runs -czf "$OUT/runs.tgz" --exclude=checkpoints --exclude='*.png' "$name"
ls -la "$OUT"
echo "[total $(( $(date +%s) - start )) s]"
