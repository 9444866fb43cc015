#!/bin/bash
# One device call for the MLA combine (2026-12-02 second session): the MLA GPU suite, memcheck and
# racecheck on the wide combine (ring of bulk-copy stages, wrapping many times), per-kernel times
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
  say "$tool combine kernels (626 splits, 4 configs) rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
  timeout 90 compute-sanitizer --tool $tool --report-api-errors no python3 tests/test_mla_smoke.py wgmma_chunk_wc \
    >> $OUT/san.log 2>&1; say "$tool smoke chunk_wc rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
done
P="timeout 60 python3 scripts/mla_profile.py"
N="64:4096:16:2 8:4096:128:1 64:4096:128:1 16:4096:16:2 2:16384:128:2"
{ for r in 1 2; do $P $N; $P $N --combine 4,1,2; done
  $P 16:4096:16:2 8:4096:16:2 4:4096:16:2 2:4096:16:2 --impl wgmma_t
  $P 16:4096:16:2 8:4096:16:2 4:4096:16:2 2:4096:16:2 --impl wgmma_t_wc
  $P 2:16384:128:2 1:32768:128:2 2:16384:128:1 --impl wgmma_chunk
  $P 2:16384:128:2 1:32768:128:2 2:16384:128:1 1:32768:128:1 --impl wgmma_chunk_wc; } 2>&1 | grep "^b=" > $OUT/profile.log
say "profile rc=$?"
timeout 100 python3 -m jitkern.cli bench mla --json $OUT/mla_default.json > $OUT/bench.log 2>&1; say "bench mla default rc=$?"
cat $OUT/profile.log
