#!/bin/bash
# End-of-session GPU pass (source scripts/device_env.sh first; logs and JSON under $OUT).
#   bash scripts/final_device.sh tests   # every GPU test + compute-sanitizer on new/changed kernels
#   bash scripts/final_device.sh bench   # bench gemm, grouped, mla, runtime (JSON per family)
OUT=${OUT:-/tmp/out}
nvidia-smi -L > $OUT/gpu.txt
case "${1:-tests}" in
tests)
  # four pytest processes at once (compiles dominate; the disk cache's per-key lock keeps them
  # from compiling one kernel twice); one log, in group order
  n=0
  for group in "tests/test_gemm.py tests/test_gemm_grouped.py" "tests/test_mla.py tests/test_mla_smoke.py" \
               "tests/test_speculative.py tests/test_speculative_small.py tests/test_speculative_sampled.py tests/test_speculative_markov.py" \
               "tests/test_quant.py tests/test_runtime_launch.py tests/test_runtime_cache.py tests/test_moe_routing.py tests/test_moe_pipeline.py tests/test_cli.py"; do
    n=$((n + 1))
    HYPOTHESIS_PROFILE=gpu timeout ${T_TESTS:-420} python3 -m pytest -m gpu $group -q -p no:cacheprovider -rfE \
      > /tmp/tests_$n.log 2>&1 &
  done
  wait
  for i in 1 2 3 4; do cat /tmp/tests_$i.log >> $OUT/tests.log; echo "group $i: $(tail -1 /tmp/tests_$i.log)"; done
  grep -hE "^(FAILED|ERROR)" /tmp/tests_*.log | head -20
  timeout ${T_SAN:-90} compute-sanitizer --tool memcheck --report-api-errors no --error-exitcode 9 python3 -m pytest -m gpu \
    -q -p no:cacheprovider tests/test_gemm.py -k "clusters and c21 and 300" > $OUT/san_gemm.log 2>&1
  echo "memcheck gemm cluster rc=$?: $(grep -h 'ERROR SUMMARY' $OUT/san_gemm.log | tail -1)"
  for tool in memcheck racecheck; do  # sampled verify + tree: the session's newest kernels
    HYPOTHESIS_PROFILE=sanitizer timeout ${T_SAN:-120} compute-sanitizer --tool $tool --report-api-errors no --error-exitcode 9 \
      python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_speculative_sampled.py \
      -k "chain_agrees or large_vocab" > $OUT/san_spec_$tool.log 2>&1
    echo "$tool sampled rc=$?: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY' $OUT/san_spec_$tool.log | tail -1) $(tail -1 $OUT/san_spec_$tool.log)"
  done
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
