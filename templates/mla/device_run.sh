#!/bin/bash
# MLA decode on the GPU host, everything in one go (logs under $OUT): GPU tests with the default
# impl and with each candidate as the default ($JITKERN_MLA_IMPL), compute-sanitizer on the smoke
# case, then `jitkern bench mla` per group of impls (groups ';'-separated, each with its own
# timeout and log, so one hanging impl cannot lose the others' numbers). Repo root:
#   source scripts/device_env.sh && bash templates/mla/device_run.sh "cand1 cand2" "i1,i2;i3,i4" "san1"
CANDS=${1:-"wgmma_chunk_wc"}
BENCH=${2:-"wgmma,wgmma_chunk_wc"}
SAN=${3:-$CANDS}
OUT=${OUT:-/tmp/out}
nvidia-smi -L > $OUT/gpu.txt
timeout 60 python3 tests/test_mla_smoke.py simt wgmma > $OUT/warm.log 2>&1
(for c in $SAN; do
   timeout 45 compute-sanitizer --tool memcheck --report-api-errors no python3 tests/test_mla_smoke.py $c > $OUT/memcheck_$c.log 2>&1; echo rc=$? >> $OUT/memcheck_$c.log
   timeout 45 compute-sanitizer --tool racecheck python3 tests/test_mla_smoke.py $c > $OUT/racecheck_$c.log 2>&1; echo rc=$? >> $OUT/racecheck_$c.log
 done) &
HYPOTHESIS_PROFILE=gpu timeout 60 python3 -m pytest -m gpu tests/test_mla.py tests/test_mla_smoke.py -q -p no:cacheprovider -rfE > $OUT/pytest_default.log 2>&1; echo rc=$? >> $OUT/pytest_default.log
for c in $CANDS; do
  JITKERN_MLA_IMPL=$c HYPOTHESIS_PROFILE=gpu timeout 40 python3 -m pytest -m gpu tests/test_mla.py -q -p no:cacheprovider -rfE -k "not both_impls and not test_smoke" > $OUT/pytest_$c.log 2>&1; echo rc=$? >> $OUT/pytest_$c.log
done
wait
n=0
IFS=';' read -ra GROUPS_ <<< "$BENCH"
for g in "${GROUPS_[@]}"; do
  n=$((n + 1))
  timeout 90 python3 -m jitkern.cli bench mla --impl $g --json $OUT/bench$n.json > $OUT/bench$n.log 2>&1; echo rc=$? >> $OUT/bench$n.log
done
for f in $OUT/pytest_*.log; do echo "$f: $(tail -2 $f | tr '\n' ' ')"; done
for f in $OUT/memcheck_*.log $OUT/racecheck_*.log; do echo "$f: $(grep -h 'ERROR SUMMARY\|RACECHECK SUMMARY\|rc=' $f | tr '\n' ' ')"; done
cat $OUT/bench*.log
