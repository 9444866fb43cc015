#!/bin/bash
# One device call for the MLA decode paths: the whole MLA GPU suite (every impl), memcheck and
# racecheck on the smoke case of the impls named in $SAN (default: the seesaw ones), then
# `bench mla` twice over $IMPLS plus the default dispatch. Logs under $OUT. On the GPU host:
#   source scripts/device_env.sh && bash scripts/mla_device.sh
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
SAN=${SAN:-"wgmma_seesaw wgmma_seesaw_hr"}
IMPLS=${IMPLS:-"wgmma,wgmma_seesaw,wgmma_seesaw_hr,wgmma_chunk_wc"}
t0=$(date +%s)
say() { echo "$* (t=$(( $(date +%s) - t0 )) s)" | tee -a $OUT/log.txt; }
nvidia-smi -L >> $OUT/log.txt
timeout 300 python3 -m pytest -m gpu tests/test_mla.py tests/test_mla_smoke.py -n 8 -q -p no:cacheprovider -rfE \
  > $OUT/tests.log 2>&1; say "mla tests rc=$? $(tail -1 $OUT/tests.log)"
for impl in $SAN; do
  for tool in memcheck racecheck; do
    timeout 90 compute-sanitizer --tool $tool --report-api-errors no python3 tests/test_mla_smoke.py $impl \
      >> $OUT/san.log 2>&1; say "$tool $impl rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
  done
done
for r in 1 2; do
  timeout 150 python3 -m jitkern.cli bench mla --impl "$IMPLS" --json $OUT/mla$r.json >> $OUT/bench.log 2>&1
  say "bench mla round $r rc=$?"
done
timeout 100 python3 -m jitkern.cli bench mla --json $OUT/mla_default.json >> $OUT/bench.log 2>&1; say "bench mla default rc=$?"
grep -E "geomean" $OUT/bench.log
