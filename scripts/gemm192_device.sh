#!/bin/bash
# BLOCK_M 192 (three math warpgroups) device run: GPU tests, sanitizers, tile A/B (logs under $OUT).
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache
nvidia-smi -L
HYPOTHESIS_PROFILE=gpu timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider -rfE -n 8 \
  tests/test_gemm.py tests/test_gemm_grouped.py -k "192 or wave_edges or explicit" > $OUT/tests192.log 2>&1
echo "tests rc=$?"; grep -E "^(FAILED|ERROR)|passed|failed" $OUT/tests192.log | tail -8
K="test_192_row_tiles and 300 and 192x128x4c11"
timeout 150 compute-sanitizer --tool memcheck python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gemm.py -k "$K" > $OUT/memcheck192.log 2>&1
echo "memcheck rc=$?"; grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck192.log | tail -3
timeout 150 compute-sanitizer --tool racecheck python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gemm.py -k "$K" > $OUT/racecheck192.log 2>&1
echo "racecheck rc=$?"; grep -E "RACECHECK SUMMARY|passed|failed" $OUT/racecheck192.log | tail -3
timeout ${T_AB:-240} python3 scripts/gemm_tile_ab.py --json $OUT/ab192.json ${AB_CFGS:-192x128x4c11,192x128x4c21,192x112x4c11} 2>&1 | tee $OUT/ab192.log
