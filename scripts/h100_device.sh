#!/bin/bash
# One device call on the issues' reference GPU (H100): STEPS picks and orders the steps. Logs and
# JSON under $OUT (the tool returns at most 8 files: bench JSON goes back as one json.tgz).
#   tune    : bench gemm --tune, fp8 at M = 64, 128, 4096 (TUNE_KINDS, TUNE_M); writes this GPU's
#             tuning/gemm_<gpu>.json in place (later steps use it) and copies it to $OUT
#   gemm    : bench gemm (18 V3 shapes, fp8 + bf16, cuBLAS in the same run)
#   grouped : bench grouped (contiguous + masked, torch grouped mm in the same run)
#   mla     : bench mla (six cases, plain PyTorch + copy ceiling in the same run); MLA_IMPLS adds a
#             same-run comparison of decode paths
#   spec    : bench spec (greedy, sampled, markov; plain PyTorch + floor in the same run)
#   tests   : every GPU test (pytest -m gpu -n 8)
#   probe   : co-resident 2-CTA clusters of the large fp8 GEMM tiles
#   ncu     : graph timings + one ncu launch each of NCU_CFGS on NCU_SHAPE (multicast vs not) and cuBLAS
#   msamp   : markov_draft samplers A/B (scripts/markov_ab.py sampled: token vs block race, b = 2, 16, 64)
#   ab      : fp8 tile A/B (scripts/gemm_tile_ab.py) of AB_CFGS against the table on the six M = 4096
#             shapes (or AB_SHAPES), cuBLAS in every round; default: balanced grids, and the 2-CTA
#             loss taken apart (cluster launch alone, + paired release, + multicast)
#   san     : compute-sanitizer memcheck + racecheck on SAN_TESTS (default: the MLA smoke tests)
# From the repo root on the GPU host, carrying .whl and (optionally) a precompiled .jitkern-cache:
#   STEPS="tune gemm grouped mla spec" bash scripts/h100_device.sh
source scripts/device_env.sh || exit 1
export JITKERN_CACHE_DIR=$PWD/.jitkern-cache PYTHONUNBUFFERED=1
J=$(mktemp -d)
t0=$(date +%s)
say() { echo "$* (t=$(( $(date +%s) - t0 )) s)" | tee -a $OUT/log.txt; }
nvidia-smi -L | tee -a $OUT/log.txt
nvidia-smi --query-gpu=clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv | tee -a $OUT/log.txt
for step in ${STEPS:-tune gemm grouped mla spec}; do
  case $step in
  tune)
    timeout ${T_TUNE:-240} python3 -m jitkern.cli bench gemm --tune --kinds ${TUNE_KINDS:-fp8} --m ${TUNE_M:-64,128,4096} \
      --json $J/tune.json > $OUT/tune.log 2>&1
    say "tune rc=$? $(grep -E 'geomean|wrote' $OUT/tune.log | tr '\n' ' ')"
    python3 -c "import torch; from jitkern.heuristics import tuning_path; print(tuning_path(torch.cuda.get_device_name()))" \
      | xargs -I{} cp {} $OUT/ ;;
  gemm)
    timeout ${T_GEMM:-150} python3 -m jitkern.cli bench gemm --json $J/gemm.json > $OUT/gemm.log 2>&1
    say "bench gemm rc=$?"; grep -E "geomean" $OUT/gemm.log ;;
  grouped)
    timeout ${T_GROUPED:-200} python3 -m jitkern.cli bench grouped --json $J/grouped.json > $OUT/grouped.log 2>&1
    say "bench grouped rc=$?" ;;
  mla)
    timeout ${T_MLA:-150} python3 -m jitkern.cli bench mla --json $J/mla.json > $OUT/mla.log 2>&1
    say "bench mla rc=$?"; tail -9 $OUT/mla.log
    if [ -n "$MLA_IMPLS" ]; then
      timeout ${T_MLA:-150} python3 -m jitkern.cli bench mla --no-peers --no-check --impl $MLA_IMPLS \
        --json $J/mla_impls.json >> $OUT/mla.log 2>&1
      say "bench mla impls rc=$?"
    fi ;;
  spec)
    timeout ${T_SPEC:-200} python3 -m jitkern.cli bench spec --kinds greedy,sampled,markov --cases 1x7,16x7,64x7,256x3 \
      --markov-cases 1x7,2x7,16x7,64x7 --json $J/spec.json > $OUT/spec.log 2>&1
    say "bench spec rc=$?" ;;
  tests)
    HYPOTHESIS_PROFILE=gpu timeout ${T_TESTS:-420} python3 -m pytest -m gpu -n 8 -q -p no:cacheprovider -rfE tests \
      > $OUT/tests.log 2>&1
    say "gpu tests rc=$? $(tail -1 $OUT/tests.log)"; grep -E "^(FAILED|ERROR)" $OUT/tests.log | head -20 ;;
  probe)  # co-resident 2-CTA clusters of the large fp8 tiles (a cluster past them would run as a second wave)
    python3 - <<'PY' 2>&1 | tee -a $OUT/log.txt
