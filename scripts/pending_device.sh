#!/bin/bash
# One device call for what is GPU-unverified or unmeasured (fourth 2026-12-01 session); logs under
# $OUT (at most 8 files come back: each step appends to one of them). From the repo root on the GPU host:
#   source scripts/device_env.sh && bash scripts/pending_device.sh
# 1. GEMM + grouped GPU tests (contiguous 256-row tiles: ContigSlot), MLA GPU tests (seesaw as the
#    default for 128 heads with s_q >= 2), memcheck + racecheck on contiguous 256-row cases.
# 2. scripts/contig_ab.py (128x128 vs 256x128 contiguous, 3 interleaved rounds), bench grouped.
# 3. verify_sampled sweep over loads in flight per SM (unroll x CTAs per SM), b = 16, 64, 256.
# 4. bench gemm (18 shapes) and bench mla (default dispatch).
source scripts/device_env.sh || exit 1
J=$(mktemp -d)  # bench JSON, returned as one archive (json.tgz)
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
t0=$(date +%s)
say() { echo "$* (t=$(( $(date +%s) - t0 )) s)" | tee -a $OUT/log.txt; }
nvidia-smi -L >> $OUT/log.txt
timeout 300 python3 -m pytest -m gpu tests/test_gemm.py tests/test_gemm_grouped.py tests/test_mla.py -n 8 -q \
  -p no:cacheprovider -rfE > $OUT/tests.log 2>&1; say "gemm+grouped+mla tests rc=$? $(tail -1 $OUT/tests.log)"
for tool in memcheck racecheck; do
  timeout 150 compute-sanitizer --tool $tool --report-api-errors no python3 -m pytest -m gpu -q -p no:cacheprovider \
    tests/test_gemm_grouped.py -k "test_grouped_contiguous_256 and 576-512-256x128 or test_grouped_contiguous_256 and 2112-1536-256x128" \
    >> $OUT/san.log 2>&1; say "$tool contiguous 256 rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
done
timeout 200 python3 scripts/contig_ab.py > $OUT/contig.log 2>&1; say "contig_ab rc=$?"
timeout 120 python3 -m jitkern.cli bench grouped --json $J/grouped.json >> $OUT/contig.log 2>&1; say "bench grouped rc=$?"
timeout 150 python3 -m jitkern.cli bench spec --kinds sampled --cases 16x7,64x7,256x3 --sweep --json $J/sampled.json \
  > $OUT/spec.log 2>&1; say "sampled sweep rc=$?"
timeout 100 python3 -m jitkern.cli bench gemm --json $J/gemm.json > $OUT/bench.log 2>&1; say "bench gemm rc=$?"
timeout 60 python3 -m jitkern.cli bench mla --json $J/mla.json >> $OUT/bench.log 2>&1; say "bench mla rc=$?"
tar czf $OUT/json.tgz -C $J .
grep -E "geomean|average" $OUT/bench.log; grep -E "^sweep" $OUT/spec.log | head -30; tail -15 $OUT/contig.log
