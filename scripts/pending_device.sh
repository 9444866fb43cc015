#!/bin/bash
# One device call for what is GPU-unverified or unmeasured (fourth 2026-12-01 session); logs under
# $OUT (at most 8 files come back). From the repo root on the GPU host:
#   source scripts/device_env.sh && bash scripts/pending_device.sh
# 1. MLA seesaw with the mbarrier max exchange: its GPU tests, memcheck + racecheck on the smoke
#    case, `bench mla` twice (wgmma against both seesaw impls).
# 2. Markov with the lean grid barrier as the default: the markov GPU tests.
# 3. GEMM: re-tune fp8 at M = 64, 128 (split-K fp8 candidates were timed serialised before), write
#    the table into this copy's tuning/, then `bench gemm` over the 18 shapes with it.
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
t0=$(date +%s)
say() { echo "$* (t=$(( $(date +%s) - t0 )) s)" | tee -a $OUT/log.txt; }
nvidia-smi -L >> $OUT/log.txt
(python3 -m jitkern.cli bench gemm --tune --m 64,128 --kinds fp8 --precompile --jobs 12 > $OUT/precompile.log 2>&1) &
pre=$!
timeout 200 python3 -m pytest -m gpu tests/test_mla.py tests/test_mla_smoke.py -k seesaw -n 4 -q -p no:cacheprovider -rfE \
  > $OUT/tests.log 2>&1; say "mla seesaw tests rc=$? $(tail -1 $OUT/tests.log)"
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --report-api-errors no python3 tests/test_mla_smoke.py wgmma_seesaw \
    >> $OUT/san.log 2>&1; say "$tool seesaw rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
done
timeout 150 python3 -m pytest -m gpu tests/test_speculative_markov.py -n 4 -q -p no:cacheprovider -rfE \
  >> $OUT/tests.log 2>&1; say "markov tests rc=$? $(tail -1 $OUT/tests.log)"
wait $pre; say "precompile: $(tail -1 $OUT/precompile.log)"
for r in 1 2; do
  timeout 120 python3 -m jitkern.cli bench mla --impl wgmma,wgmma_seesaw,wgmma_seesaw_wc --json $OUT/mla$r.json \
    >> $OUT/bench.log 2>&1; say "bench mla round $r rc=$?"
done
timeout 330 python3 -m jitkern.cli bench gemm --tune --m 64,128 --kinds fp8 --tune-out tuning/gemm_h200.json \
  --json $OUT/tune.json > $OUT/tune.log 2>&1; say "tune rc=$? $(grep -c . $OUT/tune.log) lines"
cp tuning/gemm_h200.json $OUT/gemm_h200.json
timeout 100 python3 -m jitkern.cli bench gemm --json $OUT/gemm.json >> $OUT/bench.log 2>&1; say "bench gemm rc=$?"
grep -E "geomean|average" $OUT/bench.log
