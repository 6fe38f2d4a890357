#!/usr/bin/env bash
# The GPU checks of xmlc in one call, within about 8 minutes on one GPU:
#   1. the whole test suite with CUDA present: the CUDA-only tests run (device-resident batches,
#      torch-engine metrics and thresholds on CUDA, the bf16 run) and every training test trains
#      on the GPU (train.device=auto), crossfit's out-of-fold check included;
#   2. benchmarks/bench_gpu.py (training/eval table and the 20k x 4k AUPRC table, Markdown).
# Writes gpu_check.md (and the pytest log) into $OUT if set, else into the current directory.
#
#   bash benchmarks/gpu_check.sh
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD"
out="${OUT:-.}"
mkdir -p "$out"
report="$out/gpu_check.md"
{
  echo "# xmlc GPU check ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  python -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'available', torch.cuda.is_available())"
} | tee "$report"

start=$(date +%s)
timeout 300 python -m pytest -q -x -rs -p no:cacheprovider > "$out/pytest.log" 2>&1
tests_rc=$?
{
  echo
  echo "## tests: exit status $tests_rc ($(( $(date +%s) - start )) s; 124 = timed out)"
  echo
  echo '```'
  grep -E "passed|failed|error|SKIPPED|FAILED" "$out/pytest.log" | tail -n 40
  echo '```'
  echo
  echo "## benchmarks/bench_gpu.py"
  echo
} | tee -a "$report"

timeout 170 python benchmarks/bench_gpu.py --profile-steps 50 --repeats 3 2>&1 | tee -a "$report"
bench_rc=${PIPESTATUS[0]}
echo "bench_gpu.py exit status $bench_rc; total $(( $(date +%s) - start )) s" | tee -a "$report"
[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
