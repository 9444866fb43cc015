#!/bin/bash
# End-of-session GPU pass (source scripts/device_env.sh first; logs and JSON under $OUT).
#   bash scripts/final_device.sh tests   # every GPU test + compute-sanitizer on new/changed kernels
#   bash scripts/final_device.sh bench   # bench gemm, grouped, mla, runtime (JSON per family)
OUT=${OUT:-/tmp/out}
nvidia-smi -L > $OUT/gpu.txt
case "${1:-tests}" in
tests)
  HYPOTHESIS_PROFILE=gpu timeout ${T_TESTS:-420} python3 -m pytest -m gpu tests -q -p no:cacheprovider -rfE \
    > $OUT/tests.log 2>&1 || true
  echo "gpu tests: $(tail -1 $OUT/tests.log)"
  grep -E "^(FAILED|ERROR)" $OUT/tests.log | head -20
  timeout ${T_SAN:-90} compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 python3 -m pytest -m gpu \
    -q -p no:cacheprovider tests/test_gemm.py -k "clusters and c21 and 300" > $OUT/san_gemm.log 2>&1
  echo "memcheck gemm cluster rc=$?: $(grep -h 'ERROR SUMMARY' $OUT/san_gemm.log | tail -1)"
  ;;
bench)
  for fam in ${FAMILIES:-gemm grouped mla}; do
    timeout ${T_BENCH:-200} python3 -m jitkern.cli bench $fam --json $OUT/$fam.json > /tmp/bench_$fam.log 2>&1
    echo "bench $fam rc=$?"; cat /tmp/bench_$fam.log >> $OUT/bench.log
  done
  timeout 120 python3 -m jitkern.cli bench runtime --skip-compile --json $OUT/runtime.json > /tmp/bench_runtime.log 2>&1
  cat /tmp/bench_runtime.log >> $OUT/bench.log
  tail -14 /tmp/bench_runtime.log
  grep -h -A30 "^GEMM on" /tmp/bench_gemm.log | tail -24
  grep -h -A14 "^Grouped GEMM" /tmp/bench_grouped.log | tail -34
  tail -16 /tmp/bench_mla.log
  ;;
esac
