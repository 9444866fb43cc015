#!/bin/bash
# GEMM device run (logs and JSON under $OUT): STEPS picks and orders the steps, default all.
#   tests  : the GEMM GPU tests            tune : bench gemm --tune (TUNE_KINDS, TUNE_M), table to $OUT
#   precompile : the tune sweep's kernels in 16 processes (before tune, when the carried cache lacks them)
#   bench  : bench gemm (BENCH_ARGS)       grouped : bench grouped --sweep
#   san    : compute-sanitizer (SAN_TOOLS) on a few small configs, new tiles included
# Carry .whl and a .jitkern-cache precompiled here (bench gemm/grouped --precompile) to skip compiles.
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1
nvidia-smi -L | tee $OUT/gpu.txt
t0=$(date +%s)
for step in ${STEPS:-tests tune bench grouped san}; do
  echo "== $step (t=$(( $(date +%s) - t0 )) s)"
  case $step in
  tests)
    GEMM_EXAMPLES=${GEMM_EXAMPLES:-12} HYPOTHESIS_PROFILE=gpu timeout ${T_TEST:-200} python3 -m pytest -m gpu \
      tests/test_gemm.py -q -x -p no:cacheprovider -rfE > $OUT/tests.log 2>&1
    echo "rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" $OUT/tests.log | tail -8 ;;
  precompile)  # the tune sweep's kernels, compiled here in parallel (what the carried cache lacks)
    timeout ${T_PRE:-200} python3 -m jitkern.cli bench gemm --tune --precompile --kinds ${TUNE_KINDS:-fp8} --m ${TUNE_M:-64,128,4096} \
      --jobs 16 2>&1 | tail -2 ;;
  tune)
    timeout ${T_TUNE:-300} python3 -m jitkern.cli bench gemm --tune --kinds ${TUNE_KINDS:-fp8} --m ${TUNE_M:-64,128,4096} \
      --json $OUT/tune.json > $OUT/tune.log 2>&1
    echo "rc=$?"; tail -3 $OUT/tune.log
    python3 -c "import torch; from jitkern.heuristics import tuning_path; print(tuning_path(torch.cuda.get_device_name()))" \
      | xargs -I{} cp {} $OUT/ ;;  # this GPU's table only: the tool returns at most 8 files
  bench)
    timeout ${T_BENCH:-180} python3 -m jitkern.cli bench gemm --json $OUT/bench.json ${BENCH_ARGS} > $OUT/bench.log 2>&1
    echo "rc=$?"; tail -26 $OUT/bench.log ;;
  grouped)
    timeout ${T_GROUPED:-200} python3 -m jitkern.cli bench grouped --sweep --json $OUT/grouped.json > $OUT/grouped.log 2>&1
    echo "rc=$?"; grep -E "sweep best" $OUT/grouped.log | cut -c1-200 ;;
  san)
    cat > /tmp/small.py <<'PY'
import torch, sys
sys.path.insert(0, "tests")
from test_gemm import _check_fp8, _check_bf16
from jitkern.heuristics import GemmConfig as G
_check_fp8(77, 136, 272, 1); _check_fp8(130, 256, 512, 2, accum=True); _check_bf16(65, 144, 200, 3)
_check_fp8(300, 2112, 1536, 4, config=G(128, 128, 5, 16, 132, 2, 1)); _check_fp8(70, 1040, 512, 5, config=G(64, 96, 8, 16, 132, 1, 2))
_check_fp8(300, 2112, 1536, 7, config=G(256, 128, 3, 16, 132, 2, 1)); _check_fp8(513, 1040, 512, 8, config=G(256, 96, 3, 16, 132, 1, 2))
_check_fp8(300, 2112, 1536, 9, config=G(128, 192, 4, 16, 132, 1, 1))
_check_fp8(96, 2112, 7168, 10, config=G(64, 64, 12, split_k=4)); _check_bf16(70, 576, 1552, 11, accum=True, config=G(128, 64, 8, split_k=3))
_check_bf16(300, 576, 520, 6, config=G(128, 96, 4, 16, 132, 2, 1))
torch.cuda.synchronize(); print("small ok")
PY
    for tool in ${SAN_TOOLS:-memcheck racecheck}; do
      timeout ${T_SAN:-90} compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 /tmp/small.py \
        > $OUT/san_$tool.log 2>&1
      echo "$tool rc=$?: $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san_$tool.log | tail -1) $(tail -1 $OUT/san_$tool.log)"
    done ;;
  esac
done
echo "t=$(( $(date +%s) - t0 )) s"
