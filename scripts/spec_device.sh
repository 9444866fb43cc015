# Speculative kernels on the GPU host (source scripts/device_env.sh first): GPU tests, bench spec
# (default configs plus the same-run variants), optional ncu and compute-sanitizer. Logs under $OUT.
# STEPS (default "tests bench"), T_TEST / T_BENCH / T_SAN budgets in seconds, BENCH_ARGS extra flags,
# SAN_TESTS the pytest selection run under compute-sanitizer.
for step in ${STEPS:-tests bench}; do
  case $step in
    tests)
      HYPOTHESIS_PROFILE=gpu timeout ${T_TEST:-240} python3 -m pytest -m gpu -q -p no:cacheprovider -rfE -n ${JOBS:-8} \
        tests/test_speculative.py tests/test_speculative_small.py tests/test_speculative_sampled.py \
        tests/test_speculative_markov.py > $OUT/spec_tests.log 2>&1
      echo "spec tests rc=$?"; tail -3 $OUT/spec_tests.log ;;
    bench)
      timeout ${T_BENCH:-300} python3 -m jitkern.cli bench spec $BENCH_ARGS --json $OUT/spec.json > $OUT/spec_bench.log 2>&1
      echo "bench rc=$?"; grep -E "greedy|sampled|markov|tree" $OUT/spec_bench.log | cut -c1-130 ;;
    san)
      for tool in memcheck racecheck; do
        timeout ${T_SAN:-60} compute-sanitizer --tool $tool --report-api-errors no --print-limit 20 python3 -m pytest -m gpu -q \
          -p no:cacheprovider ${SAN_TESTS:-tests/test_speculative_small.py} > $OUT/san_$tool.log 2>&1
        echo "$tool rc=$?"; tail -2 $OUT/san_$tool.log
      done ;;
  esac
done
