#!/usr/bin/env bash
# Everything herobench checks on a lent GPU, as one prepared command (issue 30: GlyphWorld v3, DDIM 50 steps).
#
#   OUT=/tmp/gpu-out bash benchmarks/gpu_session.sh        # on the device machine: $OUT is what comes back
#   bash benchmarks/gpu_session.sh                         # OUT defaults to results/gpu-h200/v3-session
#   DRY_RUN=1 bash benchmarks/gpu_session.sh               # no GPU needed: print the plan and smoke-test on the CPU
#
# What it measures, each step time-boxed (the whole session fits one 10-minute command):
# 1. the CUDA tests (tests/test_core_gpu.py: same noise as on the CPU, exact log-prob recomputation, fp16);
# 2. one HERO iteration at SD-1.5's real size with random weights (benchmarks/gpu_sd15_iteration.py):
#    64 images x 50 DDIM steps, fp16, with its UNet-only time (forward calls + PPO backward) and the
#    iteration's time over it (issue 30's target: <= 1.15);
# 3. one HERO iteration on the GlyphWorld model (MODEL, default the shipped one; v3 is DDIM 50, CFG 3) on the
#    GPU (benchmarks/bench_iteration.py: UNet share, herobench vs diffusers' pipeline, projected run);
# 4. a 2-process data-parallel check over NCCL (benchmarks/scale_check.py under accelerate launch: ranks'
#    weights equal, against one process). NCCL refuses two ranks on one GPU (since NCCL 2.5), so with one GPU
#    this step says so and is skipped;
# 5. the HERO / D3PO hand slice (benchmarks/grids/gpu_hand_slice.toml) on the GPU, cells in parallel (JOBS,
#    default 8) for at most GRID_SECONDS (default 150); finished cells are complete run folders, the rest
#    resumable; their folders (no checkpoints or images) come back as $OUT/runs.tgz.
# Logs: $OUT/*.log; the headline lines: $OUT/numbers.txt (copy $OUT into results/gpu-h200/ and write its README).
# Missing Python packages (diffusers, peft, accelerate, open_clip) are installed first from the wheels in .whl/
# when that folder exists (see benchmarks/gpu_sd15_iteration.py). DRY_RUN=1 takes about 3 minutes on one CPU core
# (step 2 at widths / 8 still samples 512x512 images).
set -u
OUT=${OUT:-results/gpu-h200/v3-session}
GRID_SECONDS=${GRID_SECONDS:-150}
JOBS=${JOBS:-8}
MODEL=${MODEL:-glyphworld}
DRY_RUN=${DRY_RUN:-0}
GRID=benchmarks/grids/gpu_hand_slice.toml
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
if [ -d .whl ] && [ "$DRY_RUN" != 1 ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:.
else
  export PYTHONPATH=.
fi
start=$(date +%s)

# step NAME SECONDS COMMAND...: run COMMAND for at most SECONDS (timeout signals its whole process group, so
# a grid's worker processes end with it), log to $OUT/NAME.log; DRY_RUN=1 prints the command instead.
step() {
  local name=$1 seconds=$2
  shift 2
  if [ "$DRY_RUN" = 1 ]; then
    echo "[plan] $name (at most ${seconds} s): $*"
    return 0
  fi
  local t
  t=$(date +%s)
  timeout -k 10 "$seconds" "$@" > "$OUT/$name.log" 2>&1
  echo "[$name rc $? $(( $(date +%s) - t )) s]" >> "$OUT/$name.log"
  tail -1 "$OUT/$name.log"
}

n_gpus=0
if command -v nvidia-smi > /dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
  n_gpus=$(nvidia-smi -L | grep -c '^GPU')
fi
python3 -c "import torch, diffusers, transformers, peft; print('torch', torch.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__)" | tee -a "$OUT/gpu.log"
echo "model: $MODEL; GPUs: $n_gpus; grid: $GRID for at most $GRID_SECONDS s with $JOBS jobs; out: $OUT"

step cuda_tests 60 python3 -m pytest -q -p no:cacheprovider tests/test_core_gpu.py
step sd15_iteration 180 python3 benchmarks/gpu_sd15_iteration.py --clip-oracle
step glyphworld_iteration 120 python3 benchmarks/bench_iteration.py --device cuda --model "$MODEL" --budget 64 \
  --pipeline-rounds 1
if [ "$n_gpus" -ge 2 ] || [ "$DRY_RUN" = 1 ]; then
  step data_parallel_nccl 90 env CUDA_VISIBLE_DEVICES=0,1 python3 -m accelerate.commands.launch --multi_gpu \
    --num_processes 2 benchmarks/scale_check.py --batch 8 --steps 4
else
  echo "data_parallel_nccl skipped: $n_gpus GPU(s); NCCL needs one GPU per process (2.5+ refuses two ranks on one" \
       "device). The same check over gloo runs in the CPU tests (tests/test_data_parallel_run.py)." \
    | tee "$OUT/data_parallel_nccl.log"
fi
name=$(basename "$GRID" .toml)
step grid "$GRID_SECONDS" python3 -m herobench.cli bench "$GRID" --set device=cuda --set model="$MODEL" \
  --jobs "$JOBS" --gpus 0 --no-report --out "/tmp/runs/$name"

if [ "$DRY_RUN" = 1 ]; then  # a look without a GPU: the same scripts, CPU-sized
  echo "[dry run] CPU smoke of step 2 (widths / 8, 2 images, 2 steps) and the grid's plan:"
  python3 benchmarks/gpu_sd15_iteration.py --device cpu --reduce 8 --batch 2 --steps 2 --encoder-epochs 2 \
    | grep -E "ONE HERO ITERATION|UNet-only|finite" || exit 1
  python3 -m herobench.cli bench "$GRID" --set model="$MODEL" --out "/tmp/runs/$name" --dry-run | head -4 || exit 1
  echo "[dry run] done: nothing was measured"
  exit 0
fi
[ -d "/tmp/runs/$name" ] && tar -C /tmp/runs -czf "$OUT/runs.tgz" --exclude=checkpoints --exclude='*.png' "$name"
grep -hE "ONE HERO ITERATION|UNet-only|inside UNet|herobench / diffusers|projected|^ppo:|^dpo:|processes,|passed|failed|skipped" \
  "$OUT"/*.log > "$OUT/numbers.txt" 2>/dev/null
cat "$OUT/numbers.txt"
ls -la "$OUT"
echo "[total $(( $(date +%s) - start )) s]"
