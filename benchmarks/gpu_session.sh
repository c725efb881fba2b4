#!/usr/bin/env bash
# The GPU checks of issue 19 in one script, for a lent GPU machine (torch + CUDA, CuPy): the gpu
# tests, the closed-form problems' device benchmarks (steps, and closed-form rounds against NumPy),
# ResNet18 at the paper's size against the naive loop. Everything lands under $OUT (default
# ./gpu-out): logs, table.md and run.json per benchmark.
#   OUT=/tmp/gpu bash benchmarks/gpu_session.sh   (at most 570 s: fits one 600 s device command)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python -c "import torch, numpy; print(torch.__version__, torch.version.cuda, numpy.__version__)" > "$OUT/versions.txt" 2>&1
timeout 180 python -m pytest -q -m gpu -p no:cacheprovider -rs > "$OUT/pytest-gpu.log" 2>&1
echo "pytest -m gpu: rc=$?" | tee -a "$OUT/summary.txt"
timeout 150 python benchmarks/bench_gpu.py --device cuda --out "$OUT/bench_gpu" > "$OUT/bench_gpu.log" 2>&1
echo "bench_gpu torch: rc=$?" | tee -a "$OUT/summary.txt"
timeout 120 python benchmarks/bench_rounds.py --backend torch --device cuda --json "$OUT/bench_rounds_cuda.json" \
    > "$OUT/bench_rounds_cuda.log" 2>&1
echo "bench_rounds torch cuda (run_rounds on the GPU vs NumPy): rc=$?" | tee -a "$OUT/summary.txt"
timeout 90 python benchmarks/bench_dl.py --model resnet18 --width 64 --clients 10 --batch-size 64 \
    --device cuda --autocast bf16 --channels-last --peak-tflops 989 > "$OUT/bench_dl_bf16_cl.log" 2>&1
echo "bench_dl resnet18 bf16 channels-last: rc=$?" | tee -a "$OUT/summary.txt"
timeout 30 python benchmarks/bench_dl_update.py --device cuda > "$OUT/bench_dl_update.log" 2>&1
echo "bench_dl_update (in-place local update, ResNet18 size): rc=$?" | tee -a "$OUT/summary.txt"
tail -n 3 "$OUT"/*.log
