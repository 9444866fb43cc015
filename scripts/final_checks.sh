#!/bin/bash
# One GPU-host pass over the kernels outside MLA and speculative verify (those have their own
# scripts): GPU tests, compute-sanitizer memcheck (host API-lookup probes not counted) and
# racecheck on small cases. Logs under $OUT. Repo root: source scripts/device_env.sh && bash scripts/final_checks.sh
OUT=${OUT:-/tmp/out}
export HYPOTHESIS_PROFILE=gpu
timeout ${T_TESTS:-240} python3 -m pytest -m gpu tests/test_quant.py tests/test_runtime_launch.py tests/test_runtime_cache.py \
  tests/test_moe_routing.py tests/test_moe_pipeline.py tests/test_gemm.py tests/test_gemm_grouped.py -q -p no:cacheprovider -rfE \
  > $OUT/tests.log 2>&1; echo "tests rc=$?: $(tail -1 $OUT/tests.log)"
for tool in memcheck racecheck; do
  timeout ${T_SAN:-50} compute-sanitizer --tool $tool --report-api-errors no --error-exitcode 9 python3 -m pytest -m gpu -q \
    -p no:cacheprovider tests/test_quant.py tests/test_moe_routing.py -k "graph or strided" > $OUT/san_$tool.log 2>&1
  echo "$tool rc=$?: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' $OUT/san_$tool.log | tail -1)"
done
