#!/bin/bash
# One device call for what the third 2026-12-01 session changed but could not run on a GPU (device
# time ran out); logs under $OUT (at most 8 files come back). From the repo root on the GPU host:
#   source scripts/device_env.sh && bash scripts/pending_device.sh
# 1. GEMM: split-K fp8 (peeled promotion loop) and the K = 512 fp8 configs (run-time-J fallback):
#    the GEMM + grouped GPU tests, then `bench gemm` (all 18 shapes with cuBLAS; geomean goal 1.30).
# 2. MLA: the seesaw impl (kMode 32): its GPU tests, memcheck + racecheck on the smoke case, bench.
# 3. Markov: JITKERN_BARRIER_LEAN=1 flipped on in this copy of the tree, the markov GPU tests, and
#    scripts/markov_ab.py (both kernels, b = 1, 2).
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
t0=$(date +%s)
say() { echo "$* (t=$(( $(date +%s) - t0 )) s)" | tee -a $OUT/log.txt; }
nvidia-smi -L >> $OUT/log.txt
timeout 240 python3 -m pytest -m gpu tests/test_gemm.py tests/test_gemm_grouped.py -n 8 -q -p no:cacheprovider -rfE \
  > $OUT/tests_gemm.log 2>&1; say "gemm tests rc=$? $(tail -1 $OUT/tests_gemm.log)"
timeout 200 python3 -m pytest -m gpu tests/test_mla.py tests/test_mla_smoke.py -k seesaw -n 8 -q -p no:cacheprovider -rfE \
  > $OUT/tests_mla.log 2>&1; say "mla seesaw tests rc=$? $(tail -1 $OUT/tests_mla.log)"
for tool in memcheck racecheck; do
  timeout 90 compute-sanitizer --tool $tool --report-api-errors no python3 tests/test_mla_smoke.py wgmma_seesaw \
    >> $OUT/san.log 2>&1; say "$tool seesaw rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
done
timeout 150 python3 -m jitkern.cli bench gemm --json $OUT/gemm.json > $OUT/bench.log 2>&1; say "bench gemm rc=$?"
timeout 120 python3 -m jitkern.cli bench mla --impl wgmma,wgmma_seesaw,wgmma_seesaw_wc --json $OUT/mla.json \
  >> $OUT/bench.log 2>&1; say "bench mla rc=$?"
sed -i 's/#define JITKERN_BARRIER_LEAN 0/#define JITKERN_BARRIER_LEAN 1/' templates/spec/markov.cuh
timeout 150 python3 -m pytest -m gpu tests/test_speculative_markov.py -n 8 -q -p no:cacheprovider -rfE \
  > $OUT/markov.log 2>&1; say "markov tests (lean barrier) rc=$? $(tail -1 $OUT/markov.log)"
timeout 90 python3 scripts/markov_ab.py >> $OUT/markov.log 2>&1; say "markov_ab rc=$?"
tail -3 $OUT/markov.log; grep -E "geomean|average|fp8 .* 512 " $OUT/bench.log | head; grep -E "seesaw|geomean" $OUT/bench.log | head -20