import torch
from jitkern.heuristics import GemmConfig as G
from jitkern.bench.gemm import _inputs
from jitkern.ops import gemm as O
_, _, a, b = _inputs(4096, 4096, 7168, "cuda")  # the bench's fp8 operands: A 4096x7168, B 4096x7168
for cfg in (G(256, 128, 3, 16, 132, 2, 1), G(256, 128, 3, 16, 132, 1, 2), G(128, 128, 5, 16, 132, 2, 1)):
    O.gemm_fp8_nt(a, b, config=cfg)
torch.cuda.synchronize(); print("max active clusters per (threads, smem, cluster):", {k[1:]: v for k, v in O._MAX_CLUSTERS.items()})
PY
    ;;
  ncu)  # one launch each of NCU_CFGS (BM,BN,STAGES,CM,CN) and cuBLAS on NCU_SHAPE, after graph timings of the same
    python3 scripts/gemm_profile.py ${NCU_SHAPE:-4096 4096 7168} --time --cfg ${NCU_CFGS:-256,128,3,1,1 256,128,3,1,2 256,128,3,2,1} \
      2>&1 | tee -a $OUT/ncu.log
    timeout ${T_NCU:-120} ncu --clock-control none --launch-skip 4 --launch-count 4 -k regex:'gemm|xmma|sm90' \
      --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats --section Occupancy \
      python3 scripts/gemm_profile.py ${NCU_SHAPE:-4096 4096 7168} --cfg ${NCU_CFGS:-256,128,3,1,1 256,128,3,1,2 256,128,3,2,1} \
      >> $OUT/ncu.log 2>&1
    say "ncu rc=$?" ;;
  msamp)
    timeout ${T_MSAMP:-150} python3 scripts/markov_ab.py sampled > $OUT/msamp.log 2>&1
    say "markov samplers rc=$?"; cat $OUT/msamp.log ;;
  ab)  # labels: BMxBNxSTAGEScMN[sS][gG][b], b = balanced grid (the fewest CTAs for the same waves)
    timeout ${T_AB:-240} python3 scripts/gemm_tile_ab.py --rounds ${AB_ROUNDS:-3} --json $J/ab.json \
      ${AB_CFGS:-256x128x3c11b,256x128x3c21,256x128x3c21:JITKERN_GEMM_MCAST=0,256x128x3c21:JITKERN_GEMM_MCAST=2,256x128x3c21b,128x192x4c11b} \
      $AB_SHAPES > $OUT/ab.log 2>&1
    say "tile ab rc=$?"; tail -6 $OUT/ab.log ;;
  san)
    for tool in memcheck racecheck; do
      HYPOTHESIS_PROFILE=sanitizer timeout ${T_SAN:-100} compute-sanitizer --tool $tool --report-api-errors no \
        --error-exitcode 9 python3 -m pytest -m gpu -q -p no:cacheprovider ${SAN_TESTS:-tests/test_mla_smoke.py} \
        >> $OUT/san.log 2>&1
      say "$tool rc=$? $(grep -hE 'ERROR SUMMARY|RACECHECK SUMMARY' $OUT/san.log | tail -1)"
    done ;;
  esac
  tar czf $OUT/json.tgz -C $J .  # after every step: a call cut short still returns what finished
done
say "done"
