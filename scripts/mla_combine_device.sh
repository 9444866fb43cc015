#!/bin/bash
# One device call for the MLA combine (2026-12-02 second session): the MLA GPU suite, memcheck and
# racecheck on the combine kernels (the ring wrapping many times) and three decode paths, per-kernel times
# (scripts/mla_profile.py) of the split-heavy cases and the 16-head part count, then `bench mla`.
# Logs under $OUT. On the GPU host:  source scripts/device_env.sh && bash scripts/mla_combine_device.sh
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1 HYPOTHESIS_PROFILE=gpu
t0=$(date +%s)
say() { echo "$* (t=$(( $(date +%s) - t0 )) s)" | tee -a $OUT/log.txt; }
nvidia-smi -L >> $OUT/log.txt
timeout 300 python3 -m pytest -m gpu tests/test_mla.py tests/test_mla_smoke.py -n 8 -q -p no:cacheprovider -rfE \
  > $OUT/tests.log 2>&1; say "mla tests rc=$? $(tail -1 $OUT/tests.log)"
for tool in memcheck racecheck; do
  timeout 120 compute-sanitizer --tool $tool --report-api-errors no --kernel-name kns=mla_combine python3 -m pytest \
    -m gpu -q -p no:cacheprovider tests/test_mla.py -k "many_splits_combine or combine_configs" >> $OUT/san.log 2>&1
  say "$tool combine kernels (626 splits, 5 configs) rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
  for impl in wgmma_chunk_wc wgmma_t wgmma; do
    timeout 60 compute-sanitizer --tool $tool --report-api-errors no python3 tests/test_mla_smoke.py $impl \
      >> $OUT/san.log 2>&1; say "$tool smoke $impl rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
  done
done
P="timeout 60 python3 scripts/mla_profile.py"
{ for r in 1 2; do for n in 132 128; do $P 64:4096:16:2 32:4096:16:2 --parts $n; done; done; } 2>&1 | grep "^b=" > $OUT/profile.log
say "profile rc=$?"
timeout 100 python3 -m jitkern.cli bench mla --json $OUT/mla_default.json > $OUT/bench.log 2>&1; say "bench mla default rc=$?"
cat $OUT/profile.log
